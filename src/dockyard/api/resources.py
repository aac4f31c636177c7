"""A container's processes and resources: stats (streamed or one-shot, read from its
cgroup), top, and update (limits and restart policy changed while it runs)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

from aiohttp import web

from dockyard.api.server import Routes, api_version, bool_param, engine, json_response, version_less
from dockyard.daemon import top as top_mod
from dockyard.daemon.stats import StatsReader
from dockyard.errors import InvalidArgument

log = logging.getLogger(__name__)


def _id(request: web.Request) -> str:
    return request.match_info["id"]


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def stats(request: web.Request) -> web.StreamResponse:
    lc = engine(request).lifecycle
    stream = bool_param(request, "stream", True)
    # one-shot exists from API 1.41 on; older clients get the primed sample.
    one_shot = (not version_less(api_version(request), "1.41")
                and bool_param(request, "one-shot", False))
    reader = await asyncio.to_thread(StatsReader, lc, _id(request))
    stop = threading.Event()
    frames = reader.frames(stream=stream, one_shot=one_shot, stop=stop)
    resp = web.StreamResponse(status=200)
    resp.content_type = "application/json"
    await resp.prepare(request)
    try:
        while True:
            frame = await asyncio.to_thread(next, frames, None)
            if frame is None or _client_gone(request):
                break
            # Go's encoder: compact, one document per line.
            await resp.write(json.dumps(frame, separators=(",", ":")).encode() + b"\n")
    except (ConnectionResetError, BrokenPipeError):
        log.debug("stats client of %s went away", reader.cid)
        return resp
    finally:
        # Wakes a generator waiting for its next sample; it then ends.
        stop.set()
        try:
            await asyncio.to_thread(frames.close)
        except ValueError:
            pass  # still sampling in its thread (the request was cancelled): it sees stop
    if not _client_gone(request):
        await resp.write_eof()
    return resp


async def top(request: web.Request) -> web.Response:
    lc = engine(request).lifecycle
    result = await asyncio.to_thread(top_mod.top, lc, _id(request),
                                     request.query.get("ps_args", ""))
    return json_response(result)


async def update(request: web.Request) -> web.Response:
    lc = engine(request).lifecycle
    raw = await request.read()
    body: object = None
    if raw.strip():
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise InvalidArgument(f"invalid JSON: {exc}") from None
    if isinstance(body, dict) and version_less(api_version(request), "1.40"):
        # PidsLimit is an update field from API 1.40 on; older clients' is ignored.
        body = {k: v for k, v in body.items() if k.lower() != "pidslimit"}
    warnings = await asyncio.to_thread(lc.update, _id(request), body)
    # dockerd's Warnings is a nil slice when there are none: JSON null.
    return json_response({"Warnings": warnings or None})


def register(routes: Routes) -> None:
    routes.add("GET", "/containers/{id}/stats", stats)
    routes.add("GET", "/containers/{id}/top", top)
    routes.add("POST", "/containers/{id}/update", update)
