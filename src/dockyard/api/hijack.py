"""Taking over an HTTP connection, as dockerd does for attach and exec start, and serving
a monitor attach stream on it (or on a websocket): output to the client, the client's
input to the process's stdin, detach keys, and the ends of both."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from dockyard.api.server import api_version, version_less
from dockyard.daemon import logs as logs_mod
from dockyard.daemon import monitor_protocol as proto
from dockyard.daemon.monitor import AttachStream
from dockyard.errors import InvalidArgument

# ctrl-p, ctrl-q: what dockerd uses when the client names no detach keys.
DEFAULT_DETACH_KEYS = b"\x10\x11"
# moby/term's key names: "ctrl-@" is 0, "ctrl-a" 1, ... "ctrl-_" 31.
_CTRL_NAMES = ["ctrl-@"] + [f"ctrl-{chr(c)}" for c in range(ord("a"), ord("z") + 1)] + [
    "ctrl-[", "ctrl-\\", "ctrl-]", "ctrl-^", "ctrl-_"]
# Input read from the client but not yet taken by the process: past this, the
# connection stops being read (the client's writes block) until it drains.
_INPUT_HIGH_WATER = 1024 * 1024


def parse_detach_keys(text: str) -> bytes:
    """A detach sequence as the CLI's --detach-keys spells it ("ctrl-p,ctrl-q", "a,DEL"):
    each comma-separated key is one character, a ctrl-<x> name or DEL. ValueError
    names the key that is none of these."""
    codes = bytearray()
    for key in text.split(","):
        if len(key.encode()) == 1:
            codes += key.encode()
        elif key in _CTRL_NAMES:
            codes.append(_CTRL_NAMES.index(key))
        elif key == "DEL":
            codes.append(127)
        else:
            raise ValueError(f"Unknown character: '{key}'")
    return bytes(codes)


def detach_keys_param(text: str) -> bytes:
    """The detachKeys query parameter of attach: the default when empty, 400 with
    dockerd's message when it does not parse."""
    if not text:
        return DEFAULT_DETACH_KEYS
    try:
        return parse_detach_keys(text)
    except ValueError:
        raise InvalidArgument(f"Invalid detach keys ({text}) provided") from None


