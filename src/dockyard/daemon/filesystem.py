"""A container's filesystem from outside: stat, archive (read a path as a tar), extract
(write a tar into a directory), export and changes. What `docker cp`, `docker export`
and `docker diff` use.

Every operation but changes runs in a *view* of the container, as dockerd's
openContainerFS builds one: a dedicated thread that unshares its filesystem context
and mount namespace (so nothing it mounts is visible to anyone else, and the kernel
drops it all when the thread ends, even if the daemon dies), bind-mounts the
container's binds from HostConfig into the container's root, and chroots there.
Inside it, plain path operations resolve symlinks as the container would, so a
hostile container cannot make the daemon read or write outside its root. The root is
the container's overlay: the one already mounted for a running container, or a
private mount of its snapshot for a stopped one. tmpfs mounts are not part of the
view (dockerd's are not either).

A lock per container serialises these operations, as dockerd's container lock does;
:func:`container_lock` is there for the lifecycle to take around mounting a
container's root at start, so that a start never races a private mount of the same
upper directory.
"""

from __future__ import annotations

import logging
import os
import posixpath
import queue
import stat
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from dockyard.daemon import ocispec, untar
from dockyard.daemon.containers import Container
from dockyard.errors import Conflict, DockyardError, InvalidArgument, NotFound, SystemFailure
from dockyard.image import layer as layers_mod
from dockyard.image import overlay
from dockyard.image.archive import export_dir
from dockyard.image.store import format_go_time
from dockyard.runtime import linux as L
from dockyard.runtime.rootfs import remount_bind, secure_join

TYPE_CHECKING = False
if TYPE_CHECKING:
    from dockyard.daemon.lifecycle import Lifecycle

log = logging.getLogger(__name__)

_CHUNK = 1 << 16

# Go's os.FileMode type bits (the permission bits are the same as Unix's).
_GO_DIR = 1 << 31
_GO_SYMLINK = 1 << 27
_GO_DEVICE = 1 << 26
_GO_PIPE = 1 << 25
_GO_SOCKET = 1 << 24
_GO_SETUID = 1 << 23
_GO_SETGID = 1 << 22
_GO_CHARDEV = 1 << 21
_GO_STICKY = 1 << 20

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def container_lock(cid: str) -> threading.Lock:
    """The lock of container CID's filesystem operations (one per container, process-wide)."""
    with _locks_guard:
        lock = _locks.get(cid)
        if lock is None:
            lock = _locks[cid] = threading.Lock()
        return lock


# -- stat -----------------------------------------------------------------------------

def go_file_mode(mode: int) -> int:
    """ST_MODE as Go's os.FileMode bits (what dockerd's PathStat carries)."""
    out = stat.S_IMODE(mode) & 0o777
    if mode & stat.S_ISUID:
        out |= _GO_SETUID
    if mode & stat.S_ISGID:
        out |= _GO_SETGID
    if mode & stat.S_ISVTX:
        out |= _GO_STICKY
    kind = stat.S_IFMT(mode)
    out |= {stat.S_IFDIR: _GO_DIR, stat.S_IFLNK: _GO_SYMLINK, stat.S_IFIFO: _GO_PIPE,
            stat.S_IFSOCK: _GO_SOCKET, stat.S_IFBLK: _GO_DEVICE,
            stat.S_IFCHR: _GO_DEVICE | _GO_CHARDEV}.get(kind, 0)
    return out


@dataclass(frozen=True)
class PathStat:
    """dockerd's container.PathStat."""

    name: str
    size: int
    mode: int
    mtime: str
    link_target: str

    @property
    def is_dir(self) -> bool:
        return bool(self.mode & _GO_DIR)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "mode": self.mode, "mtime": self.mtime,
                "linkTarget": self.link_target}


def _go_base(path: str) -> str:
    """Go's filepath.Base."""
    if path == "":
        return "."
    path = path.rstrip("/")
    if path == "":
        return "/"
    return path.rpartition("/")[2]


def _preserve_trailing(cleaned: str, original: str) -> str:
    """go-archive's PreserveTrailingDotOrSeparator: `docker cp c:/dir/. x` copies the
    contents of /dir, `c:/dir/` insists on a directory."""
    if original.endswith("/.") and not cleaned.endswith("/."):
        return cleaned.rstrip("/") + "/."
    if original.endswith("/") and not cleaned.endswith("/"):
        return cleaned + "/"
    return cleaned


