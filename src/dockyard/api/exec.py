"""Exec endpoints: create an exec instance in a running container, start it (the
connection hijacked as for attach, carrying its output), and inspect it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from dockyard.api import hijack
from dockyard.api.attach import terminal_size
from dockyard.api.server import Routes, api_version, engine, json_response, version_less
from dockyard.errors import Conflict, DockyardError, InvalidArgument, NotFound


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
    keys_text = body.get("DetachKeys") or ""
    if keys_text:
        try:
            hijack.parse_detach_keys(str(keys_text))
        except ValueError:
            raise InvalidArgument(f"Invalid escape keys ({keys_text}) provided") from None
    eid = await asyncio.to_thread(eng.lifecycle.exec_create, request.match_info["id"], body)
    return json_response({"Id": eid}, 201)


def _console_size(request: web.Request, body: dict[str, Any], tty: bool) -> tuple[int, int] | None:
    size = body.get("ConsoleSize")
    if size is None:
        return None
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 65536
                       for v in size)):
        raise InvalidArgument("invalid ConsoleSize: it must be [height, width], each between "
                              "0 and 65535")
    # As dockerd: not before API 1.42, and no console without a TTY.
    if version_less(api_version(request), "1.42") or not tty:
        return None
    return size[0], size[1]


async def exec_start(request: web.Request) -> web.StreamResponse:
    eng = engine(request)
    lc = eng.lifecycle
    eid = request.match_info["id"]
    body = await _body(request)
    detach = bool(body.get("Detach"))
    tty = body.get("Tty")
    size = _console_size(request, body, bool(tty))
    if detach:
        await asyncio.to_thread(lc.exec_start, eid, True, None if tty is None else bool(tty), size)
        return web.Response(status=200)
    info = await asyncio.to_thread(lc.exec_inspect, eid)  # 404 before the hijack
    if info["Running"] or info["ExitCode"] is not None:
        raise Conflict(f"Error: Exec command {eid} is already running")
    if tty is not None:
        info["ProcessConfig"]["tty"] = bool(tty)
    tty = bool(info["ProcessConfig"]["tty"])
    # dockerd attaches an exec's stdin with CloseStdin always: the end of the client's
    # input closes the process's stdin.
    s = hijack.Session(tty=tty, stdin=bool(info["OpenStdin"]), close_stdin=True,
                       want={1: bool(info["OpenStdout"]), 2: bool(info["OpenStderr"])},
                       detach_keys=hijack.parse_detach_keys(info["DetachKeys"])
                       if info["DetachKeys"] else hijack.DEFAULT_DETACH_KEYS)
    # As dockerd does, the header goes out before the process starts: clients read
    # the header with a buffered reader and then take the raw socket, so output sent
    # along with the header could be lost to them.
    client = hijack.take_over(request, tty)
    try:
        try:
            stream = await asyncio.to_thread(lc.exec_start, eid, False, tty, size)
        except DockyardError as exc:
            client.write(1, (str(exc) + "\r\n").encode())
            return await _hijacked()
        assert stream is not None
        try:
            end = await hijack.serve(client, stream, s)
        finally:
            stream.close()
        # The client asks for the exit code once the stream ends: have it recorded.
        if end is hijack.End.EXITED and not client.closing:
            await asyncio.to_thread(lc.exec_wait, eid, 10.0)
    finally:
        await client.close()
    return await _hijacked()


async def _hijacked() -> web.StreamResponse:
    raise asyncio.CancelledError()  # the connection is ours; aiohttp writes nothing more


async def exec_inspect(request: web.Request) -> web.Response:
    eng = engine(request)
    info = await asyncio.to_thread(eng.lifecycle.exec_inspect, request.match_info["id"])
    return json_response(info)


async def exec_resize(request: web.Request) -> web.Response:
    eng = engine(request)
    lc = eng.lifecycle
    eid = request.match_info["id"]
    h, w = terminal_size(request)
    await asyncio.to_thread(lc.exec_inspect, eid)  # 404 for an unknown exec
    # As dockerd, wait a while for an exec being started: the CLI resizes as soon as
    # it has sent the start.
    deadline = time.monotonic() + 10
    while True:
        info = await asyncio.to_thread(lc.exec_inspect, eid)
        if info["Running"] or info["ExitCode"] is not None:
            break
        if time.monotonic() > deadline:
            raise DockyardError("timeout waiting for exec session ready")
        await asyncio.sleep(0.02)
    if info["Running"]:
        try:
            await asyncio.to_thread(lc.monitor.resize, eid, h, w)
        except NotFound:
            pass  # it has just exited
    return web.Response(status=200)


def register(routes: Routes) -> None:
    routes.add("POST", "/containers/{id}/exec", exec_create)
    routes.add("POST", "/exec/{id}/start", exec_start)
    routes.add("GET", "/exec/{id}/json", exec_inspect)
    routes.add("POST", "/exec/{id}/resize", exec_resize)