class _EscapeMatcher:
    """Finds the detach sequence in the client's input. Bytes that might begin it are
    held back; when the sequence breaks off they are passed on after all."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.pos = 0

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """The input to pass on, and whether the whole sequence has been typed (what
        follows it in DATA is dropped with it)."""
        out = bytearray()
        for b in data:
            if b == self.keys[self.pos]:
                self.pos += 1
                if self.pos == len(self.keys):
                    self.pos = 0
                    return bytes(out), True
                continue
            if self.pos:
                out += self.keys[:self.pos]
                self.pos = 0
                if b == self.keys[0]:
                    self.pos = 1
                    continue
            out.append(b)
        return bytes(out), False


class _Hijacked(asyncio.Protocol):
    """The protocol of a hijacked connection: it buffers the client's input for the
    session and tells aiohttp only of the connection's loss. A half-close from the
    client keeps the connection open for our output."""

    def __init__(self, original: asyncio.BaseProtocol, transport: asyncio.Transport) -> None:
        self.original = original
        self.transport = transport
        self.buf = bytearray()
        self.eof = False
        self.paused = False
        self.readable = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.readable.set()
        if len(self.buf) > _INPUT_HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        self.readable.set()
        return True

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.readable.set()
        self.writable.set()
        if not self.lost.done():
            self.lost.set_result(None)
        self.original.connection_lost(exc)


class Client:
    """The client's side of a session: where output goes and input comes from."""

    lost: asyncio.Future[None]  # done when the client is gone

    async def send(self, sid: int, data: bytes) -> None:
        raise NotImplementedError

    async def read(self) -> bytes | None:
        """The client's next input; None when it has no more (EOF, or gone)."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class RawClient(Client):
    """A hijacked HTTP connection: raw bytes with a TTY, stdcopy frames without."""

    def __init__(self, transport: asyncio.Transport, protocol: _Hijacked, multiplexed: bool) -> None:
        self.transport = transport
        self.protocol = protocol
        self.multiplexed = multiplexed
        self.lost = protocol.lost

    @property
    def closing(self) -> bool:
        return self.transport.is_closing()

    def write(self, sid: int, data: bytes) -> None:
        if self.multiplexed:
            data = logs_mod.frame("stdout" if sid == proto.STDOUT else "stderr", data)
        self.transport.write(data)

    async def send(self, sid: int, data: bytes) -> None:
        self.write(sid, data)
        # Back-pressure: a client that does not read stops the relay, so the monitor
        # stops reading the process's output for it.
        await self.protocol.writable.wait()

    async def read(self) -> bytes | None:
        p = self.protocol
        while not p.buf and not p.eof and not p.lost.done():
            p.readable.clear()
            await p.readable.wait()
        if not p.buf:
            return None
        data = bytes(p.buf)
        p.buf.clear()
        if p.paused and not p.lost.done():
            p.paused = False
            self.transport.resume_reading()
        return data

    async def close(self) -> None:
        self.transport.close()  # what is still buffered is sent first


class WebSocketClient(Client):
    """A websocket: each output piece one frame (binary since API 1.28, text before),
    stdin from the client's messages of either kind."""

    def __init__(self, ws: web.WebSocketResponse, binary: bool) -> None:
        self.ws = ws
        self.opcode = WSMsgType.BINARY if binary else WSMsgType.TEXT
        self.lost = asyncio.get_running_loop().create_future()
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=64)
        # The websocket must be read even without stdin, to see its close.
        self.reader = asyncio.ensure_future(self._read_all())

    async def _read_all(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type in (WSMsgType.BINARY, WSMsgType.TEXT):
                    data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
                    if data:
                        await self.inbox.put(data)
        finally:
            if not self.lost.done():
                self.lost.set_result(None)
            with contextlib.suppress(asyncio.QueueFull):
                self.inbox.put_nowait(None)

    async def send(self, sid: int, data: bytes) -> None:
        if self.ws.closed:
            return
        with contextlib.suppress(ConnectionError):
            await self.ws.send_frame(data, self.opcode)

    async def read(self) -> bytes | None:
        if self.lost.done() and self.inbox.empty():
            return None
        return await self.inbox.get()

    async def close(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.ws.close()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


def take_over(request: web.Request, tty: bool) -> RawClient:
    """Answer 101 (or 200 without an Upgrade request) straight onto the transport and
    keep the connection: aiohttp must not write a response of its own. As dockerd,
    the content type says multiplexed only on an upgrade without a TTY since API 1.42."""
    transport = request.transport
    if transport is None:
        raise InvalidArgument("connection closed")
    # The CLI half-closes its side when it sends no stdin; asyncio would close the
    # transport on that EOF unless the protocol asks to keep it open.
    protocol = _Hijacked(request.protocol, transport)  # type: ignore[arg-type]
    transport.set_protocol(protocol)
    upgrade = "Upgrade" in request.headers
    ctype = "application/vnd.docker.raw-stream"
    if upgrade and not tty and not version_less(api_version(request), "1.42"):
        ctype = "application/vnd.docker.multiplexed-stream"
    if upgrade:
        head = (f"HTTP/1.1 101 UPGRADED\r\nContent-Type: {ctype}\r\n"
                "Connection: Upgrade\r\nUpgrade: tcp\r\n")
    else:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\n"
    transport.write((head + "\r\n").encode())
    return RawClient(transport, protocol, multiplexed=not tty)  # type: ignore[arg-type]


class End(enum.Enum):
    """Why a session ended."""

    EXITED = "exited"      # the process exited and its output was all relayed
    DETACHED = "detached"  # the client typed the detach keys
    CLOSED = "closed"      # the client ended its input, or went away


@dataclass
class Session:
    """What a session relays: STDIN the client's input (the process has a stdin);
    WANT the output streams by id; CLOSE_STDIN whether the client's end of input
    closes the process's stdin (StdinOnce) rather than ending the session."""

    tty: bool
    stdin: bool = False
    close_stdin: bool = False
    want: dict[int, bool] = field(default_factory=dict)
    detach_keys: bytes = DEFAULT_DETACH_KEYS

    @property
    def relays_anything(self) -> bool:
        return self.stdin or any(self.want.values())


async def _pump_output(client: Client, sock: socket.socket, s: Session) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            msg = await loop.sock_recv(sock, proto.MAX_MESSAGE + 1)
        except OSError:
            return
        if not msg:
            return
        sid, data = msg[0], msg[1:]
        if data and s.want.get(sid, False):
            await client.send(sid, data)


async def _pump_input(client: Client, sock: socket.socket, s: Session) -> End | None:
    """Copy the client's input to the process; DETACHED when the keys are typed, None
    at the end of input (or when the process no longer takes any)."""
    loop = asyncio.get_running_loop()
    # As dockerd: detach keys are looked for only with a TTY, where a client cannot
    # otherwise end its input without ending the process's.
    matcher = _EscapeMatcher(s.detach_keys) if s.tty and s.detach_keys else None
    while True:
        data = await client.read()
        if data is None:
            return None
        detached = False
        if matcher is not None:
            data, detached = matcher.feed(data)
        try:
            for i in range(0, len(data), proto.MAX_MESSAGE):
                await loop.sock_sendall(sock, bytes((proto.STDIN,)) + data[i:i + proto.MAX_MESSAGE])
        except OSError:
            return None
        if detached:
            return End.DETACHED


async def serve(client: Client, stream: AttachStream, s: Session) -> End:
    """Relay until the process exits, the client detaches, or its input ends (which,
    with CLOSE_STDIN and no TTY, closes the process's stdin and the session goes on).
    The caller closes STREAM and the client."""
    if not s.relays_anything:
        return End.CLOSED
    sock = stream.sock
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    out = asyncio.ensure_future(_pump_output(client, sock, s))
    inp = asyncio.ensure_future(_pump_input(client, sock, s)) if s.stdin else None
    try:
        while True:
            waiting: set[asyncio.Future[object]] = {out, client.lost}  # type: ignore[arg-type]
            if inp is not None:
                waiting.add(inp)  # type: ignore[arg-type]
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if out in done:
                return End.EXITED
            if inp is not None and inp in done:
                if inp.result() is End.DETACHED:
                    return End.DETACHED
                if s.close_stdin and not s.tty:
                    with contextlib.suppress(OSError):
                        await loop.sock_sendall(sock, bytes((proto.STDIN,)))
                    inp = None
                    continue
                return End.CLOSED
            if client.lost in done:
                return End.CLOSED
    finally:
        for t in (out, inp):
            if t is not None and not t.done():
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
