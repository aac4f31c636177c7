"""Image layers: unpack a layer tarball into a snapshot directory, and export the
changes of a container's overlay upper directory as a layer tarball.

A layer is a tar stream, optionally gzip- or zstd-compressed, whose entries are
the files the layer adds or changes; deletions are *whiteouts* (``.wh.<name>``
deletes ``<name>`` from the layers below, ``.wh..wh..opq`` hides everything the
layers below have in that directory). Its DiffID is the sha256 of the
uncompressed stream.

:func:`apply` unpacks a layer into a directory. By default the result is an
overlayfs layer directory: whiteouts become overlayfs whiteouts (0/0 character
devices) and opaque directories get ``trusted.overlay.opaque=y``, so stacking the
directory over its parents' reproduces the image. With ``whiteouts="delete"`` the
whiteouts remove files instead, for unpacking onto a plain copy of the parents.

Layer archives come from registries, i.e. from anyone; :func:`apply` treats
them as hostile. Nothing is ever created, changed or deleted outside the
destination: paths are split into components and ``..`` is refused, every
directory is opened relative to its parent with ``O_NOFOLLOW`` (a symlink can
never be walked through, wherever it points), files are created with
``O_EXCL|O_NOFOLLOW`` after removing whatever was there (never opened for
writing in place), and hard links may only point at entries this archive has
already extracted. Malformed archives raise :class:`InvalidArgument` naming the
entry (or the offset, when no entry name could be read).

:func:`diff` is the reverse: it writes the overlay upper directory of a
container as a layer tarball (``docker commit``, ``docker export`` of changes),
and :func:`changes` lists what changed for ``docker diff``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import shutil
import queue
import stat
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Literal, NamedTuple

from dockyard.errors import InvalidArgument, NotFound, SystemFailure, Unsupported
from dockyard.image.digest import Digest

__all__ = ["ApplyResult", "Change", "OPAQUE_XATTR", "apply", "changes", "detect_compression",
           "diff", "open_decompressed", "write_tree"]

log = logging.getLogger(__name__)

Compression = Literal["gzip", "zstd", "none"]

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
# Compressed bytes per read, and the most decompressed bytes produced per step.
# The second bounds memory whatever the compression ratio (a "zip bomb" only
# costs time), and is large enough that per-chunk overhead is negligible.
_READ_CHUNK = 1 << 18
_OUT_CHUNK = 1 << 20
# Chunks queued between the decompressing thread and the unpacking one: enough to
# ride out a burst of small files, little enough to bound memory (times _OUT_CHUNK).
_PIPELINE_DEPTH = 8
# PAX and GNU long-name payloads are read into memory; Go's archive/tar (and so
# Docker) caps them at the same size.
_MAX_META = 1 << 20
_MAX_PATH = 4096
# Directory descriptors kept open while unpacking; tars list a directory's entries
# together, so a small cache saves nearly every walk from the root.
_MAX_OPEN_DIRS = 512

WHITEOUT_PREFIX = b".wh."
WHITEOUT_META_PREFIX = b".wh..wh."
OPAQUE_MARKER = b".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
# overlayfs keeps its own bookkeeping in these (opaque, redirect, origin, metacopy,
# impure...). Coming from an archive they could steer the overlay mount, and in an
# upper directory they are no part of the layer's content, so both directions drop them.
_OVERLAY_XATTRS = b"trusted.overlay."
# Labels of the host's security policy, not of the image.
_HOST_XATTRS = (b"security.selinux",)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# Tar type flags.
_REG, _AREG, _CONTIG = b"0", b"\0", b"7"
_LINK, _SYMLINK, _CHR, _BLK, _DIR, _FIFO = b"1", b"2", b"3", b"4", b"5", b"6"
_PAX, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK, _GNU_SPARSE = b"x", b"g", b"L", b"K", b"S"
_REGULAR_TYPES = (_REG, _AREG, _CONTIG)

# Errors that say the host is in trouble, not the archive.
_HOST_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOMEM,
                          errno.EMFILE, errno.ENFILE))


# ---------------------------------------------------------------------------
# Compression


def detect_compression(head: bytes) -> str:
    """The compression of a stream starting with ``head``, from its magic bytes.

    Returns "gzip", "zstd" or "none"; also "bzip2" and "xz", which Docker accepts
    for ``docker import`` but which no registry serves as a layer format and
    :func:`open_decompressed` refuses.
    """
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    # A zstd stream may start with a skippable frame (magic 0x184D2A5?).
    if len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == b"\x2a\x4d\x18":
        return "zstd"
    if head[:3] == b"BZh":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    return "none"


class _StreamError(Exception):
    """The compressed stream is corrupt or truncated; the caller adds context."""


class _Prepend:
    """A readable stream: the already-read ``head``, then the rest of ``f``."""

    def __init__(self, head: bytes, f: BinaryIO) -> None:
        self._head = head
        self._f = f

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n < 0 or n >= len(self._head):
                data, self._head = self._head, b""
                return data
            data, self._head = self._head[:n], self._head[n:]
            return data
        return self._f.read(n)


def _raw_chunks(f: BinaryIO, head: bytes) -> Iterator[bytes]:
    if head:
        yield head
    while True:
        data = f.read(_OUT_CHUNK)
        if not data:
            return
        yield data


try:
    # python-isal (Intel's ISA-L) inflates about 1.7x faster than zlib, and gzip
    # decoding is most of an unpack's time; same API, so it is used when installed.
    from isal import isal_zlib as _inflate
    _INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error, _inflate.error)
except ImportError:
    _inflate = zlib  # type: ignore[no-redef]
    _INFLATE_ERRORS = (zlib.error,)


def _gunzip_chunks(f: BinaryIO, head: bytes) -> Iterator[bytes]:
    # In-process rather than a `gzip -dc` child: as fast on one core (the unpack
    # overlaps with it anyway, see _pipelined) and no process to manage.
    d = _inflate.decompressobj(zlib.MAX_WBITS | 16)
    pending = head
    while True:
        data = pending or f.read(_READ_CHUNK)
        pending = b""
        if not data:
            break
        while data:
            if d.eof:
                # Another gzip member (pigz, concatenated streams) or trailing junk,
                # which the next decompressor's header check reports.
                d = _inflate.decompressobj(zlib.MAX_WBITS | 16)
            try:
                out = d.decompress(data, _OUT_CHUNK)
            except _INFLATE_ERRORS as exc:
                raise _StreamError(f"gzip data is corrupt ({exc})") from None
            if out:
                yield out
            data = d.unused_data if d.eof else d.unconsumed_tail
    if not d.eof:
        try:
            out = d.flush()
        except _INFLATE_ERRORS as exc:
            raise _StreamError(f"gzip data is corrupt ({exc})") from None
        if out:
            yield out
        raise _StreamError("gzip stream is truncated")


def _unzstd_chunks(f: BinaryIO, head: bytes) -> Iterator[bytes]:
    import zstandard  # only zstd layers pay for loading it

    # stream_reader bounds each read's output (decompressobj cannot), which keeps a
    # bomb from filling memory. It does not notice a stream cut at a frame boundary;
    # the tar reader then sees the archive end early, or the DiffID check catches it.
    reader = zstandard.ZstdDecompressor().stream_reader(
        _Prepend(head, f), read_size=_READ_CHUNK, read_across_frames=True)
    try:
        while True:
            out = reader.read(_OUT_CHUNK)
            if not out:
                return
            yield out
    except zstandard.ZstdError as exc:
        raise _StreamError(f"zstd data is corrupt ({exc})") from None


def _decompressed_chunks(f: BinaryIO, compression: str | None) -> Iterator[bytes]:
    head = b""
    if compression is None:
        head = f.read(_READ_CHUNK)
        compression = detect_compression(head)
    if compression == "gzip":
        return _gunzip_chunks(f, head)
    if compression == "zstd":
        return _unzstd_chunks(f, head)
    if compression == "none":
        return _raw_chunks(f, head)
    if compression in ("bzip2", "xz"):
        raise Unsupported(f"{compression}-compressed layers are not supported (only gzip and zstd)")
    raise InvalidArgument(f"unknown layer compression {compression!r}")


class _ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = memoryview(next(self._chunks))
            except StopIteration:
                return 0
            except _StreamError as exc:
                raise InvalidArgument(str(exc)) from None
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def open_decompressed(fileobj: BinaryIO, compression: str | None = None) -> io.BufferedReader:
    """A streaming reader of ``fileobj``'s decompressed bytes.

    ``compression`` is detected from the magic bytes when None. Corrupt or
    truncated compressed data raises :class:`InvalidArgument` when read.
    """
    return io.BufferedReader(_ChunkReader(_decompressed_chunks(fileobj, compression)),
                             buffer_size=_OUT_CHUNK)


_END = object()


def _pipelined(chunks: Iterator[bytes], hasher: hashlib._Hash | None) -> Iterator[bytes]:
    """CHUNKS, produced (read, decompressed, hashed) by a helper thread.

    zlib, zstd, sha256 and file reads all release the GIL, so on two cores
    decompression overlaps with creating the files: measured on the busybox layer
    this takes apply from about the time of `tar -xzf` to well under it.
    """
    q: queue.Queue[object] = queue.Queue(maxsize=_PIPELINE_DEPTH)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)

    worker = threading.Thread(target=produce, name="layer-decompress", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            if hasher is not None:
                # Here rather than in the helper: decompressing is the longer half.
                hasher.update(item)  # type: ignore[arg-type]
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()


class _Stream:
    """The uncompressed tar bytes, counted as they go past."""

    __slots__ = ("_chunks", "_buf", "_pos", "total", "consumed")

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""
        self._pos = 0
        self.total = 0      # bytes produced by the decompressor so far
        self.consumed = 0   # bytes handed to the tar reader so far

    def _more(self) -> bool:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            return False
        self.total += len(chunk)
        rest = self._buf[self._pos:]
        self._buf = rest + chunk if rest else chunk
        self._pos = 0
        return True

    def read(self, n: int) -> bytes:
        """N bytes, fewer only at the end of the stream."""
        while len(self._buf) - self._pos < n:
            if not self._more():
                break
        data = self._buf[self._pos:self._pos + n]
        self._pos += len(data)
        self.consumed += len(data)
        return data

    def skip(self, n: int) -> int:
        done = 0
        while done < n:
            if self._pos >= len(self._buf) and not self._more():
                break
            k = min(n - done, len(self._buf) - self._pos)
            self._pos += k
            done += k
        self.consumed += done
        return done

    def copy_to(self, fd: int, n: int) -> int:
        """Write the next N bytes to FD; returns how many there were."""
        done = 0
        while done < n:
            if self._pos >= len(self._buf) and not self._more():
                break
            k = min(n - done, len(self._buf) - self._pos)
            view = memoryview(self._buf)[self._pos:self._pos + k]
            while view:
                view = view[os.write(fd, view):]
            self._pos += k
            done += k
        self.consumed += done
        return done

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()  # stops the decompressing thread when unpacking failed half-way

    def drain(self) -> None:
        """Read to the end: the DiffID covers whatever follows the end-of-archive marker."""
        self.consumed += len(self._buf) - self._pos
        self._buf, self._pos = b"", 0
        while self._more():
            self.consumed += len(self._buf)
            self._buf = b""


# ---------------------------------------------------------------------------
# Tar headers


class _HeaderError(Exception):
    pass


@dataclass(slots=True)
class _Entry:
    name: bytes
    type: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    atime_ns: int
    linkname: bytes
    devmajor: int
    devminor: int
    xattrs: dict[bytes, bytes] = field(default_factory=dict)


def _cstr(data: bytes) -> bytes:
    return data.split(b"\0", 1)[0]


_OCTAL = frozenset(b"01234567")


def _number(data: bytes, what: str) -> int:
    if data and data[0] & 0x80:
        # GNU base-256 for values octal cannot hold; 0xff starts a negative one.
        if data[0] == 0xFF:
            return int.from_bytes(data, "big", signed=True)
        return int.from_bytes(bytes((data[0] & 0x7F,)) + data[1:], "big")
    text = data.strip(b" \0")
    if not text:
        return 0
    if not _OCTAL.issuperset(text):
        raise _HeaderError(f"its {what} field {data!r} is not an octal number")
    return int(text, 8)


def _parse_block(block: bytes) -> _Entry:
    stored = _number(block[148:156], "checksum")
    unsigned = sum(block[:148]) + 256 + sum(block[156:])
    if stored != unsigned:
        # Some old tars summed signed chars.
        signed = sum(b - 256 if b > 127 else b for b in block[:148] + block[156:]) + 256
        if stored != signed:
            raise _HeaderError("its checksum does not match (not a tar archive, or corrupt)")
    name = _cstr(block[0:100])
    if block[257:263] == b"ustar\0":  # POSIX ustar; GNU's "ustar " uses the prefix area otherwise
        prefix = _cstr(block[345:500])
        if prefix:
            name = prefix + b"/" + name
    mtime = _number(block[136:148], "mtime")
    size = _number(block[124:136], "size")
    uid, gid = _number(block[108:116], "uid"), _number(block[116:124], "gid")
    if size < 0 or uid < 0 or gid < 0:
        raise _HeaderError("it has a negative size, uid or gid")
    return _Entry(
        name=name, type=block[156:157], mode=_number(block[100:108], "mode") & 0o7777,
        uid=uid, gid=gid, size=size, mtime_ns=mtime * 1_000_000_000,
        atime_ns=mtime * 1_000_000_000, linkname=_cstr(block[157:257]),
        devmajor=_number(block[329:337], "devmajor"), devminor=_number(block[337:345], "devminor"))


def _parse_pax(data: bytes) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # NUL padding some writers leave
            break
        space = data.find(b" ", pos)
        length_text = data[pos:space]
        if space < 0 or not length_text.isdigit():
            raise _HeaderError("its PAX extended header is malformed")
        length = int(length_text)
        record = data[space + 1:pos + length]
        if length <= space - pos or pos + length > len(data) or not record.endswith(b"\n"):
            raise _HeaderError("its PAX extended header is malformed")
        key, eq, value = record[:-1].partition(b"=")
        if not eq:
            raise _HeaderError("its PAX extended header is malformed")
        records[key] = value
        pos += length
    return records


def _pax_time_ns(value: bytes) -> int:
    text = value.decode("ascii", "replace")
    negative = text.startswith("-")
    seconds, _, fraction = text.lstrip("-").partition(".")
    if not (seconds or fraction) or (seconds and not seconds.isdigit()) \
            or (fraction and not fraction.isdigit()):
        raise _HeaderError(f"its PAX time {value!r} is not a number")
    ns = int(seconds or 0) * 1_000_000_000 + int((fraction + "000000000")[:9])
    return -ns if negative else ns


def _pax_int(value: bytes, key: bytes) -> int:
    if not value.isdigit():
        raise _HeaderError(f"its PAX {key.decode()} {value!r} is not a number")
    return int(value)


def _apply_pax(entry: _Entry, pax: dict[bytes, bytes]) -> None:
    for key, value in pax.items():
        if key == b"path":
            entry.name = value
        elif key == b"linkpath":
            entry.linkname = value
        elif key == b"size":
            entry.size = _pax_int(value, key)
        elif key == b"uid":
            entry.uid = _pax_int(value, key)
        elif key == b"gid":
            entry.gid = _pax_int(value, key)
        elif key == b"mtime":
            entry.mtime_ns = _pax_time_ns(value)
            if b"atime" not in pax:
                entry.atime_ns = entry.mtime_ns
        elif key == b"atime":
            entry.atime_ns = _pax_time_ns(value)
        elif key.startswith(b"SCHILY.xattr."):
            entry.xattrs[key[13:]] = value
        elif key.startswith(b"LIBARCHIVE.xattr."):
            import base64
            import urllib.parse

            name = urllib.parse.unquote_to_bytes(key[17:])
            try:
                entry.xattrs[name] = base64.b64decode(value + b"=" * (-len(value) % 4))
            except ValueError:
                raise _HeaderError(f"its xattr {name!r} is not base64") from None
        elif key.startswith(b"GNU.sparse."):
            raise _Sparse()


class _Sparse(Exception):
    pass


def _show(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


# ---------------------------------------------------------------------------
# Lower layers, as overlayfs merges them


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: bytes | int) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _lower_stat(lowers_top_first: list[bytes], rel: tuple[bytes, ...]) -> os.stat_result | None:
    """lstat of REL in the merged view of layer directories (top first), or None."""
    if not rel:
        return os.lstat(lowers_top_first[0]) if lowers_top_first else None
    for top in lowers_top_first:
        path = top
        opaque = False
        for i, name in enumerate(rel):
            path = path + b"/" + name
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                break  # not in this layer; lower ones may have it
            if _is_whiteout(st):
                return None
            if i == len(rel) - 1:
                return st
            if not stat.S_ISDIR(st.st_mode):
                return None  # a file here hides whatever lower layers have below it
            if _is_opaque(path):
                opaque = True
        if opaque:
            return None
    return None


def _lower_names(lowers_top_first: list[bytes], rel: tuple[bytes, ...]) -> list[bytes]:
    """Names visible in directory REL of the merged layers."""
    candidates: set[bytes] = set()
    for top in lowers_top_first:
        try:
            candidates.update(os.listdir(b"/".join((top, *rel))))
        except OSError:
            pass
    return sorted(n for n in candidates if _lower_stat(lowers_top_first, rel + (n,)) is not None)


# ---------------------------------------------------------------------------
# Unpacking


@dataclass(frozen=True)
class ApplyResult:
    """What :func:`apply` read: the DiffID (None when hashing was off), the
    uncompressed size of the stream, and the bytes of file content written."""

    diff_id: Digest | None
    size: int
    content_size: int = 0


class _Extractor:
    def __init__(self, dest: str, *, overlay: bool, allow_devices: bool,
                 lowers: list[str] | None) -> None:
        try:
            self.root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"layer destination {dest} does not exist") from None
        self.dest = dest
        self.overlay = overlay
        self.allow_devices = allow_devices
        self.lowers = [os.fsencode(p) for p in reversed(lowers or [])]
        self.dirs: dict[tuple[bytes, ...], int] = {}
        # Paths this archive created: hard links may only point at these, and
        # whiteouts and opaque markers never remove them (the spec: a whiteout hides
        # lower layers only).
        self.seen: set[tuple[bytes, ...]] = set()
        # Directory times are set last: creating entries inside changes them.
        self.dir_times: dict[tuple[bytes, ...], tuple[int, int]] = {}
        self.name = b""
        self.content_size = 0

    def close(self) -> None:
        self._drop_dirs()
        os.close(self.root)

    # -- errors

    def _bad(self, reason: str) -> InvalidArgument:
        return InvalidArgument(f"layer entry {_show(self.name)!r}: {reason}")

    def _oserror(self, exc: OSError) -> Exception:
        what = f"layer entry {_show(self.name)!r}: {os.strerror(exc.errno or 0)}"
        if exc.errno in _HOST_ERRNOS:
            return SystemFailure(f"unpacking into {self.dest} failed: {what}")
        return InvalidArgument(what)

    # -- directory walking

    def _drop_dirs(self, under: tuple[bytes, ...] | None = None) -> None:
        for key in list(self.dirs):
            if under is None or key[:len(under)] == under:
                os.close(self.dirs.pop(key))

    def _dir(self, parts: tuple[bytes, ...], create: bool = True) -> int | None:
        """Descriptor of directory PARTS under the root, walked without following
        symlinks; missing directories are created when CREATE, else None."""
        if not parts:
            return self.root
        fd = self.dirs.get(parts)
        if fd is not None:
            return fd
        parent = self._dir(parts[:-1], create)
        if parent is None:
            return None
        name = parts[-1]
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                return None
            self._implicit_dir(parent, parts)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            if not create:
                return None
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise self._bad(f"its parent {_show(b'/'.join(parts))!r} is {kind}; "
                            "entries are never written through one") from None
        self.dirs[parts] = fd
        return fd

    def _implicit_dir(self, parent: int, parts: tuple[bytes, ...]) -> None:
        # A parent the archive does not list: like the parent layers' directory
        # when they have one (so the merged view keeps its owner and mode), else
        # root-owned 0755 as Docker makes them.
        name = parts[-1]
        os.mkdir(name, 0o700, dir_fd=parent)
        lower = _lower_stat(self.lowers, parts) if self.lowers else None
        if lower is not None and stat.S_ISDIR(lower.st_mode):
            os.chown(name, lower.st_uid, lower.st_gid, dir_fd=parent, follow_symlinks=False)
            os.chmod(name, stat.S_IMODE(lower.st_mode), dir_fd=parent)
            self.dir_times[parts] = (lower.st_atime_ns, lower.st_mtime_ns)
        else:
            os.chmod(name, 0o755, dir_fd=parent)
        self.seen.add(parts)

    def _remove(self, parent: int, parts: tuple[bytes, ...], st: os.stat_result) -> None:
        name = parts[-1]
        if stat.S_ISDIR(st.st_mode):
            self._drop_dirs(parts)
            shutil.rmtree(name, dir_fd=parent)  # fd-based; never follows symlinks
        else:
            os.unlink(name, dir_fd=parent)

    def _create(self, parent: int, parts: tuple[bytes, ...], make: Callable[[], object],
                keep_dir: bool = False) -> tuple[object, os.stat_result | None]:
        """Run MAKE; if the name exists, remove it first (tar semantics: a later entry
        replaces an earlier one), except a directory where a directory is wanted.
        Returns MAKE's result and the stat of what was replaced."""
        try:
            return make(), None
        except FileExistsError:
            pass
        st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        if keep_dir and stat.S_ISDIR(st.st_mode):
            return None, st
        self._remove(parent, parts, st)
        return make(), st

    def _split(self, raw: bytes, what: str = "name") -> tuple[bytes, ...]:
        if b"\0" in raw:
            raise self._bad(f"its {what} contains a NUL byte")
        if len(raw) > _MAX_PATH:
            raise self._bad(f"its {what} is longer than {_MAX_PATH} bytes")
        # Leading "/" goes (Docker does the same): absolute names are relative to the
        # layer root. ".." is refused outright rather than resolved; no tar writer
        # emits it and a lexical resolution would be one more thing to get right.
        parts = tuple(p for p in raw.split(b"/") if p and p != b".")
        if b".." in parts:
            raise self._bad(f"its {what} {_show(raw)!r} contains '..'")
        return parts

    # -- metadata

    def _set_xattrs(self, target: int | str, xattrs: dict[bytes, bytes]) -> None:
        for key, value in xattrs.items():
            if key.startswith(_OVERLAY_XATTRS):
                log.debug("layer entry %r: dropping overlayfs xattr %s", _show(self.name),
                          _show(key))
                continue
            try:
                if isinstance(target, int):
                    os.setxattr(target, key, value)
                else:
                    os.setxattr(target, key, value, follow_symlinks=False)
            except OSError as exc:
                # Docker's "best effort" for xattrs the host cannot store (EOPNOTSUPP,
                # e.g. security.selinux without SELinux) or does not allow (EPERM,
                # user.* on a symlink).
                if exc.errno not in (errno.EOPNOTSUPP, errno.EPERM, errno.EINVAL):
                    raise
                log.warning("layer entry %r: cannot set xattr %s: %s", _show(self.name),
                            _show(key), exc.strerror)

    def _path_in(self, parent: int, name: bytes) -> str:
        # The entry named through our directory descriptor: for the xattr calls that
        # take no dir_fd. Resolves inside the directory we already hold.
        return f"/proc/self/fd/{parent}/{os.fsdecode(name)}"

    def _meta_at(self, parent: int, name: bytes, e: _Entry, chmod: bool = True) -> None:
        os.chown(name, e.uid, e.gid, dir_fd=parent, follow_symlinks=False)
        if chmod:
            # After chown, which clears setuid/setgid bits. The node was created just
            # now (never a symlink), so a libc without AT_SYMLINK_NOFOLLOW support
            # for fchmodat may as well follow.
            try:
                os.chmod(name, e.mode, dir_fd=parent, follow_symlinks=False)
            except (NotImplementedError, OSError) as exc:
                if isinstance(exc, OSError) and exc.errno != errno.EOPNOTSUPP:
                    raise
                os.chmod(name, e.mode, dir_fd=parent)
        if e.xattrs:
            self._set_xattrs(self._path_in(parent, name), e.xattrs)
        os.utime(name, ns=(e.atime_ns, e.mtime_ns), dir_fd=parent, follow_symlinks=False)

    # -- entries

    def entry(self, e: _Entry, src: _Stream) -> int:
        """Create entry E; returns how many of its data bytes it consumed."""
        parts = self._split(e.name)
        if parts and parts[-1].startswith(WHITEOUT_PREFIX):
            self._whiteout(parts, e)
            return 0
        if not parts:
            if e.type != _DIR:
                raise self._bad("only a directory can stand for the layer root")
            self._dir_meta(self.root, (), e)
            return 0
        parent = self._dir(parts[:-1])
        assert parent is not None
        name = parts[-1]
        used = 0
        t = e.type
        if t in _REGULAR_TYPES:
            used = self._file(parent, parts, e, src)
        elif t == _DIR:
            _, replaced = self._create(parent, parts, lambda: os.mkdir(name, 0o700, dir_fd=parent),
                                       keep_dir=True)
            fd = self._dir(parts)
            assert fd is not None
            self._dir_meta(fd, parts, e)
            if self.overlay and replaced is not None and _is_whiteout(replaced):
                # The archive deleted the lower directory and made a new one: without
                # the opaque mark overlayfs would merge the old contents back in.
                os.setxattr(fd, OPAQUE_XATTR, b"y")
        elif t == _SYMLINK:
            if not e.linkname or b"\0" in e.linkname:
                raise self._bad("its symlink target is empty or contains a NUL byte")
            # The target is stored as is: it is only ever resolved inside the
            # container's root, and this code never follows symlinks.
            self._create(parent, parts, lambda: os.symlink(e.linkname, name, dir_fd=parent))
            self._meta_at(parent, name, e, chmod=False)
        elif t == _LINK:
            self._hardlink(parent, parts, e)
        elif t in (_CHR, _BLK, _FIFO):
            if t != _FIFO and not self.allow_devices:
                raise self._bad("device nodes are not allowed here")
            kind = {_CHR: stat.S_IFCHR, _BLK: stat.S_IFBLK, _FIFO: stat.S_IFIFO}[t]
            dev = os.makedev(e.devmajor, e.devminor) if t != _FIFO else 0
            self._create(parent, parts, lambda: os.mknod(name, kind | 0o600, dev, dir_fd=parent))
            self._meta_at(parent, name, e)
        elif t == _GNU_SPARSE:
            raise Unsupported(f"layer entry {_show(self.name)!r}: GNU sparse files are not supported")
        else:
            raise self._bad(f"unsupported tar entry type {t!r}")
        self.seen.add(parts)
        return used

    def _file(self, parent: int, parts: tuple[bytes, ...], e: _Entry, src: _Stream) -> int:
        name = parts[-1]
        fd, _ = self._create(parent, parts, lambda: os.open(name, _NEW_FILE_FLAGS, 0o600,
                                                            dir_fd=parent))
        assert isinstance(fd, int)
        try:
            if e.size:
                if src.copy_to(fd, e.size) < e.size:
                    raise self._bad("the archive ends inside its data (truncated)")
                self.content_size += e.size
            # Order matters: chown clears setuid/setgid and file capabilities, and
            # writing clears capabilities too; times last.
            os.fchown(fd, e.uid, e.gid)
            os.fchmod(fd, e.mode)
            if e.xattrs:
                self._set_xattrs(fd, e.xattrs)
            os.utime(fd, ns=(e.atime_ns, e.mtime_ns))
        finally:
            os.close(fd)
        return e.size

    def _dir_meta(self, fd: int, parts: tuple[bytes, ...], e: _Entry) -> None:
        os.fchown(fd, e.uid, e.gid)
        os.fchmod(fd, e.mode)
        if e.xattrs:
            self._set_xattrs(fd, e.xattrs)
        self.dir_times[parts] = (e.atime_ns, e.mtime_ns)

    def _hardlink(self, parent: int, parts: tuple[bytes, ...], e: _Entry) -> None:
        target = self._split(e.linkname, "link target")
        if not target or target not in self.seen:
            raise self._bad(f"hard link to {_show(e.linkname)!r}, which the archive "
                            "has not created before it")
        if target == parts:
            return  # a link to itself: the file is already there
        tparent = self._dir(target[:-1])
        assert tparent is not None
        name = parts[-1]
        # follow_symlinks=False links a symlink itself, never what it points to.
        self._create(parent, parts, lambda: os.link(target[-1], name, src_dir_fd=tparent,
                                                    dst_dir_fd=parent, follow_symlinks=False))

    def _whiteout(self, parts: tuple[bytes, ...], e: _Entry) -> None:
        base, dirparts = parts[-1], parts[:-1]
        if base == OPAQUE_MARKER:
            self._opaque(dirparts)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            log.debug("layer entry %r: skipping AUFS metadata", _show(self.name))
            return
        hidden = base[len(WHITEOUT_PREFIX):]
        if hidden in (b"", b".", b".."):
            raise self._bad("whiteout that names no file")
        target = dirparts + (hidden,)
        if target in self.seen:
            log.debug("layer entry %r: ignoring the whiteout of a path the layer itself "
                      "creates", _show(self.name))
            return
        parent = self._dir(dirparts)
        assert parent is not None
        try:
            st = os.stat(hidden, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and not (self.overlay and _is_whiteout(st)):
            self._remove(parent, target, st)
        if self.overlay and (st is None or not _is_whiteout(st)):
            os.mknod(hidden, stat.S_IFCHR, 0, dir_fd=parent)
            os.chown(hidden, e.uid, e.gid, dir_fd=parent, follow_symlinks=False)

    def _opaque(self, parts: tuple[bytes, ...]) -> None:
        fd = self._dir(parts)
        assert fd is not None
        self.seen.add(parts)
        if self.overlay:
            os.setxattr(fd, OPAQUE_XATTR, b"y")
        else:
            self._wipe(fd, parts)

    def _wipe(self, fd: int, parts: tuple[bytes, ...]) -> None:
        """Remove what directory PARTS holds that this archive did not create."""
        for entry in os.listdir(fd):
            name = os.fsencode(entry)
            child = parts + (name,)
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if child not in self.seen:
                self._remove(fd, child, st)
            elif stat.S_ISDIR(st.st_mode):
                sub = self._dir(child, create=False)
                if sub is not None:
                    self._wipe(sub, child)

    def finish(self) -> None:
        # Deepest first, so setting a child's times cannot disturb its parent's.
        for parts in sorted(self.dir_times, key=len, reverse=True):
            fd = self._dir(parts, create=False)
            if fd is not None:  # a later entry may have removed or replaced it
                atime, mtime = self.dir_times[parts]
                os.utime(fd, ns=(atime, mtime))

    # -- the archive

    def run(self, src: _Stream) -> None:
        pax: dict[bytes, bytes] = {}
        long_name: bytes | None = None
        long_link: bytes | None = None
        while True:
            offset = src.consumed
            block = src.read(BLOCK)
            if len(block) < BLOCK:
                if block or pax or long_name is not None or long_link is not None:
                    raise InvalidArgument(f"layer archive is truncated at offset {offset}")
                # Go's archive/tar, hence Docker, accepts a stream that ends at an
                # entry boundary without the end marker; so do we. A stream cut at
                # such a boundary is caught by the DiffID check.
                log.warning("layer archive has no end-of-archive marker")
                return
            if block == _ZERO_BLOCK:
                return
            raw_name = _cstr(block[:100])
            self.name = long_name if long_name is not None else raw_name
            try:
                e = _parse_block(block)
                if e.type in (_PAX, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK):
                    if e.size > _MAX_META:
                        raise _HeaderError(f"its extended header of {e.size} bytes is too large")
                    data = src.read(e.size)
                    if len(data) < e.size or src.skip(-e.size % BLOCK) < -e.size % BLOCK:
                        raise InvalidArgument(f"layer archive is truncated at offset {offset}")
                    if e.type == _PAX:
                        pax.update(_parse_pax(data))
                    elif e.type == _GNU_LONGNAME:
                        long_name = data.rstrip(b"\0")
                    elif e.type == _GNU_LONGLINK:
                        long_link = data.rstrip(b"\0")
                    # A global PAX header: Docker ignores them, and so do we.
                    continue
                if long_name is not None:
                    e.name = long_name
                if long_link is not None:
                    e.linkname = long_link
                _apply_pax(e, pax)
            except _HeaderError as exc:
                raise InvalidArgument(f"layer archive has a bad header at offset {offset} "
                                      f"(entry {_show(self.name)!r}): {exc}") from None
            except _Sparse:
                raise Unsupported(f"layer entry {_show(self.name)!r}: GNU sparse files are "
                                  "not supported") from None
            pax, long_name, long_link = {}, None, None
            self.name = e.name
            if e.type == _AREG and e.name.endswith(b"/"):
                e.type = _DIR  # pre-POSIX tars mark directories by the trailing slash
            if len(self.dirs) > _MAX_OPEN_DIRS:
                self._drop_dirs()
            try:
                used = self.entry(e, src)
            except OSError as exc:
                raise self._oserror(exc) from None
            except _StreamError as exc:
                raise self._bad(str(exc)) from None
            except (ValueError, OverflowError) as exc:
                # ids, times or device numbers out of the kernel's range
                raise self._bad(f"a value is out of range ({exc})") from None
            # Only regular files carry data; Go's reader treats every other type as
            # header-only whatever its size field says, and so must we to stay in step.
            rest = (e.size - used) if e.type in _REGULAR_TYPES else 0
            pad = -e.size % BLOCK if e.type in _REGULAR_TYPES else 0
            try:
                if src.skip(rest + pad) < rest + pad:
                    raise self._bad("the archive ends inside its data (truncated)")
            except _StreamError as exc:
                raise self._bad(str(exc)) from None


def apply(stream: BinaryIO, dest: str, *, compression: str | None = None, hasher: bool = True,
          allow_devices: bool = True, whiteouts: Literal["overlay", "delete"] = "overlay",
          lowers: list[str] | None = None) -> ApplyResult:
    """Unpack the layer tar STREAM into directory DEST; returns its DiffID and size.

    ``compression`` is "gzip", "zstd" or "none", detected from the magic bytes when
    None. The stream is read in chunks and never held whole in memory; the DiffID
    (sha256 of the uncompressed stream, including anything after the end-of-archive
    marker) is computed on the way unless ``hasher`` is False.

    ``whiteouts="overlay"`` (the default) writes DEST as an overlayfs layer
    directory: whiteouts become 0/0 character devices and opaque directories get
    ``trusted.overlay.opaque=y``. ``whiteouts="delete"`` instead removes the
    whited-out paths from DEST, for unpacking onto a copy of the parent layers.
    ``lowers`` (bottom first), when given, are the parent layers of an overlay
    DEST: directories the archive does not list but needs are made like theirs.

    Ownership, modes (setuid/setgid/sticky included), times, xattrs, hard links,
    symlinks, fifos and (with ``allow_devices``) device nodes are reproduced as
    the archive says; the caller must be root. A hostile archive raises
    :class:`InvalidArgument` naming the entry and never touches anything outside
    DEST (see the module docstring); DEST is then left partly written, and
    callers unpack into a temporary directory they discard on error.
    """
    if whiteouts not in ("overlay", "delete"):
        raise InvalidArgument(f"whiteouts must be 'overlay' or 'delete', not {whiteouts!r}")
    hash_ = hashlib.sha256() if hasher else None
    chunks = _decompressed_chunks(stream, compression)
    src = _Stream(_pipelined(chunks, hash_))
    x = _Extractor(dest, overlay=whiteouts == "overlay", allow_devices=allow_devices,
                   lowers=lowers)
    try:
        try:
            x.run(src)
            x.finish()
            src.drain()
        except _StreamError as exc:
            raise InvalidArgument(f"layer archive: {exc}") from None
        except OSError as exc:
            raise x._oserror(exc) from None
    finally:
        x.close()
        src.close()
    digest = Digest.from_hasher(hash_) if hash_ is not None else None
    return ApplyResult(diff_id=digest, size=src.total, content_size=x.content_size)


# ---------------------------------------------------------------------------
# Writing layers


def _octal(value: int, width: int) -> bytes:
    text = b"%0*o" % (width - 1, value)
    if len(text) < width:
        return text + b"\0"
    # Too large for octal (device numbers): GNU base-256, which Go and GNU tar read.
    return bytes((0x80,)) + value.to_bytes(width - 1, "big")


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(b"%d" % n) + len(body) != n:  # the length counts its own digits
        n = len(b"%d" % n) + len(body)
    return b"%d" % n + body


_MAX_OCTAL_8 = 0o7777777
_MAX_OCTAL_12 = 0o77777777777


class TarWriter:
    """A tar stream in Docker's style: ustar headers, PAX records only for what
    ustar cannot hold (long or non-ASCII names, big numbers, xattrs), numeric
    ids only (uname/gname empty), mtimes in whole seconds."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.buf = bytearray()

    def raw(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes to the stream as they are (a member's data, padding)."""
        self.buf += data
        if len(self.buf) >= _OUT_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.hash.update(self.buf)
            self.out.write(self.buf)
            self.buf = bytearray()

    def header(self, name: bytes, typeflag: bytes, *, mode: int = 0, uid: int = 0, gid: int = 0,
               size: int = 0, mtime: int = 0, linkname: bytes = b"", devmajor: int = 0,
               devminor: int = 0, xattrs: dict[bytes, bytes] | None = None) -> None:
        pax: list[tuple[bytes, bytes]] = []
        if len(name) > 100 or not name.isascii():
            pax.append((b"path", name))
        if len(linkname) > 100 or not linkname.isascii():
            pax.append((b"linkpath", linkname))
        if size > _MAX_OCTAL_12:
            pax.append((b"size", b"%d" % size))
        if uid > _MAX_OCTAL_8:
            pax.append((b"uid", b"%d" % uid))
        if gid > _MAX_OCTAL_8:
            pax.append((b"gid", b"%d" % gid))
        if mtime < 0 or mtime > _MAX_OCTAL_12:
            pax.append((b"mtime", b"%d" % mtime))
        for key in sorted(xattrs or ()):
            assert xattrs is not None
            pax.append((b"SCHILY.xattr." + key, xattrs[key]))
        if pax:
            data = b"".join(_pax_record(k, v) for k, v in pax)
            dirname, _, base = name.rstrip(b"/").rpartition(b"/")
            pax_name = (dirname + b"/" if dirname else b"") + b"PaxHeaders.0/" + base
            self._block(pax_name[:100], _PAX, 0, 0, 0, len(data), 0, b"", 0, 0)
            self.raw(data)
            self.raw(bytes(-len(data) % BLOCK))
        # Fields that did not fit are zero here; their PAX records rule.
        self._block(name[:100], typeflag, mode, uid if uid <= _MAX_OCTAL_8 else 0,
                    gid if gid <= _MAX_OCTAL_8 else 0, size if size <= _MAX_OCTAL_12 else 0,
                    mtime if 0 <= mtime <= _MAX_OCTAL_12 else 0, linkname[:100], devmajor, devminor)

    def _block(self, name: bytes, typeflag: bytes, mode: int, uid: int, gid: int, size: int,
               mtime: int, linkname: bytes, devmajor: int, devminor: int) -> None:
        b = bytearray(BLOCK)
        b[0:len(name)] = name
        b[100:108] = _octal(mode, 8)
        b[108:116] = _octal(uid, 8)
        b[116:124] = _octal(gid, 8)
        b[124:136] = _octal(size, 12)
        b[136:148] = _octal(mtime, 12)
        b[148:156] = b" " * 8
        b[156:157] = typeflag
        b[157:157 + len(linkname)] = linkname
        b[257:265] = b"ustar\x0000"
        b[329:337] = _octal(devmajor, 8)
        b[337:345] = _octal(devminor, 8)
        b[148:156] = b"%06o\0 " % sum(b)
        self.raw(b)

    def data_from(self, fd: int, size: int, what: str) -> None:
        left = size
        while left:
            chunk = os.read(fd, min(left, _OUT_CHUNK))
            if not chunk:
                raise SystemFailure(f"{what} shrank while it was being exported")
            self.raw(chunk)
            left -= len(chunk)
        self.raw(bytes(-size % BLOCK))

    def close(self) -> Digest:
        self.raw(bytes(2 * BLOCK))
        self.flush()
        return Digest.from_hasher(self.hash)


def _xattrs_of(path: bytes) -> dict[bytes, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for name in names:
        key = os.fsencode(name)
        if key.startswith(_OVERLAY_XATTRS) or key in _HOST_XATTRS:
            continue
        try:
            out[key] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
    return out


def _listing(rel: tuple[bytes, ...], path: bytes) -> list[tuple[tuple[bytes, ...], bytes]]:
    return [(rel + (name,), path + b"/" + name) for name in sorted(os.listdir(path))]


def _walk(top: bytes) -> Iterator[tuple[tuple[bytes, ...], bytes, os.stat_result]]:
    """(relative parts, path, lstat) of everything under TOP: sorted by name, each
    directory right before its contents, symlinks not followed. Iterative, so any
    depth works."""
    stack = [iter(_listing((), top))]
    while stack:
        try:
            rel, path = next(stack[-1])
        except StopIteration:
            stack.pop()
            continue
        st = os.lstat(path)
        yield rel, path, st
        if stat.S_ISDIR(st.st_mode):
            stack.append(iter(_listing(rel, path)))


def _capability(path: bytes) -> dict[bytes, bytes]:
    try:
        return {b"security.capability": os.getxattr(path, "security.capability",
                                                     follow_symlinks=False)}
    except OSError:
        return {}


def _tree_entry(w: TarWriter, name: bytes, path: bytes, st: os.stat_result,
                links: dict[tuple[int, int], bytes]) -> None:
    mode = st.st_mode
    common = dict(mode=stat.S_IMODE(mode), uid=st.st_uid, gid=st.st_gid,
                  mtime=int(st.st_mtime), xattrs=_capability(path))
    if stat.S_ISDIR(mode):
        w.header(name + b"/", _DIR, **common)
    elif stat.S_ISREG(mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            w.header(name, _LINK, linkname=links[key], **common)
            return
        if st.st_nlink > 1:
            links[key] = name
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            w.header(name, _REG, size=st.st_size, **common)
            w.data_from(fd, st.st_size, os.fsdecode(path))
        finally:
            os.close(fd)
    elif stat.S_ISLNK(mode):
        w.header(name, _SYMLINK, linkname=os.readlink(path), **common)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        w.header(name, _CHR if stat.S_ISCHR(mode) else _BLK, devmajor=os.major(st.st_rdev),
                 devminor=os.minor(st.st_rdev), **common)
    elif stat.S_ISFIFO(mode):
        w.header(name, _FIFO, **common)
    # sockets: not representable in tar; Docker skips them as well


def write_tree(w: TarWriter, path: str | bytes, name: str | bytes | None = None) -> None:
    """The tree at PATH as tar entries, as `docker export` and `docker cp` write them:
    sorted by name, each directory right before its contents, symlinks not followed,
    numeric owners, hard links kept, sockets skipped, only the security.capability
    xattr carried (the only one Docker exports). With NAME, PATH itself comes first,
    named NAME (NAME/ for a directory), and what is under it is named NAME/...;
    without, only what is under PATH is written, named relative to it.

    Each entry is flushed to W's stream once written, so a reader of a large copy
    sees it arrive entry by entry, and entries written before a failure reach it."""
    top = os.fsencode(path)
    links: dict[tuple[int, int], bytes] = {}
    prefix = b""
    if name is not None:
        base = os.fsencode(name).rstrip(b"/")
        st = os.lstat(top)
        _tree_entry(w, base, top, st, links)
        w.flush()
        if not stat.S_ISDIR(st.st_mode):
            return
        prefix = base + b"/"
    for rel, full, st in _walk(top):
        _tree_entry(w, prefix + b"/".join(rel), full, st, links)
        w.flush()


def diff(lowers: list[str], upper: str, out: BinaryIO) -> Digest:
    """Write the changes in overlay upper directory UPPER as an uncompressed layer
    tar to OUT; returns its DiffID.

    Everything in UPPER is written (files the container added or changed, and
    the directories overlayfs copied up to hold them), overlayfs whiteouts as
    ``.wh.<name>`` entries and opaque directories followed by ``.wh..wh..opq``,
    in sorted order so the same upper always gives the same bytes. ``lowers``
    (bottom first) are the layers under UPPER; whiteouts that hide nothing in
    them are left out. Sockets are skipped (Docker does the same); overlayfs and
    SELinux xattrs are not exported. The container should be stopped: a file
    that changes size meanwhile fails the export.
    """
    lowers_top = [os.fsencode(p) for p in reversed(lowers)]
    w = TarWriter(out)
    top = os.fsencode(upper)
    if _is_opaque(top):
        st = os.lstat(top)
        w.header(OPAQUE_MARKER, _REG, mode=stat.S_IMODE(st.st_mode) & 0o777, uid=st.st_uid,
                 gid=st.st_gid, mtime=int(st.st_mtime))
    links: dict[tuple[int, int], bytes] = {}
    for rel, path, st in _walk(top):
        name = b"/".join(rel)
        mode = st.st_mode
        common = dict(mode=stat.S_IMODE(mode), uid=st.st_uid, gid=st.st_gid,
                      mtime=st.st_mtime_ns // 1_000_000_000)
        if _is_whiteout(st):
            if lowers_top and _lower_stat(lowers_top, rel) is None:
                continue  # hides nothing
            wo = b"/".join(rel[:-1] + (WHITEOUT_PREFIX + rel[-1],))
            w.header(wo, _REG, **{**common, "mode": common["mode"] & 0o777})
        elif stat.S_ISDIR(mode):
            w.header(name + b"/", _DIR, xattrs=_xattrs_of(path), **common)
            if _is_opaque(path):
                w.header(name + b"/" + OPAQUE_MARKER, _REG, **{**common, "mode": common["mode"] & 0o777})
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                w.header(name, _LINK, linkname=links[key], **common)
                continue
            if st.st_nlink > 1:
                links[key] = name
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                w.header(name, _REG, size=st.st_size, xattrs=_xattrs_of(path), **common)
                w.data_from(fd, st.st_size, os.fsdecode(path))
            finally:
                os.close(fd)
        elif stat.S_ISLNK(mode):
            w.header(name, _SYMLINK, linkname=os.readlink(path), xattrs=_xattrs_of(path), **common)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            w.header(name, _CHR if stat.S_ISCHR(mode) else _BLK, devmajor=os.major(st.st_rdev),
                     devminor=os.minor(st.st_rdev), xattrs=_xattrs_of(path), **common)
        elif stat.S_ISFIFO(mode):
            w.header(name, _FIFO, xattrs=_xattrs_of(path), **common)
        else:
            log.debug("not exporting socket %s", os.fsdecode(path))
    return w.close()


class Change(NamedTuple):
    """One line of ``docker diff``: kind "A" (added), "C" (changed) or "D" (deleted)."""

    kind: str
    path: str


def _same_dir(a: os.stat_result, b: os.stat_result) -> bool:
    # A directory overlayfs copied up only to hold a changed child keeps the
    # lower one's metadata; adding or removing entries changes its mtime.
    return (a.st_mode == b.st_mode and a.st_uid == b.st_uid and a.st_gid == b.st_gid
            and a.st_mtime_ns == b.st_mtime_ns)


def changes(lowers: list[str], upper: str) -> list[Change]:
    """What a container changed, from its overlay upper directory and the layers
    under it (bottom first), sorted by path, as ``docker diff`` shows it.

    A file in UPPER is "C" when the layers have that path and "A" otherwise; a
    whiteout is "D"; a copied-up directory is reported only when its own
    metadata differs (or it is opaque); the entries an opaque directory hides
    are "D" each.
    """
    lowers_top = [os.fsencode(p) for p in reversed(lowers)]
    out: list[Change] = []

    def show(rel: tuple[bytes, ...]) -> str:
        return "/" + os.fsdecode(b"/".join(rel))

    for rel, path, st in _walk(os.fsencode(upper)):
        lower = _lower_stat(lowers_top, rel)
        if _is_whiteout(st):
            if lower is not None:
                out.append(Change("D", show(rel)))
            continue
        if stat.S_ISDIR(st.st_mode):
            opaque = _is_opaque(path)
            if lower is None:
                out.append(Change("A", show(rel)))
            elif opaque or not stat.S_ISDIR(lower.st_mode) or not _same_dir(st, lower):
                out.append(Change("C", show(rel)))
            if opaque and lower is not None and stat.S_ISDIR(lower.st_mode):
                present = set(os.listdir(path))
                for name in _lower_names(lowers_top, rel):
                    if name not in present:
                        out.append(Change("D", show(rel + (name,))))
            continue
        out.append(Change("A" if lower is None else "C", show(rel)))
    out.sort(key=lambda c: c.path)
    return out
