"""Container root filesystems as overlayfs mounts of image layers.

A container's root is the image's read-only layers stacked under one writable
upper directory. This module mounts such a stack, unmounts it, and tells whether
something is mounted at a path. Container start calls it, so it imports only
os/stat/time/errno and ctypes (which the runtime loads anyway) and loads
`logging` lazily, on the rare paths that log.

Mount options, and why each one is there:

* ``index=off``: with the index on, overlayfs records the lower files' handles
  in the upper and work dirs, which ties an upper to the exact layer directories
  it was first mounted with; re-extracted or moved layers then fail to mount
  ("failed to verify upper root origin"). Docker turns it off for the same reason.
* ``redirect_dir=off``: renaming a directory that comes from a lower layer then
  fails with EXDEV and tools (mv, rename-or-copy code) fall back to copy+delete.
  The upper thus stays a plain tree of files, whiteouts and opaque directories,
  which is exactly what an image layer tarball can carry, so `commit`/`diff`
  can export it; a redirect xattr has no tar representation.
* ``metacopy=off``: a metadata-only copy-up leaves a data-less file in the upper
  whose content lives in a lower layer: not exportable as a layer either, and
  overlayfs's docs warn against it with untrusted layers.

Deliberately absent: ``volatile`` (skips syncs of the upper; a host crash could
then lose or corrupt container data), ``userxattr`` (only for unprivileged
mounts; the engine mounts as root and layers use trusted.overlay.* xattrs),
``nosuid``/``nodev`` (device nodes and setuid binaries shipped in layers must
work inside the container; the runtime decides about such flags, not the
storage), ``xino``/``nfs_export`` (kernel defaults are fine).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import time

from dockyard.errors import InvalidArgument, NotFound, SystemFailure, Unsupported
from dockyard.runtime import linux

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging

__all__ = ["MAX_LAYERS", "is_mounted", "mount_overlay", "unmount"]

# overlayfs refuses deeper stacks (OVL_MAX_STACK); checking here gives a clear error.
MAX_LAYERS = 500

_OPTIONS = (("index", "off"), ("redirect_dir", "off"), ("metacopy", "off"))

# Entries overlayfs itself leaves in a work directory after an earlier mount of
# the same upper/work pair (a container restart); anything else means the caller
# passed the wrong directory.
_WORKDIR_OWN_ENTRIES = frozenset(("work", "index"))

# Characters that have a meaning inside the legacy option string (option and
# layer separators, escape). Paths holding them take the descriptor-based route,
# which needs no escaping at all.
_SPECIAL = (",", ":", "\\")

# New mount API (linux/mount.h). Syscalls numbered 424 and up are the same on
# every architecture.
_SYS_MOVE_MOUNT = 429
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432
_FSOPEN_CLOEXEC = 1
_FSCONFIG_SET_STRING = 1
_FSCONFIG_SET_FD = 5
_FSCONFIG_CMD_CREATE = 6
_FSMOUNT_CLOEXEC = 1
_MOUNT_ATTR_RDONLY = 1
_MOVE_MOUNT_F_EMPTY_PATH = 4
_AT_FDCWD = -100

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

_MOUNTINFO = "/proc/self/mountinfo"


class _NoFdLayers(Exception):
    """The kernel cannot take overlay layers as file descriptors (before 6.13)."""


def _log() -> logging.Logger:
    # logging pulls in re, string, threading...; only the rare paths pay for it.
    import logging

    return logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Validation


def _open_dir(path: str, what: str) -> int:
    """Open a directory that must exist; the fd pins it and feeds fsconfig."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"{what} {path} does not exist") from None
    except NotADirectoryError:
        raise InvalidArgument(f"{what} {path} is not a directory") from None
    except OSError as exc:
        raise InvalidArgument(f"{what} {path} cannot be opened: {exc.strerror}") from None


def _existing_ancestor_dev(path: str) -> int:
    """st_dev of the nearest existing ancestor: where a new directory would land."""
    probe = os.path.dirname(path)
    while True:
        try:
            st = os.stat(probe)
            break
        except FileNotFoundError:
            probe = os.path.dirname(probe)
        except NotADirectoryError:
            raise InvalidArgument(f"work directory {path} cannot be created: "
                                  "a parent is not a directory") from None
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidArgument(f"work directory {path} cannot be created: "
                              f"{probe} is not a directory")
    return st.st_dev


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _check_distinct(lowers: list[str], writable: list[tuple[str, str | None]]) -> None:
    """Catch what the kernel reports only as ELOOP, or not at all.

    A layer listed twice fails with a bare "too many levels of symbolic links";
    an upper inside a layer (or the reverse) is accepted by the kernel, and the
    container's writes would then alter the image. Lexical checks only: they are
    cheap, and a symlinked alias is the kernel's to catch.
    """
    seen: set[str] = set()
    for path in lowers:
        if path in seen:
            raise InvalidArgument(f"layer directory {path} is listed twice")
        seen.add(path)
        for what, other in writable:
            if other is not None and (_inside(other, path) or _inside(path, other)):
                raise InvalidArgument(f"{what} directory {other} and layer directory {path} "
                                      "must be separate trees")


