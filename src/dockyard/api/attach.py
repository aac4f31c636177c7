"""Attach and resize: a hijacked connection carrying the container's stdio, as dockerd
serves `docker attach` and `docker run` without -d."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from dockyard.api import hijack
from dockyard.api.server import Routes, bool_param, engine


def _id(request: web.Request) -> str:
    return request.match_info["id"]


async def attach(request: web.Request) -> web.StreamResponse:
    """Hijack the connection, as dockerd does, and relay the monitor's attach stream
    (framed with stdcopy's header when the container has no TTY)."""
    eng = engine(request)
    lc = eng.lifecycle
    c = await asyncio.to_thread(lc.store.get, _id(request))
    want = {1: bool_param(request, "stdout"), 2: bool_param(request, "stderr")}
    tty = bool(c.Config.get("Tty"))
    req = await asyncio.to_thread(lc.attach_request, c.ID)
    transport = hijack.take_over(request, tty)
    closed = threading.Event()
    stream = await asyncio.to_thread(req.get, lambda: closed.is_set()
                                     or transport.is_closing())
    try:
        if stream is not None:
            await hijack.relay(transport, stream, want, tty)
    finally:
        closed.set()
        if stream is not None:
            stream.close()
        transport.close()
    raise asyncio.CancelledError()  # the connection is ours; aiohttp writes nothing more


def register(routes: Routes) -> None:
    routes.add("POST", "/containers/{id}/attach", attach)
