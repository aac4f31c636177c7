"""The caller's side of a container's terminal: receiving the pty master and relaying it.

Used by `run`/`exec` in the foreground with process.terminal set and no
--console-socket, where the runtime itself plays the console socket's owner.
"""

from __future__ import annotations

import os
import select
import socket


def receive_master(sock: socket.socket, timeout: float = 10.0) -> int:
    """The pty master fd sent by the container's init (message: pty name, SCM_RIGHTS fd)."""
    sock.settimeout(timeout)
    _msg, fds, _flags, _addr = socket.recv_fds(sock, 4096, 1)
    if not fds:
        raise OSError("console socket closed before a terminal was sent")
    return fds[0]


def relay(master: int, pid: int) -> None:
    """Copy our stdin to the pty and the pty to our stdout until PID's side closes. With a
    terminal on our stdin it is put in raw mode, so keys reach the container unchanged."""
    import termios
    import tty

    saved = None
    if os.isatty(0):
        saved = termios.tcgetattr(0)
        tty.setraw(0)
        _copy_winsize(0, master)
    try:
        fds = [master, 0]
        while True:
            try:
                ready, _, _ = select.select(fds, [], [], 0.5)
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    return
                os.write(1, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    os.write(master, data)
                else:
                    fds.remove(0)
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)


def _copy_winsize(src: int, dst: int) -> None:
    import fcntl
    import termios

    size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
    fcntl.ioctl(dst, termios.TIOCSWINSZ, size)