def _check_work(work: str, upper: str, upper_dev: int) -> bool:
    """Validate the work directory; True when it still has to be created."""
    if _inside(work, upper) or _inside(upper, work):
        raise InvalidArgument(f"work directory {work} and upper directory {upper} "
                              "must be separate trees")
    try:
        st = os.stat(work)
    except FileNotFoundError:
        if _existing_ancestor_dev(work) != upper_dev:
            raise InvalidArgument(f"work directory {work} would not be on the same "
                                  f"filesystem as upper directory {upper}") from None
        return True
    except NotADirectoryError:
        raise InvalidArgument(f"work directory {work} cannot be created: "
                              "a parent is not a directory") from None
    if not os.path.isdir(work):
        raise InvalidArgument(f"work directory {work} is not a directory")
    if st.st_dev != upper_dev:
        raise InvalidArgument(f"work directory {work} is not on the same filesystem "
                              f"as upper directory {upper}")
    with os.scandir(work) as entries:
        stray = sorted(e.name for e in entries if e.name not in _WORKDIR_OWN_ENTRIES)
    if stray:
        raise InvalidArgument(f"work directory {work} is not empty "
                              f"(holds {', '.join(stray[:3])})")
    return False


# ---------------------------------------------------------------------------
# Mounting


def mount_overlay(lowers: list[str], target: str, upper: str | None = None,
                  work: str | None = None) -> None:
    """Mount the layer stack ``lowers`` (+ ``upper``) at ``target``.

    ``lowers`` is in image order: the BOTTOM (base) layer first, the top-most
    layer last, as layers are listed in an image manifest; files in later
    layers shadow those in earlier ones. (overlayfs's own ``lowerdir=`` lists
    the top layer first; the conversion happens here.)

    With ``upper`` the mount is writable: changes land in ``upper`` (copy-up,
    whiteouts for deletions) and the layers are never modified. ``work`` is
    overlayfs's scratch directory; it must be on the same filesystem as
    ``upper``, outside it, and be empty, missing (it is created, mode 0700) or
    left over from an earlier mount of the same upper. It defaults to the
    sibling ``<upper>.work``.

    Without ``upper`` the mount is read-only (writes fail with EROFS): an
    overlay of the layers when there are two or more, a read-only bind mount
    of the single layer otherwise (overlayfs needs two lowers without an upper).

    All directories are validated before anything is created or mounted; a
    problem raises :class:`NotFound` (missing path) or :class:`InvalidArgument`
    naming the path. Kernel refusals raise :class:`SystemFailure`, a host
    without overlayfs :class:`Unsupported`.

    Mount options are those in this module's docstring. Layer paths go in the
    classic option string when it fits in a page (the kernel's limit for
    mount(2) data); longer stacks, or paths containing ``,``, ``:`` or ``\\``,
    are passed one layer at a time as file descriptors via the new mount API
    (fsopen/fsconfig "lowerdir+"; kernel >= 6.13). On older kernels those fall
    back to short ``/proc/self/fd/N`` paths in the classic string.
    """
    if not lowers:
        raise InvalidArgument("an overlay needs at least one layer directory; none given")
    if len(lowers) > MAX_LAYERS:
        raise InvalidArgument(f"{len(lowers)} layers exceed overlayfs's limit of {MAX_LAYERS}")
    if upper is None and work is not None:
        raise InvalidArgument(f"work directory {work} given without an upper directory")

    lowers = [os.path.abspath(p) for p in lowers]
    target = os.path.abspath(target)
    if upper is not None:
        upper = os.path.abspath(upper)
        # Beside upper: the same filesystem in any sane layout, and one per upper.
        work = os.path.abspath(work) if work else upper + ".work"
    _check_distinct(lowers, [("upper", upper), ("work", work)])
    try:
        target_is_dir = stat.S_ISDIR(os.stat(target).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"mount target {target} does not exist") from None
    if not target_is_dir:
        raise InvalidArgument(f"mount target {target} is not a directory")

    fds: list[int] = []
    try:
        for path in lowers:
            fds.append(_open_dir(path, "layer directory"))
        create_work = False
        if upper is not None:
            assert work is not None
            upper_fd = _open_dir(upper, "upper directory")
            fds.append(upper_fd)
            create_work = _check_work(work, upper, os.fstat(upper_fd).st_dev)

        if upper is None and len(lowers) == 1:
            _bind_readonly(lowers[0], target)
            return

        if create_work:
            assert work is not None
            try:
                os.makedirs(work, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise InvalidArgument(f"work directory {work} cannot be created: "
                                      f"{exc.strerror}") from None
        if work is not None:
            fds.append(_open_dir(work, "work directory"))

        # fds: layers bottom..top, then upper and work if any.
        layer_fds = fds[:len(lowers)][::-1]
        extra_fds = fds[len(lowers):]
        _mount_stack(lowers[::-1], upper, work, target, layer_fds, extra_fds)
    finally:
        for fd in fds:
            os.close(fd)


def _legacy_data(top_first: list[str], upper: str | None, work: str | None) -> str:
    parts = ["lowerdir=" + ":".join(top_first)]
    if upper is not None:
        parts.append(f"upperdir={upper},workdir={work}")
    parts.extend(f"{key}={value}" for key, value in _OPTIONS)
    return ",".join(parts)


def _fits(data: str) -> bool:
    # mount(2) copies one page of data and needs the terminating NUL in it.
    return len(os.fsencode(data)) < os.sysconf("SC_PAGE_SIZE")


def _mount_stack(top_first: list[str], upper: str | None, work: str | None, target: str,
                 layer_fds: list[int], extra_fds: list[int]) -> None:
    readonly = upper is None
    paths = top_first + ([upper, work] if upper is not None and work is not None else [])
    data = _legacy_data(top_first, upper, work)
    if _fits(data) and not any(c in p for p in paths for c in _SPECIAL):
        _legacy_mount(data, target, readonly)
        return
    try:
        _fsapi_mount(layer_fds, extra_fds, target, readonly)
        return
    except _NoFdLayers:
        pass
    # Older kernel: name each directory through our open descriptors, which are
    # short and never need escaping.
    proc = [f"/proc/self/fd/{fd}" for fd in layer_fds]
    extra = [f"/proc/self/fd/{fd}" for fd in extra_fds]
    data = _legacy_data(proc, *(extra or [None, None]))
    if not _fits(data):
        raise Unsupported(f"{len(layer_fds)} layers do not fit in one mount option page "
                          "and this kernel cannot take overlay layers one by one "
                          "(needs Linux 6.13 or newer)")
    _log().info("mounting %d layers on %s through /proc/self/fd paths", len(layer_fds), target)
    _legacy_mount(data, target, readonly)


def _legacy_mount(data: str, target: str, readonly: bool) -> None:
    try:
        linux.mount("overlay", target, "overlay", linux.MS_RDONLY if readonly else 0, data)
    except OSError as exc:
        raise _mount_error(exc, target, "") from None


def _mount_error(exc: OSError, target: str, kernel_log: str) -> Exception:
    if exc.errno == errno.ENODEV:
        return Unsupported("this kernel has no overlay filesystem (is the overlay module loaded?)")
    detail = f": {kernel_log}" if kernel_log else " (the kernel log says why)"
    return SystemFailure(f"mounting overlay on {target} failed: "
                         f"{os.strerror(exc.errno or 0)}{detail}")


def _sys(nr: int, *args: object) -> int:
    res = _libc.syscall(nr, *args)
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(res)


def _fsconfig(fsfd: int, cmd: int, key: bytes | None, value: bytes | None, aux: int) -> None:
    _sys(_SYS_FSCONFIG, ctypes.c_int(fsfd), ctypes.c_uint(cmd), key, value, ctypes.c_int(aux))


def _context_log(fsfd: int) -> str:
    """The messages overlayfs queued on the fs context: why a step failed."""
    lines = []
    for _ in range(32):
        try:
            msg = os.read(fsfd, 1024)
        except OSError:  # ENODATA: queue drained
            break
        if not msg:
            break
        lines.append(msg.decode(errors="replace").strip())
    return "; ".join(lines)


def _fsapi_mount(layer_fds: list[int], extra_fds: list[int], target: str, readonly: bool) -> None:
    """fsopen/fsconfig/fsmount/move_mount with every directory given as an fd.

    fsconfig strings are capped at 255 bytes and lowerdir+ strings at a path
    each, whereas descriptors have no length at all and need no escaping.
    Raises _NoFdLayers when the kernel lacks the API or fd-valued layers.
    """
    try:
        fsfd = _sys(_SYS_FSOPEN, b"overlay", ctypes.c_uint(_FSOPEN_CLOEXEC))
    except OSError as exc:
        # EPERM: seccomp filters of container-in-container setups deny new syscalls.
        if exc.errno in (errno.ENOSYS, errno.EPERM):
            raise _NoFdLayers() from None
        raise _mount_error(exc, target, "") from None
    try:
        try:
            _fsconfig(fsfd, _FSCONFIG_SET_STRING, b"source", b"overlay", 0)
            for index, fd in enumerate(layer_fds):
                try:
                    _fsconfig(fsfd, _FSCONFIG_SET_FD, b"lowerdir+", None, fd)
                except OSError as exc:
                    # Before 6.13 the first fd-valued layer is rejected outright.
                    if index == 0 and exc.errno == errno.EINVAL:
                        _context_log(fsfd)
                        raise _NoFdLayers() from None
                    raise
            if extra_fds:
                _fsconfig(fsfd, _FSCONFIG_SET_FD, b"upperdir", None, extra_fds[0])
                _fsconfig(fsfd, _FSCONFIG_SET_FD, b"workdir", None, extra_fds[1])
            for key, value in _OPTIONS:
                _fsconfig(fsfd, _FSCONFIG_SET_STRING, key.encode(), value.encode(), 0)
            _fsconfig(fsfd, _FSCONFIG_CMD_CREATE, None, None, 0)
            mfd = _sys(_SYS_FSMOUNT, ctypes.c_int(fsfd), ctypes.c_uint(_FSMOUNT_CLOEXEC),
                       ctypes.c_uint(_MOUNT_ATTR_RDONLY if readonly else 0))
        except OSError as exc:
            raise _mount_error(exc, target, _context_log(fsfd)) from None
        try:
            _sys(_SYS_MOVE_MOUNT, ctypes.c_int(mfd), b"", ctypes.c_int(_AT_FDCWD),
                 os.fsencode(target), ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH))
        except OSError as exc:
            raise _mount_error(exc, target, "") from None
        finally:
            os.close(mfd)  # the attached mount lives on; the detached one dies here
    finally:
        os.close(fsfd)


