"""The aiohttp application: routing with dockerd's version prefix, API version
negotiation, the headers every response carries, and error translation in one place.

Handlers live one module per resource (system.py, images.py) and only translate
between HTTP and the Engine; DockyardError's http_status decides the status code.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from dockyard import __version__
from dockyard.daemon.engine import API_VERSION, MIN_API_VERSION, Engine
from dockyard.errors import DockyardError, InvalidArgument

log = logging.getLogger(__name__)

ENGINE_KEY: web.AppKey[Engine] = web.AppKey("engine", Engine)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Every route exists bare and under /v{X.Y}/, as in dockerd's router.
VERSION_PREFIX = r"/v{version:[0-9][0-9.]*}"


def engine(request: web.Request) -> Engine:
    return request.app[ENGINE_KEY]


def api_version(request: web.Request) -> str:
    """The API version of this request (the prefix, or ours when there is none)."""
    return request.get("api_version", API_VERSION)


def _version_tuple(v: str) -> tuple[int, ...]:
    # dockerd's versions.compare: missing components count as 0, non-numbers as 0.
    out = []
    for part in v.split("."):
        try:
            out.append(int(part))
        except ValueError:
            out.append(0)
    return tuple(out)


def version_less(a: str, b: str) -> bool:
    ta, tb = _version_tuple(a), _version_tuple(b)
    n = max(len(ta), len(tb))
    return ta + (0,) * (n - len(ta)) < tb + (0,) * (n - len(tb))


def json_response(data: Any, status: int = 200) -> web.Response:
    # Go's encoder ends every JSON document with a newline; some clients split on it.
    return web.Response(body=json.dumps(data).encode() + b"\n", status=status,
                        content_type="application/json")


def error_response(status: int, message: str) -> web.Response:
    return json_response({"message": message}, status)


def bool_param(request: web.Request, name: str, default: bool = False) -> bool:
    """dockerd's httputils.BoolValue: "", 0, no, false, none are false."""
    if name not in request.query:
        return default
    return request.query[name].strip().lower() not in ("", "0", "no", "false", "none")


def filters_param(request: web.Request, name: str = "filters") -> dict[str, Any] | None:
    """The `filters` query parameter: JSON of key -> [values] (or the legacy
    key -> {value: true} form); 400 when it is not JSON."""
    raw = request.query.get(name, "")
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise InvalidArgument(f"invalid filter: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("invalid filter: filters must be a JSON object")
    for key, value in doc.items():
        ok = (isinstance(value, list) and all(isinstance(v, str) for v in value)) or (
            isinstance(value, dict) and all(isinstance(v, bool) for v in value.values()))
        if not ok:
            raise InvalidArgument(f"invalid filter: the values of '{key}' must be a list of "
                                  "strings")
    return doc


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DockyardError as exc:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s: %s", request.method, request.path, exc)
        return error_response(exc.http_status, str(exc))
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        # dockerd answers an unknown route and a wrong method alike.
        return error_response(404, "page not found")
    except web.HTTPException:
        raise
    except (ConnectionResetError, BrokenPipeError):
        raise
    except Exception as exc:  # a bug: report it as dockerd would report an error
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, f"{type(exc).__name__}: {exc}")


@web.middleware
async def _versions(request: web.Request, handler: Handler) -> web.StreamResponse:
    version = request.match_info.get("version")
    if version:
        if version_less(version, MIN_API_VERSION):
            return error_response(400, f"client version {version} is too old. Minimum supported "
                                  f"API version is {MIN_API_VERSION}, please upgrade your client "
                                  "to a newer version")
        if version_less(API_VERSION, version):
            return error_response(400, f"client version {version} is too new. Maximum "
                                  f"supported API version is {API_VERSION}")
        request["api_version"] = version
    return await handler(request)


async def _common_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = f"Docker/{__version__} (linux)"
    response.headers["Api-Version"] = API_VERSION
    response.headers["Docker-Experimental"] = "false"
    response.headers["Ostype"] = "linux"


class Routes:
    """Collects routes and registers each bare and under the version prefix."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, Handler]] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        self.items.append((method, path, handler))

    def install(self, app: web.Application) -> None:
        for method, path, handler in self.items:
            for p in (path, VERSION_PREFIX + path):
                if method == "GET":
                    app.router.add_get(p, handler)  # HEAD comes along, as with gorilla/mux
                else:
                    app.router.add_route(method, p, handler)


def create_app(eng: Engine) -> web.Application:
    from dockyard.api import (archive, attach, containers, exec as exec_api, images, networks,
                              resources, system, volumes)

    app = web.Application(middlewares=[_errors, _versions])
    app[ENGINE_KEY] = eng
    routes = Routes()
    system.register(routes)
    images.register(routes)
    containers.register(routes)
    exec_api.register(routes)
    attach.register(routes)
    archive.register(routes)
    resources.register(routes)
    networks.register(routes)
    volumes.register(routes)
    routes.install(app)
    app.on_response_prepare.append(_common_headers)
    return app
