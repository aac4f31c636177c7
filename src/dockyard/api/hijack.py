"""Taking over an HTTP connection, as dockerd does for attach and exec start, and relaying
a monitor stream onto it."""

from __future__ import annotations

import asyncio

from aiohttp import web

from dockyard.daemon import logs as logs_mod
from dockyard.errors import InvalidArgument


class _Hijacked(asyncio.Protocol):
    """The protocol of a hijacked connection: aiohttp hears only of its loss, and a
    half-close from the client keeps the connection open for our output."""

    def __init__(self, original: asyncio.BaseProtocol) -> None:
        self.original = original

    def data_received(self, data: bytes) -> None:
        pass  # stdin is not relayed yet

    def eof_received(self) -> bool:
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.original.connection_lost(exc)


def take_over(request: web.Request, tty: bool) -> asyncio.Transport:
    """Answer 101 (or 200 without an Upgrade request) straight onto the transport and
    keep the connection: aiohttp must not write a response of its own."""
    transport = request.transport
    if transport is None:
        raise InvalidArgument("connection closed")
    # The CLI half-closes its side when it sends no stdin; asyncio would close the
    # transport on that EOF unless the protocol asks to keep it open.
    transport.set_protocol(_Hijacked(request.protocol))
    upgrade = request.headers.get("Upgrade", "").lower() == "tcp"
    ctype = ("application/vnd.docker.raw-stream" if tty
             else "application/vnd.docker.multiplexed-stream")
    head = f"HTTP/1.1 {'101 UPGRADED' if upgrade else '200 OK'}\r\nContent-Type: {ctype}\r\n"
    if upgrade:
        head += "Connection: Upgrade\r\nUpgrade: tcp\r\n"
    transport.write((head + "\r\n").encode())
    return transport  # type: ignore[return-value]


def write(transport: asyncio.Transport, sid: int, data: bytes, tty: bool) -> None:
    """Raw with a TTY, framed with stdcopy's header (stream 1 or 2) without."""
    transport.write(data if tty else logs_mod.frame("stdout" if sid == 1 else "stderr", data))


async def relay(transport: asyncio.Transport, stream, want: dict[int, bool], tty: bool) -> None:
    """Copy the monitor's stream (messages of (stream id, bytes); None at the end) to the
    client until either side is done."""
    while True:
        item = await asyncio.to_thread(stream.recv, None)
        if item is None:
            return
        sid, data = item
        if data and want.get(sid, False):
            write(transport, sid, data, tty)
        if transport.is_closing():
            return
