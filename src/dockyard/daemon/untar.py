"""Unpacking a `docker cp` archive into a directory, as go-archive's Untar does for
dockerd: names cleaned and refused when they climb out of the destination, hard links
and symlinks refused when their targets do, an existing entry replaced unless it is a
directory meeting a directory (or refused with noOverwriteDirNonDir), parents created,
owners, modes, times and xattrs applied, directory times last.

It runs inside a container's view (daemon/filesystem.py), where the root is the
container's: symlinks already in the container resolve within it. :func:`check` reads
the whole archive first, so a refused entry is reported before anything is written.
"""

from __future__ import annotations

import bz2  # noqa: F401  (tarfile imports its decompressors lazily; a view cannot)
import gzip  # noqa: F401
import json
import logging
import lzma  # noqa: F401
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Iterator
from typing import IO

from dockyard.errors import SystemFailure

log = logging.getLogger(__name__)


def go_quote(text: str) -> str:
    """Go's %q, near enough: a double-quoted string."""
    return json.dumps(text, ensure_ascii=False)


def inside(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def _entry_path(dest: str, m: tarfile.TarInfo) -> str:
    path = posixpath.normpath(posixpath.join(dest, posixpath.normpath("/" + m.name).lstrip("/")))
    # A name with ../ climbing out is refused (go-archive's breakout check); normpath
    # of "/"+name cannot climb, so compare against the literal join too.
    literal = posixpath.normpath(posixpath.join(dest, m.name.lstrip("/")))
    if not inside(literal, dest):
        raise SystemFailure(f"{go_quote(m.name)} is outside of {go_quote(dest)}")
    return path


def _go_join(base: str, name: str) -> str:
    """Go's filepath.Join: an absolute NAME is still appended to BASE (so an absolute
    link target counts as inside the destination, where it resolves in the container)."""
    return posixpath.normpath(base + "/" + name)


def _check_links(dest: str, path: str, m: tarfile.TarInfo) -> None:
    if m.islnk():
        target = _go_join(dest, m.linkname)
        if not inside(target, dest):
            raise SystemFailure(f"invalid hardlink {go_quote(target)} -> {go_quote(m.linkname)}")
    elif m.issym():
        target = _go_join(posixpath.dirname(path), m.linkname)
        if not inside(target, dest):
            raise SystemFailure(f"invalid symlink {go_quote(path)} -> {go_quote(m.linkname)}")


def _members(f: IO[bytes]) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    try:
        tf = tarfile.open(fileobj=f, mode="r|*")
    except tarfile.ReadError as exc:
        raise SystemFailure(f"archive/tar: invalid tar header ({exc})") from None
    try:
        while True:
            try:
                m = tf.next()
            except tarfile.ReadError as exc:
                raise SystemFailure(f"archive/tar: invalid tar header ({exc})") from None
            except (EOFError, tarfile.StreamError) as exc:
                raise SystemFailure(f"unexpected EOF ({exc})") from None
            if m is None:
                return
            yield tf, m
    finally:
        tf.close()


def _conflict(path: str, m: tarfile.TarInfo, no_overwrite: bool) -> None:
    if not no_overwrite:
        return
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode) and not m.isdir():
        raise SystemFailure(f"cannot overwrite directory {go_quote(path)} with non-directory "
                            f"{go_quote(m.name)}")
    if not stat.S_ISDIR(st.st_mode) and m.isdir():
        raise SystemFailure(f"cannot overwrite non-directory {go_quote(path)} with directory "
                            f"{go_quote(m.name)}")


def _remove(path: str) -> None:
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _extract_one(tf: tarfile.TarFile, m: tarfile.TarInfo, path: str, dest: str,
                 owner: tuple[int, int] | None, dir_times: list[tuple[str, float]]) -> None:
    parent = posixpath.dirname(path)
    if not os.path.lexists(parent):
        os.makedirs(parent, mode=0o755)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if stat.S_ISDIR(st.st_mode) and path == dest:
            return  # the "." entry: the destination keeps its own metadata
        if not (stat.S_ISDIR(st.st_mode) and m.isdir()):
            _remove(path)
    if m.isdir():
        if st is None or not stat.S_ISDIR(st.st_mode):
            os.mkdir(path, 0o700)
    elif m.isreg():
        src = tf.extractfile(m)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "wb") as out:
            assert src is not None
            while chunk := src.read(1 << 20):
                out.write(chunk)
    elif m.issym():
        os.symlink(m.linkname, path)
    elif m.islnk():
        os.link(posixpath.join(dest, m.linkname.lstrip("/")), path, follow_symlinks=False)
        return  # a hard link shares its target's metadata
    elif m.ischr() or m.isblk():
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        os.mknod(path, kind | 0o600, os.makedev(m.devmajor, m.devminor))
    elif m.isfifo():
        os.mkfifo(path, 0o600)
    else:
        log.debug("skipping tar entry %s of type %r", m.name, m.type)
        return
    uid, gid = owner if owner is not None else (m.uid, m.gid)
    os.chown(path, uid, gid, follow_symlinks=False)
    for key, value in m.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            try:
                os.setxattr(path, key[len("SCHILY.xattr."):],
                            value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
            except OSError as exc:
                log.debug("xattr %s on %s: %s", key, path, exc)
    if not m.issym():
        os.chmod(path, m.mode & 0o7777)
    if m.isdir():
        dir_times.append((path, m.mtime))
    else:
        os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)


def check(archive: IO[bytes], dest: str, no_overwrite_dir_non_dir: bool) -> None:
    """Refuse ARCHIVE before it is unpacked into DEST: entries or links escaping it,
    and (with NO_OVERWRITE_DIR_NON_DIR) directories and non-directories replacing
    each other."""
    for _tf, m in _members(archive):
        target = _entry_path(dest, m)
        _check_links(dest, target, m)
        _conflict(target, m, no_overwrite_dir_non_dir)


def unpack(archive: IO[bytes], dest: str, owner: tuple[int, int] | None) -> None:
    """Unpack ARCHIVE into directory DEST, every entry owned by OWNER (uid, gid) when
    given, else as the archive says."""
    dir_times: list[tuple[str, float]] = []
    for tf, m in _members(archive):
        if m.type == tarfile.XGLTYPE:
            continue
        _extract_one(tf, m, _entry_path(dest, m), dest, owner, dir_times)
    for p, mtime in reversed(dir_times):
        os.utime(p, (mtime, mtime))
