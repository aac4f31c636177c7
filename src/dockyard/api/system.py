"""System endpoints: /_ping, /version, /info, /events, /system/df."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from dockyard.api.server import Routes, engine, filters_param, json_response
from dockyard.api.streams import JSONStream
from dockyard.daemon.engine import Event
from dockyard.errors import InvalidArgument
from dockyard.image.store import parse_timestamp

_EVENT_FILTERS = ("config", "container", "daemon", "event", "image", "label", "network", "node",
                  "plugin", "scope", "secret", "service", "type", "volume")
_SUFFIXED_ACTIONS = ("health_status", "exec_create", "exec_start")
_EVENT_TYPES = ("builder", "config", "container", "daemon", "image", "network", "node",
                "plugin", "secret", "service", "volume")


async def ping(request: web.Request) -> web.Response:
    resp = web.Response(text="OK" if request.method != "HEAD" else None,
                        content_type="text/plain", charset="utf-8")
    resp.headers["Cache-Control"] = "no-cache, no-store, must-revalidate"
    resp.headers["Pragma"] = "no-cache"
    resp.headers["Builder-Version"] = "1"
    return resp


async def version(request: web.Request) -> web.Response:
    return json_response(engine(request).version())


async def info(request: web.Request) -> web.Response:
    return json_response(await asyncio.to_thread(engine(request).info))


async def disk_usage(request: web.Request) -> web.Response:
    return json_response(await asyncio.to_thread(engine(request).disk_usage))


class _EventFilter:
    def __init__(self, raw: dict[str, Any] | None) -> None:
        self.f: dict[str, list[str]] = {}
        for key, value in (raw or {}).items():
            if key not in _EVENT_FILTERS:
                raise InvalidArgument(f"invalid filter '{key}'")
            values = [k for k, on in value.items() if on] if isinstance(value, dict) else value
            self.f[key] = list(values)
        for t in self.f.get("type", []):
            if t not in _EVENT_TYPES:
                raise InvalidArgument(f"invalid filter 'type={t}'")

    def _event_matches(self, action: str) -> bool:
        """dockerd matches by prefix when the filter names an action that carries a
        suffix ("health_status: healthy", "exec_start: sh -c ..."), else exactly."""
        values = self.f.get("event")
        if not values:
            return True
        if any(v in _SUFFIXED_ACTIONS for v in values):
            return any(action.startswith(v) for v in values)
        return action in values

    def match(self, e: Event) -> bool:
        def any_of(key: str, *candidates: str) -> bool:
            values = self.f.get(key)
            return not values or any(v in candidates for v in values)

        if not any_of("type", e.type) or not self._event_matches(e.action):
            return False
        if not any_of("scope", "local"):
            return False
        if "image" in self.f:
            if e.type != "image":
                return False
            name = e.attributes.get("name", "")
            base = name.rsplit(":", 1)[0] if "/" not in name.rsplit(":", 1)[-1] else name
            if not any_of("image", e.actor_id, name, base):
                return False
        for kind in ("container", "network", "volume", "daemon", "plugin", "node", "service",
                     "secret", "config"):
            if kind in self.f and (e.type != kind or not any_of(kind, e.actor_id,
                                                                e.attributes.get("name", ""))):
                return False
        for label in self.f.get("label", []):
            k, eq, v = label.partition("=")
            if k not in e.attributes or (eq and e.attributes[k] != v):
                return False
        return True


def _time_param(request: web.Request, name: str) -> float | None:
    text = request.query.get(name, "")
    return parse_timestamp(text) if text else None


async def events(request: web.Request) -> web.StreamResponse:
    eng = engine(request)
    flt = _EventFilter(filters_param(request))
    since = _time_param(request, "since")
    until = _time_param(request, "until")
    now = time.time()
    if since is not None and until is not None and until < since:
        raise InvalidArgument("`since` time cannot be after `until` time")
    # Subscribe before replaying the history, so that nothing falls in between.
    queue = eng.events.subscribe()
    stream = JSONStream(request)
    try:
        await stream.commit()  # clients wait for the headers before they print anything
        seen = 0
        if since is not None:
            for e in list(eng.events.history):
                t = e.time_nano / 1e9
                if t < since or (until is not None and t > until):
                    continue
                if flt.match(e):
                    await stream.send(e.to_json())
                    seen += 1
        if until is not None and until <= now:
            return await stream.finish()
        replayed = {id(e) for e in eng.events.history}
        while True:
            timeout = None if until is None else max(0.0, until - time.time())
            try:
                e = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                break
            if id(e) in replayed and since is not None:
                continue
            if until is not None and e.time_nano / 1e9 > until:
                break
            if flt.match(e):
                await stream.send(e.to_json())
        return await stream.finish()
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    finally:
        eng.events.unsubscribe(queue)


async def build_prune(request: web.Request) -> web.Response:
    """There is no build cache until the builder arrives: nothing to reclaim."""
    return json_response({"CachesDeleted": None, "SpaceReclaimed": 0})


def register(routes: Routes) -> None:
    routes.add("POST", "/build/prune", build_prune)
    routes.add("GET", "/_ping", ping)
    routes.add("GET", "/version", version)
    routes.add("GET", "/info", info)
    routes.add("GET", "/events", events)
    routes.add("GET", "/system/df", disk_usage)
