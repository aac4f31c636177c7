"""Replacing a file so that readers, and a crash, see the old contents or the new, never
half: a temp file beside it, written whole, renamed over it.

Import-light (os only): the runtime's start path uses it too.
"""

from __future__ import annotations

import os

TMP_MARK = ".tmp-"  # temp files are ".<name>.tmp-<random>": cleaners look for this


def fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o644, *,
                 durable: bool = True) -> None:
    """Replace PATH with DATA. DURABLE also fsyncs the file and its directory, so the new
    contents survive a power cut; without it (state that dies with a reboot anyway, on
    a start path that counts milliseconds) only atomicity is kept."""
    path = os.fspath(path)
    if isinstance(data, str):
        data = data.encode()
    directory, base = os.path.split(path)
    tmp = os.path.join(directory, f".{base}{TMP_MARK}{os.urandom(6).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        fsync_dir(directory)
