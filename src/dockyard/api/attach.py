"""Attach and resize: a hijacked connection (or a websocket) carrying the container's
stdio, as dockerd serves `docker attach` and `docker run` without -d."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Iterator

from aiohttp import web

from dockyard.api import hijack
from dockyard.api.server import Routes, api_version, bool_param, engine, version_less
from dockyard.daemon import logs as logs_mod
from dockyard.daemon import monitor_protocol as proto
from dockyard.daemon.containers import Container
from dockyard.errors import Conflict, DockyardError, InvalidArgument

log = logging.getLogger(__name__)

_LOG_BATCH = 256


def _id(request: web.Request) -> str:
    return request.match_info["id"]


def _atoi(text: str) -> int:
    """Go's strconv.Atoi, with its error text, as dockerd parses h and w."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise InvalidArgument(f'strconv.Atoi: parsing "{text}": invalid syntax')
    value = int(text)
    if not -(1 << 63) <= value < (1 << 63):
        raise InvalidArgument(f'strconv.Atoi: parsing "{text}": value out of range')
    return value


def terminal_size(request: web.Request) -> tuple[int, int]:
    """The h and w query parameters of a resize; 400 as dockerd when they are not
    numbers, or cannot be a terminal's size."""
    h, w = _atoi(request.query.get("h", "")), _atoi(request.query.get("w", ""))
    if not (0 <= h < 65536 and 0 <= w < 65536):
        raise InvalidArgument(f"invalid terminal size {h}x{w}: height and width must be "
                              "between 0 and 65535")
    return h, w


def _check_attachable(c: Container, ref: str) -> None:
    if c.State.Paused:
        raise Conflict(f"container {ref} is paused, unpause the container before attach")
    if c.State.Restarting:
        raise Conflict(f"container {ref} is restarting, wait until the container is running")


async def _replay_logs(client: hijack.Client, c: Container, s: hijack.Session) -> None:
    """With logs=1, what the container has written so far, from its json-file log."""
    want_out, want_err = s.want.get(proto.STDOUT, False), s.want.get(proto.STDERR, False)
    if not (want_out or want_err):
        return
    driver = (c.HostConfig.get("LogConfig") or {}).get("Type") or logs_mod.JSON_FILE
    records: Iterator[logs_mod.LogRecord] = await asyncio.to_thread(
        logs_mod.read_logs, c.LogPath, stdout=want_out, stderr=want_err, driver=driver)

    def batch() -> list[logs_mod.LogRecord]:
        out = []
        for rec in records:
            out.append(rec)
            if len(out) >= _LOG_BATCH:
                break
        return out

    while True:
        recs = await asyncio.to_thread(batch)
        if not recs:
            return
        for rec in recs:
            await client.send(proto.STREAM_IDS[rec.stream], rec.data)


async def _run(request: web.Request, c: Container, s: hijack.Session, logs: bool, stream: bool,
               client: hijack.Client) -> None:
    """Replay the logs and/or relay the stream onto CLIENT, then close it."""
    lc = engine(request).lifecycle
    try:
        if logs:
            try:
                await _replay_logs(client, c, s)
            except DockyardError as exc:
                # As dockerd: the answer has begun, so the error goes in band.
                await client.send(proto.STDOUT, f"Error attaching: {exc}\n".encode())
                return
        if not stream or not s.relays_anything:
            return
        req = await asyncio.to_thread(lc.attach_request, c.ID, s.stdin)
        gone = threading.Event()
        client.lost.add_done_callback(lambda _f: gone.set())
        attached = await asyncio.to_thread(req.get, gone.is_set)
        if attached is None:
            return
        try:
            end = await hijack.serve(client, attached, s)
        finally:
            attached.close()
        log.debug("attach to %s ended: %s", c.ID, end.value)
        if end is hijack.End.DETACHED:
            await asyncio.to_thread(req.detached)
    finally:
        await client.close()


def _session(request: web.Request, c: Container, stdin: bool, stdout: bool,
             stderr: bool) -> hijack.Session:
    keys = hijack.detach_keys_param(request.query.get("detachKeys", ""))
    return hijack.Session(tty=bool(c.Config.get("Tty")),
                          stdin=stdin and bool(c.Config.get("OpenStdin")),
                          close_stdin=bool(c.Config.get("StdinOnce")),
                          want={proto.STDOUT: stdout, proto.STDERR: stderr},
                          detach_keys=keys)


async def attach(request: web.Request) -> web.StreamResponse:
    """Hijack the connection, as dockerd does, and relay the container's stdio
    (framed with stdcopy's header when the container has no TTY)."""
    # dockerd checks the detach keys before it looks for the container.
    hijack.detach_keys_param(request.query.get("detachKeys", ""))
    lc = engine(request).lifecycle
    c = await asyncio.to_thread(lc.store.get, _id(request))
    _check_attachable(c, _id(request))
    s = _session(request, c, bool_param(request, "stdin"), bool_param(request, "stdout"),
                 bool_param(request, "stderr"))
    client = hijack.take_over(request, s.tty)
    await _run(request, c, s, bool_param(request, "logs"), bool_param(request, "stream"), client)
    raise asyncio.CancelledError()  # the connection is ours; aiohttp writes nothing more


async def attach_ws(request: web.Request) -> web.StreamResponse:
    """The websocket attach: the container's output unframed, one message per piece,
    stdin from the client's messages. Before API 1.42 all three streams are attached
    whatever the query says, as in dockerd."""
    hijack.detach_keys_param(request.query.get("detachKeys", ""))
    lc = engine(request).lifecycle
    c = await asyncio.to_thread(lc.store.get, _id(request))
    _check_attachable(c, _id(request))
    version = api_version(request)
    if version_less(version, "1.42"):
        stdin = stdout = stderr = True
    else:
        stdin, stdout, stderr = (bool_param(request, n) for n in ("stdin", "stdout", "stderr"))
    s = _session(request, c, stdin, stdout, stderr)
    ws = web.WebSocketResponse(autoping=True, decode_text=False)
    await ws.prepare(request)
    client = hijack.WebSocketClient(ws, binary=not version_less(version, "1.28"))
    await _run(request, c, s, bool_param(request, "logs"), bool_param(request, "stream"), client)
    return ws


async def resize(request: web.Request) -> web.Response:
    h, w = terminal_size(request)
    lc = engine(request).lifecycle
    await asyncio.to_thread(lc.resize, _id(request), h, w)
    return web.Response(status=200)


def register(routes: Routes) -> None:
    routes.add("POST", "/containers/{id}/attach", attach)
    routes.add("GET", "/containers/{id}/attach/ws", attach_ws)
    routes.add("POST", "/containers/{id}/resize", resize)

