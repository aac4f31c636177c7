"""Container output to the terminal: copying attach, exec and log streams, and the
attach-start-wait sequence behind `run` and `start -a`."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

from dockyard.errors import DockyardError

if TYPE_CHECKING:
    from dockyard.client import Client
    from dockyard.client.http import Response


def tty_size() -> list[int]:
    """docker's Out().GetTtySize(): our standard output's [height, width], [0, 0] when it
    is not a terminal. Sent with a TTY's create or exec, so that the container's first
    output already sees the right size, and on every resize."""
    import os

    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except (OSError, ValueError):
        return [0, 0]
    return [size.lines, size.columns]


def copy_frames(resp: Response, tty: bool) -> None:
    """stdout frames to our stdout, stderr frames to our stderr, as they arrive."""
    out: BinaryIO = sys.stdout.buffer
    err: BinaryIO = sys.stderr.buffer
    for sid, data in resp.iter_frames(tty):
        target = err if sid == 2 else out
        target.write(data)
        target.flush()


def _copy_until_detached(resp: Response, tty: bool, pump: StdinPump | None) -> bool:
    """copy_frames, until the stream ends or the user detaches (True): detaching shuts the
    connection down under the copy, so the error that causes is no failure."""
    try:
        copy_frames(resp, tty)
    except OSError:
        if pump is None or not pump.detached:
            raise
    return pump is not None and pump.detached


def parse_detach_keys(spec: str | None) -> bytes:
    """docker's detach-keys syntax: comma-separated keys, `ctrl-<x>` or a single character;
    ctrl-p,ctrl-q by default."""
    keys = bytearray()
    for key in (spec or "ctrl-p,ctrl-q").split(","):
        key = key.strip()
        if key.startswith("ctrl-") and len(key) == 6:
            c = key[5]
            code = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}.get(c)
            keys.append(code if code is not None else (ord(c.lower()) - ord("a") + 1))
        elif len(key) == 1:
            keys.append(ord(key))
        else:
            from dockyard.errors import InvalidArgument

            raise InvalidArgument(f"Unknown character: '{key}'")
    return bytes(keys)


class StdinPump:
    """Copies our stdin to a hijacked connection, then half-closes it (EOF for the
    process). With a TTY it watches for the detach keys, as docker's escape proxy does:
    the keys end the session and leave the container running."""

    def __init__(self, resp: Response, detach_keys: bytes | None = None) -> None:
        self.resp = resp
        self.detach_keys = detach_keys
        self.detached = False
        self.thread = threading.Thread(target=self._pump, name="stdin", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        import os
        import socket

        fd = sys.stdin.fileno()
        matched = b""
        try:
            while True:
                data = os.read(fd, 32768)
                if not data:
                    break
                if self.detach_keys:
                    matched = self._watch(matched + data)
                    if self.detached:
                        self.resp.sock.shutdown(socket.SHUT_RDWR)
                        return
                self.resp.sock.sendall(data)
        except OSError:
            pass
        finally:
            if not self.detached:
                self.resp.close_write()

    def _watch(self, seen: bytes) -> bytes:
        keys = self.detach_keys or b""
        if keys in seen:
            self.detached = True
            return b""
        # Keep the tail that could begin the sequence.
        for n in range(min(len(keys) - 1, len(seen)), 0, -1):
            if keys.startswith(seen[-n:]):
                return seen[-n:]
        return b""


def attach_and_wait(cl: Client, container: str, *, start: bool, stdin: bool = False,
                    tty: bool | None = None, auto_remove: bool = False,
                    start_failed: Callable[[DockyardError], int] | None = None,
                    detach_keys: str | None = None, sig_proxy: bool = True) -> int:
    """Attach to the container, ask for its next exit, start it, copy its output until it
    ends; the container's exit status (or what start_failed makes of a start error)."""
    if tty is None:
        tty = bool((cl.containers.inspect(container).get("Config") or {}).get("Tty"))
    attach = cl.containers.attach(container, stdin=stdin, detach_keys=detach_keys)
    terminal = _Terminal(cl, container) if tty and stdin and sys.stdin.isatty() else None
    proxy: _SignalProxy | None = None
    try:
        if terminal is not None:
            terminal.raw()
        pump = None
        if stdin:
            pump = StdinPump(attach, parse_detach_keys(detach_keys) if tty else None)
        else:
            attach.close_write()
        # docker's waitExitOrRemoved: registered before the start, so a fast exit is seen.
        waiter = cl.containers.wait_request(container, "removed" if auto_remove else "next-exit")
        try:
            if start:
                try:
                    cl.containers.start(container)
                except DockyardError as exc:
                    if start_failed is None:
                        raise
                    return start_failed(exc)
            if terminal is not None:
                terminal.follow_size()
            elif sig_proxy and not tty:
                proxy = _SignalProxy(cl, container)
            if _copy_until_detached(attach, tty, pump):
                return 0  # detached: the container goes on without us
            result = waiter.json() or {}
        finally:
            waiter.close()
    finally:
        if proxy is not None:
            proxy.restore()
        if terminal is not None:
            terminal.restore()
        attach.close()
    if result.get("Error"):
        message = (result["Error"] or {}).get("Message", "")
        if message:
            sys.stderr.write(f"{message}\n")
            return 125
    return int(result.get("StatusCode", 0))