def _abs(path: str) -> str:
    """Path in the container, as dockerd reads it: relative to the root."""
    return _preserve_trailing(posixpath.normpath(posixpath.join("/", path)), path)


def _stat_in_view(path: str) -> PathStat:
    st = os.lstat(path)
    target = ""
    if stat.S_ISLNK(st.st_mode):
        # Inside the view's chroot: resolution cannot leave the container.
        target = os.path.realpath(path)
    return PathStat(name=_go_base(path), size=st.st_size, mode=go_file_mode(st.st_mode),
                    mtime=format_go_time(st.st_mtime_ns // 1_000_000_000,
                                         st.st_mtime_ns % 1_000_000_000),
                    link_target=target)


# -- the view ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Bind:
    source: str
    destination: str
    writable: bool


def _binds(c: Container) -> list[_Bind]:
    """The container's bind mounts as its HostConfig gives them, and its /etc/hosts,
    /etc/hostname and /etc/resolv.conf (dockerd's view has them; tmpfs mounts are not
    part of it), parents first."""
    etc = {dest: path for dest, path in (("/etc/hostname", c.HostnamePath),
                                         ("/etc/hosts", c.HostsPath),
                                         ("/etc/resolv.conf", c.ResolvConfPath))
           if path and os.path.exists(path)}
    try:
        mounts = ocispec.user_mounts(c.HostConfig, etc, bool(c.HostConfig.get("ReadonlyRootfs")))
    except DockyardError as exc:
        raise SystemFailure(f"container {c.ID}: {exc}") from None
    return [_Bind(m["source"], m["destination"], "ro" not in m.get("options", ()))
            for m in mounts if m.get("type") == "bind"]