def _bind_readonly(source: str, target: str) -> None:
    try:
        linux.mount(source, target, None, linux.MS_BIND)
    except OSError as exc:
        raise SystemFailure(f"bind mounting {source} on {target} failed: "
                            f"{os.strerror(exc.errno or 0)}") from None
    try:
        # A bind mount inherits the source's writability; read-only takes a remount.
        linux.mount(None, target, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY)
    except OSError as exc:
        linux.umount(target, linux.MNT_DETACH)
        raise SystemFailure(f"making the bind mount on {target} read-only failed: "
                            f"{os.strerror(exc.errno or 0)}") from None


# ---------------------------------------------------------------------------
# Unmounting


def _unescape(raw: bytes) -> bytes:
    # mountinfo writes space, tab, newline and backslash as \ooo octal.
    if b"\\" not in raw:
        return raw
    out = bytearray()
    i = 0
    while i < len(raw):
        code = raw[i + 1:i + 4]
        if raw[i] == 0x5C and len(code) == 3 and all(0x30 <= c <= 0x37 for c in code):
            out.append(int(code, 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def _mounted(path: bytes) -> bool:
    with open(_MOUNTINFO, "rb") as f:
        data = f.read()
    for line in data.splitlines():
        fields = line.split(b" ", 5)
        if len(fields) > 4 and _unescape(fields[4]) == path:
            return True
    return False


def is_mounted(target: str) -> bool:
    """Whether something is mounted exactly at ``target`` (symlinks resolved)."""
    return _mounted(os.fsencode(os.path.realpath(target)))


def unmount(target: str, timeout: float = 5.0) -> None:
    """Unmount whatever is mounted at ``target``, until nothing is.

    A busy mount (open files, a cwd inside it) is retried with a growing poll
    interval until ``timeout`` seconds have passed; then it is detached lazily
    (MNT_DETACH) with a warning: the path is free at once, but the filesystem
    and its upper directory stay in use until the last user lets go. Mounts
    stacked on the same path are all removed. Nothing mounted there (or no such
    path) is not an error.
    """
    path = os.path.realpath(target)
    raw = os.fsencode(path)
    deadline = time.monotonic() + timeout
    delay = 0.002
    while _mounted(raw):
        try:
            linux.umount(path, linux.UMOUNT_NOFOLLOW)
            continue
        except OSError as exc:
            err = exc.errno
        if err == errno.EBUSY:
            left = deadline - time.monotonic()
            if left > 0:
                time.sleep(min(delay, left))
                delay = min(delay * 2, 0.1)
                continue
            _log().warning("%s still busy after %.1fs; detaching it lazily, its filesystem "
                           "stays alive until the last open file or process inside is gone",
                           path, timeout)
            try:
                linux.umount(path, linux.MNT_DETACH | linux.UMOUNT_NOFOLLOW)
            except OSError as exc:
                raise SystemFailure(f"detaching {path} failed: {exc.strerror}") from None
        elif err in (errno.EINVAL, errno.ENOENT) and not _mounted(raw):
            break  # someone else unmounted it between our look and our call
        else:
            raise SystemFailure(f"unmounting {path} failed: {os.strerror(err or 0)}")