class _Terminal:
    """Our terminal while attached to a container's TTY: raw, so keys (and the detach
    sequence) go to the container as typed, and its size followed."""

    def __init__(self, cl: Client, container: str, exec_id: str | None = None) -> None:
        self.cl = cl
        self.container = container
        self.exec_id = exec_id
        self.saved: list[Any] | None = None
        self.previous_handler: Any = None

    def raw(self) -> None:
        import termios
        import tty

        fd = sys.stdin.fileno()
        self.saved = termios.tcgetattr(fd)
        tty.setraw(fd)

    def resize(self) -> None:
        height, width = tty_size()
        if not height and not width:
            return
        try:
            if self.exec_id is not None:
                self.cl.execs.resize(self.exec_id, height, width)
            else:
                self.cl.containers.resize(self.container, height, width)
        except DockyardError:
            pass  # the container may have ended already

    def follow_size(self) -> None:
        import signal

        self.resize()
        self.previous_handler = signal.signal(signal.SIGWINCH, lambda *_: self.resize())

    def restore(self) -> None:
        import signal
        import termios

        if self.previous_handler is not None:
            signal.signal(signal.SIGWINCH, self.previous_handler)
        if self.saved is not None:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self.saved)


def exec_attached(cl: Client, exec_id: str, container: str, *, tty: bool, stdin: bool,
                  detach_keys: str | None = None, console_size: list[int] | None = None) -> int:
    """Start an exec on a hijacked connection (at CONSOLE_SIZE, [height, width], with a
    TTY), relay its stdio, and answer its exit code."""
    terminal = _Terminal(cl, container, exec_id) if tty and stdin and sys.stdin.isatty() else None
    resp = cl.execs.start(exec_id, tty=tty, console_size=console_size)
    assert resp is not None
    with resp:
        try:
            if terminal is not None:
                terminal.raw()
                terminal.follow_size()
            pump = StdinPump(resp, parse_detach_keys(detach_keys) if tty else None) if stdin else None
            if pump is None:
                resp.close_write()
            if _copy_until_detached(resp, tty, pump):
                return 0
        finally:
            if terminal is not None:
                terminal.restore()
    return int(cl.execs.inspect(exec_id).get("ExitCode") or 0)


class _SignalProxy:
    """docker's --sig-proxy: signals we receive go to the container (without a TTY;
    with one the terminal delivers them)."""

    _NAMES = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM")

    def __init__(self, cl: Client, container: str) -> None:
        import signal

        self.cl = cl
        self.container = container
        self.previous: dict[int, Any] = {}
        for name in self._NAMES:
            signum = getattr(signal, name)
            self.previous[signum] = signal.signal(signum, self._forward)

    def _forward(self, signum: int, frame: Any) -> None:
        import signal

        try:
            self.cl.containers.kill(self.container, signal.Signals(signum).name)
        except DockyardError:
            pass  # gone already

    def restore(self) -> None:
        import signal

        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def write_stream(resp: Response, output: str | None) -> None:
    """A response body (save, export) to stdout, or to OUTPUT whole or not at all."""
    import os

    if output is None:
        out = sys.stdout.buffer
        for data in resp.iter_raw():
            out.write(data)
        out.flush()
        return
    tmp = f"{output}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            for data in resp.iter_raw():
                f.write(data)
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
