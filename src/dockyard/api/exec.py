"""Exec endpoints: create an exec instance in a running container, start it (the
connection hijacked as for attach, carrying its output), and inspect it."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from dockyard.api import hijack
from dockyard.api.server import Routes, engine, json_response
from dockyard.errors import Conflict, DockyardError, InvalidArgument


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError as exc:
        raise InvalidArgument(f"invalid JSON: {exc}") from None
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InvalidArgument("invalid exec configuration")
    return body


async def exec_create(request: web.Request) -> web.Response:
    eng = engine(request)
    body = await _body(request)
    eid = await asyncio.to_thread(eng.lifecycle.exec_create, request.match_info["id"], body)
    return json_response({"Id": eid}, 201)


async def exec_start(request: web.Request) -> web.StreamResponse:
    eng = engine(request)
    lc = eng.lifecycle
    eid = request.match_info["id"]
    body = await _body(request)
    detach = bool(body.get("Detach"))
    tty = body.get("Tty")
    if detach:
        await asyncio.to_thread(lc.exec_start, eid, True, None if tty is None else bool(tty))
        return web.Response(status=200)
    info = await asyncio.to_thread(lc.exec_inspect, eid)  # 404 before the hijack
    if info["Running"] or info["ExitCode"] is not None:
        raise Conflict(f"Error: Exec command {eid} is already running")
    if tty is not None:
        info["ProcessConfig"]["tty"] = bool(tty)
    tty = bool(info["ProcessConfig"]["tty"])
    want = {1: info["OpenStdout"], 2: info["OpenStderr"]}
    # As dockerd does, the header goes out before the process starts: clients read
    # the header with a buffered reader and then take the raw socket, so output sent
    # along with the header could be lost to them.
    transport = hijack.take_over(request, tty)
    try:
        stream = await asyncio.to_thread(lc.exec_start, eid, False, tty)
    except DockyardError as exc:
        hijack.write(transport, 1, (str(exc) + "\r\n").encode(), tty)
        transport.close()
        raise asyncio.CancelledError() from None
    assert stream is not None
    try:
        await hijack.relay(transport, stream, want, tty)
        # The client asks for the exit code once the stream ends: have it recorded.
        if not transport.is_closing():
            await asyncio.to_thread(lc.exec_wait, eid, 10.0)
    finally:
        stream.close()
        transport.close()
    raise asyncio.CancelledError()  # the connection is ours; aiohttp writes nothing more


async def exec_inspect(request: web.Request) -> web.Response:
    eng = engine(request)
    info = await asyncio.to_thread(eng.lifecycle.exec_inspect, request.match_info["id"])
    return json_response(info)


async def exec_resize(request: web.Request) -> web.Response:
    eng = engine(request)
    lc = eng.lifecycle
    eid = request.match_info["id"]
    try:
        h, w = int(request.query.get("h", "0")), int(request.query.get("w", "0"))
    except ValueError:
        raise InvalidArgument("invalid terminal size") from None
    await asyncio.to_thread(lc.exec_inspect, eid)  # 404 for an unknown exec
    await asyncio.to_thread(lc.monitor.resize, eid, h, w)
    return web.Response(status=200)


def register(routes: Routes) -> None:
    routes.add("POST", "/containers/{id}/exec", exec_create)
    routes.add("POST", "/exec/{id}/start", exec_start)
    routes.add("GET", "/exec/{id}/json", exec_inspect)
    routes.add("POST", "/exec/{id}/resize", exec_resize)