class _View:
    """A thread living in the container's filesystem (see the module docstring)."""

    def __init__(self, lc: Lifecycle, c: Container, binds: list[_Bind]) -> None:
        self.cid = c.ID
        self._todo: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = \
            queue.SimpleQueue()
        self._ready: Future[None] = Future()
        rootfs = lc.rootfs(c.ID)
        # Read in this (host) thread: /proc/self is the process's view.
        shared = os.path.isdir(rootfs) and overlay.is_mounted(rootfs)
        dirs = None if shared else lc.images.snapshots.container_dirs(c.ID)
        self._empty: str | None = None
        if dirs is not None and not dirs[0]:
            # A container without image layers; overlayfs needs a lower directory.
            self._empty = tempfile.mkdtemp(prefix="empty-", dir=lc.exec_root)
        self._thread = threading.Thread(target=self._main, args=(rootfs, dirs, binds),
                                        name=f"fs-{c.ID[:12]}", daemon=True)
        self._thread.start()
        try:
            self._ready.result()
        except BaseException:
            self._thread.join()
            self._cleanup()
            raise

    def _cleanup(self) -> None:
        if self._empty is not None:
            os.rmdir(self._empty)
            self._empty = None

    def _enter(self, rootfs: str, dirs: tuple[list[str], str, str] | None,
               binds: list[_Bind]) -> None:
        L.unshare(L.CLONE_FS)
        L.unshare(L.CLONE_NEWNS)
        # Private, not slave: the host unmounting the container's root at its exit must
        # not be blocked by (or propagate into) this view.
        L.mount(None, "/", None, L.MS_PRIVATE | L.MS_REC)
        if dirs is not None:
            lowers, upper, work = dirs
            os.makedirs(rootfs, mode=0o755, exist_ok=True)
            overlay.mount_overlay(lowers or [str(self._empty)], rootfs, upper=upper, work=work)
        for b in binds:
            self._bind(rootfs, b)
        os.chroot(rootfs)
        os.chdir("/")

    @staticmethod
    def _bind(rootfs: str, b: _Bind) -> None:
        is_dir = os.path.isdir(b.source)
        dest = secure_join(rootfs, b.destination)
        if is_dir:
            os.makedirs(dest, mode=0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
            if not os.path.lexists(dest):
                os.close(os.open(dest, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o755))
        # Mounted through a descriptor of the resolved target: a symlink swapped in
        # meanwhile cannot redirect the mount.
        fd = os.open(dest, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            L.mount(b.source, f"/proc/self/fd/{fd}", None, L.MS_BIND | L.MS_REC)
            real = os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        if not b.writable:
            remount_bind(real, L.MS_RDONLY)

    def _main(self, rootfs: str, dirs: tuple[list[str], str, str] | None,
              binds: list[_Bind]) -> None:
        try:
            self._enter(rootfs, dirs, binds)
        except BaseException as exc:
            self._ready.set_exception(_as_error(exc, f"opening the filesystem of {self.cid}"))
            return
        self._ready.set_result(None)
        while True:
            item = self._todo.get()
            if item is None:
                return  # the namespace, and every mount in it, goes with the thread
            fn, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        self._todo.put((fn, fut))
        return fut

    def run(self, fn: Callable[[], Any]) -> Any:
        return self.submit(fn).result()

    def close(self) -> None:
        self._todo.put(None)
        self._thread.join()
        self._cleanup()


def _as_error(exc: BaseException, what: str) -> BaseException:
    if isinstance(exc, DockyardError) or not isinstance(exc, OSError):
        return exc
    return SystemFailure(f"{what}: {exc.strerror or exc}")


class _Session:
    """The container lock plus a view; closed by whoever finishes last (a streamed
    archive outlives the request handler's call)."""

    def __init__(self, lc: Lifecycle, ref: str, *, binds: bool = True,
                 check: Callable[[Container], None] | None = None) -> None:
        c = lc.store.get(ref)
        self.lock = container_lock(c.ID)
        self.lock.acquire()
        try:
            self.container = lc.store.get(c.ID)  # as it is now that we hold the lock
            if check is not None:
                check(self.container)
            self.binds = _binds(self.container) if binds else []
            self.view = _View(lc, self.container, self.binds)
        except BaseException:
            self.lock.release()
            raise

    def close(self) -> None:
        try:
            self.view.close()
        finally:
            self.lock.release()


def _not_found(exc: OSError, path: str, ref: str) -> DockyardError:
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return NotFound(f"Could not find the file {path} in container {ref}")
    return SystemFailure(f"{path}: {exc.strerror or exc}")


def _check_path(path: str) -> None:
    if not path:
        raise InvalidArgument("bad parameter: path cannot be empty")
    if "\0" in path:
        raise InvalidArgument(f"bad parameter: invalid path {path!r}")


# -- stat and archive -------------------------------------------------------------------

def stat_path(lc: Lifecycle, ref: str, path: str) -> PathStat:
    """HEAD /containers/{id}/archive: what is at PATH in container REF."""
    _check_path(path)
    s = _Session(lc, ref)
    try:
        return s.view.run(lambda: _stat_in_view(path))
    except OSError as exc:
        raise _not_found(exc, path, ref) from None
    finally:
        s.close()


class ArchiveStream:
    """A tar being written by a container's view; read() it, then close()."""

    def __init__(self, session: _Session, stat_: PathStat, producer: Callable[[BinaryIO], None]) -> None:
        self.stat = stat_
        self._session = session
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        self._reader = os.fdopen(rfd, "rb", buffering=0)
        writer = os.fdopen(wfd, "wb", buffering=0)
        self.error: BaseException | None = None

        def produce() -> None:
            try:
                producer(writer)
            except BrokenPipeError:
                log.debug("archive of %s: the reader went away", session.container.ID)
            except BaseException as exc:
                # The status is sent already; the truncated tar tells the client.
                self.error = exc
                log.warning("archive of %s failed: %s", session.container.ID, exc)
            finally:
                writer.close()

        self._done = session.view.submit(produce)

    def read(self, n: int = _CHUNK) -> bytes:
        return self._reader.read(n)

    def close(self) -> None:
        self._reader.close()  # a producer still writing gets EPIPE and stops
        try:
            self._done.result()
        finally:
            self._session.close()


def archive_path(lc: Lifecycle, ref: str, path: str) -> ArchiveStream:
    """GET /containers/{id}/archive: the tar of PATH in container REF and its stat.
    The caller must close() the stream; the container stays locked until then."""
    _check_path(path)
    s = _Session(lc, ref)
    try:
        absolute = _abs(path)
        try:
            st = s.view.run(lambda: _stat_in_view(absolute))
        except OSError as exc:
            raise _not_found(exc, path, ref) from None
        if st.is_dir:
            source, name = absolute, _go_base(absolute)
        else:
            source, name = absolute.rstrip("/"), _go_base(absolute)

        def produce(out: BinaryIO) -> None:
            w = layers_mod.TarWriter(out)
            layers_mod.write_tree(w, source, name)
            w.close()

        stream = ArchiveStream(s, st, produce)
    except BaseException:
        s.close()
        raise
    lc.emit("archive-path", s.container, None)
    return stream


def _check_export(c: Container) -> None:
    if c.State.Dead:
        raise Conflict(f"You cannot export container {c.ID} which is Dead")
    if c.State.RemovalInProgress:
        raise Conflict(f"You cannot export container {c.ID} which is being removed")


def export(lc: Lifecycle, ref: str) -> ArchiveStream:
    """GET /containers/{id}/export: the container's root filesystem (its binds left out,
    as dockerd exports the RW layer's mount) as a tar stream."""
    s = _Session(lc, ref, binds=False, check=_check_export)
    try:
        st = s.view.run(lambda: _stat_in_view("/"))

        def produce(out: BinaryIO) -> None:
            export_dir("/", out)

        stream = ArchiveStream(s, st, produce)
    except BaseException:
        s.close()
        raise
    lc.emit("export", s.container, None)
    return stream


# -- extract ----------------------------------------------------------------------------

def _writable(c: Container, binds: list[_Bind], path: str) -> None:
    """dockerd's checkWritablePath."""
    best = None
    for b in binds:
        longer = best is None or len(b.destination) > len(best.destination)
        if untar.inside(path, b.destination) and longer:
            best = b
    if best is not None:
        if not best.writable:
            raise InvalidArgument("mounted volume is marked read-only")
        return
    if c.HostConfig.get("ReadonlyRootfs"):
        raise InvalidArgument("container rootfs is marked read-only")


def _copy_owner(c: Container) -> tuple[int, int] | None:
    """copyUIDGID: the container user's ids, looked up in its own files (in the view)."""
    user = c.Config.get("User") or ""
    if not user:
        return None
    try:
        u = ocispec.resolve_user("/", user)["user"]
    except DockyardError as exc:
        raise InvalidArgument(f"failed to look up user {untar.go_quote(user)} in container: {exc}") from None
    return int(u["uid"]), int(u["gid"])


def extract(lc: Lifecycle, ref: str, path: str, archive: IO[bytes], *,
            no_overwrite_dir_non_dir: bool = False, copy_uid_gid: bool = False) -> None:
    """PUT /containers/{id}/archive: unpack the tar ARCHIVE (seekable: it is read
    twice) into directory PATH of container REF. The whole archive is checked before
    anything is written, so a refused entry leaves the container untouched."""
    _check_path(path)
    s = _Session(lc, ref)
    c = s.container

    def locate() -> str:
        try:
            resolved = os.path.realpath(posixpath.join("/", path), strict=True)
        except OSError as exc:
            raise _not_found(exc, path, ref) from None
        if not stat.S_ISDIR(os.lstat(resolved).st_mode):
            raise InvalidArgument("extraction point is not a directory")
        _writable(c, s.binds, resolved)
        return resolved

    def work() -> None:
        dest = locate()
        archive.seek(0, os.SEEK_END)
        if archive.tell() == 0:
            return  # an empty body is an empty archive, as for dockerd
        archive.seek(0)
        untar.check(archive, dest, no_overwrite_dir_non_dir)
        archive.seek(0)
        untar.unpack(archive, dest, _copy_owner(c) if copy_uid_gid else None)

    try:
        s.view.run(work)
    except OSError as exc:
        raise _as_error(exc, f"extracting into {path} in container {ref}") from None
    finally:
        s.close()
    lc.emit("extract-to-dir", c, None)


# -- changes ------------------------------------------------------------------------------

_KINDS = {"C": 0, "A": 1, "D": 2}


def changes(lc: Lifecycle, ref: str) -> list[dict[str, Any]] | None:
    """GET /containers/{id}/changes: dockerd's [{"Path", "Kind"}] (0 modified, 1 added,
    2 deleted), or None (JSON null, as dockerd's nil slice) when nothing changed."""
    c = lc.store.get(ref)
    with container_lock(c.ID):
        lowers, upper, _work = lc.images.snapshots.container_dirs(c.ID)
        found = layers_mod.changes(lowers, upper)
    if not found:
        return None
    return [{"Path": ch.path, "Kind": _KINDS[ch.kind]} for ch in found]
