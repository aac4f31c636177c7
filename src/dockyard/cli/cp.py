"""`dockyard cp`: files between a container and the local filesystem, as tar streams
through the archive endpoints, with docker's rules for what the destination means."""

from __future__ import annotations

import os
import sys
import tarfile
from collections.abc import Iterator
from typing import Any

import click

from dockyard.cli.command import Command, StatusError, exact_args
from dockyard.cli.connection import client

_DIR_BIT = 1 << 31  # Go's os.ModeDir in the stat the daemon sends


def split_arg(arg: str) -> tuple[str, str]:
    """docker's splitCpArg: CONTAINER:PATH, unless the argument is a local path."""
    if arg.startswith("/"):
        return "", arg
    container, sep, path = arg.partition(":")
    if not sep or container.startswith("."):
        return "", arg
    return container, path


@click.command(cls=Command, usage="[OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n"
               "\tdockyard cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH")
@click.option("-a", "--archive", is_flag=True, help="Archive mode (copy all uid/gid information)")
@click.option("-L", "--follow-link", is_flag=True, help="Always follow symbol link in SRC_PATH")
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output during copy")
@click.argument("args", nargs=-1, callback=exact_args(2))
def cp(archive: bool, follow_link: bool, quiet: bool, args: tuple[str, ...]) -> None:
    """Copy files/folders between a container and the local filesystem"""
    src_container, src = split_arg(args[0])
    dst_container, dst = split_arg(args[1])
    if src_container and dst_container:
        raise StatusError("copying between containers is not supported", 1)
    if not src_container and not dst_container:
        raise StatusError("must specify at least one container source", 1)
    if src_container:
        _from_container(src_container, src, dst)
    else:
        _to_container(src, dst_container, dst, archive, follow_link)


def _safe_members(tar: tarfile.TarFile, rename: tuple[str, str] | None) -> Iterator[tarfile.TarInfo]:
    for m in tar:
        if rename is not None:
            first, _, rest = m.name.partition("/")
            if first == rename[0]:
                m.name = rename[1] + ("/" + rest if rest else "")
        parts = m.name.split("/")
        if m.name.startswith("/") or ".." in parts:
            raise StatusError(f"invalid path in archive: {m.name}", 1)
        yield m


def _from_container(container: str, src: str, dst: str) -> None:
    from dockyard.client.containers import stat_of

    with client().containers.get_archive(container, src) as r:
        if dst == "-":
            out = sys.stdout.buffer
            for data in r.iter_raw():
                out.write(data)
            out.flush()
            return
        stat = stat_of(r)
        src_is_dir = bool(int(stat.get("mode", 0)) & _DIR_BIT)
        name = stat.get("name") or os.path.basename(src.rstrip("/")) or "/"
        if os.path.isdir(dst):
            target, rename = dst, None
        elif os.path.exists(dst):
            if src_is_dir:
                raise StatusError(f"cannot copy directory to file: {dst}", 1)
            target, rename = os.path.dirname(os.path.abspath(dst)), (name, os.path.basename(dst))
        else:
            if dst.endswith("/"):
                raise StatusError(f"destination directory {dst} must exist", 1)
            parent = os.path.dirname(os.path.abspath(dst))
            if not os.path.isdir(parent):
                raise StatusError(f"lstat {parent}: no such file or directory", 1)
            target, rename = parent, (name, os.path.basename(dst))
        with tarfile.open(fileobj=_RawReader(r), mode="r|") as tar:
            for member in _safe_members(tar, rename):
                tar.extract(member, target, set_attrs=True)


class _RawReader:
    """A file-like reader over a response body, for tarfile's stream mode."""

    def __init__(self, resp: Any) -> None:
        self.chunks = resp.iter_raw()
        self.buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buf) < n:
            try:
                self.buf += next(self.chunks)
            except StopIteration:
                break
        if n < 0:
            data, self.buf = self.buf, b""
        else:
            data, self.buf = self.buf[:n], self.buf[n:]
        return data


def _to_container(src: str, container: str, dst: str, archive: bool, follow: bool) -> None:
    import tempfile

    cl = client()
    if src == "-":
        stat = cl.containers.stat_path(container, dst)
        if stat is None or not int(stat.get("mode", 0)) & _DIR_BIT:
            raise StatusError(f"destination \"{container}:{dst}\" must be a directory", 1)
        cl.containers.put_archive(container, dst, _chunks(sys.stdin.buffer), copy_uid_gid=archive)
        return
    path = os.path.abspath(src)
    if not os.path.lexists(path):
        raise StatusError(f"lstat {path}: no such file or directory", 1)
    src_is_dir = os.path.isdir(path)
    stat = cl.containers.stat_path(container, dst)
    if stat is not None and int(stat.get("mode", 0)) & _DIR_BIT:
        target, arcname = dst, os.path.basename(path.rstrip("/"))
    else:
        if stat is not None and src_is_dir:
            raise StatusError("cannot copy directory to file", 1)
        if stat is None and dst.endswith("/"):
            raise StatusError(f"destination \"{container}:{dst}\" must be a directory", 1)
        target = os.path.dirname(dst.rstrip("/")) or "/"
        arcname = os.path.basename(dst.rstrip("/"))
    with tempfile.TemporaryFile() as spool:
        with tarfile.open(fileobj=spool, mode="w", dereference=follow) as tar:
            def owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
                if not archive:
                    # As docker: files land owned by the container's root unless -a.
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                return info

            tar.add(path, arcname=arcname, filter=owner)
        spool.seek(0)
        cl.containers.put_archive(container, target, _chunks(spool), copy_uid_gid=archive)


def _chunks(f: Any) -> Iterator[bytes]:
    while True:
        data = f.read(1 << 20)
        if not data:
            return
        yield data
