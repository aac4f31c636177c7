"""A content-addressed blob store, modelled on containerd's local content store.

Layout under ROOT::

    blobs/<alg>/<hex>          committed blobs, read-only, named by their digest
    ingest/<sha256(ref)>/      one in-progress write ("ingest"), keyed by a caller ref
        ref                    the ref itself (the directory name is only its hash)
        meta                   expected digest, expected size, start time
        data                   the bytes received so far; its length is the offset
        lock                   flock()ed by the one writer that owns the ingest
    leases/<id>.json           digests and ingest refs a lease keeps from GC
    leases/.lock               serialises read-modify-write of lease files
    gc.lock                    shared by commits and lease updates, exclusive for GC

Why it is built this way:

* Nothing half-written is ever visible under blobs/: bytes go to the ingest's
  data file, which is fsynced, verified and only then renamed into blobs/ (same
  filesystem, so the rename is atomic), and the directory is fsynced so the
  name survives a crash too.
* An ingest survives the writer: a download killed half-way is resumed by
  opening a writer on the same ref, which re-hashes what is there and carries on
  at that offset (containerd does the same; hash state cannot be persisted).
* Locks are flock()s on files, so they exclude other processes as well as other
  threads, and the kernel drops them when a process dies: a SIGKILLed puller
  never leaves a ref locked.
* Garbage collection is mark-and-sweep from caller roots plus leases; commits
  and lease updates hold gc.lock shared, GC holds it exclusive, so a blob that
  is committed under a lease can never be swept between its commit and the lease
  recording it.

Container start reads blobs through this module, so it imports only os, time,
hashlib and fcntl at the top; json (lease files) and logging load lazily, and the
records are plain slotted classes rather than dataclasses (dataclasses alone
costs ~25 ms to import).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time

from dockyard.atomicfile import fsync_dir, write_atomic
from dockyard.errors import Conflict, InvalidArgument, NotFound
from dockyard.image.digest import ALGORITHMS, Digest

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Iterable, Iterator
    from datetime import datetime
    from typing import BinaryIO

__all__ = ["ContentStore", "IngestStatus", "Lease", "Writer"]

_CHUNK = 1 << 20
# Lease ids become file names; keep them to a safe alphabet.
_LEASE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _log() -> logging.Logger:
    # logging pulls in re, string, threading...; only the rare paths pay for it.
    import logging

    return logging.getLogger(__name__)


def _as_digest(d: str) -> Digest:
    return d if isinstance(d, Digest) else Digest(d)


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _lock_ingest(ingest_dir: str, ref: str) -> int:
    """flock() the ingest's lock file, creating the directory; returns the descriptor.

    Raises Conflict at once (no waiting) when another writer, in this process or
    any other, holds it.
    """
    lock_path = os.path.join(ingest_dir, "lock")
    while True:
        os.makedirs(ingest_dir, mode=0o700, exist_ok=True)
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            continue  # an abort removed the directory between makedirs and open
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Conflict(f"ref {ref!r} is locked: another writer is ingesting it") from None
        # The previous owner may have aborted (unlinking the lock file) after we
        # opened it: then we hold a lock nobody else can see. Start over.
        st = os.fstat(fd)
        try:
            cur = os.stat(lock_path)
        except FileNotFoundError:
            cur = None
        if cur is not None and (cur.st_ino, cur.st_dev) == (st.st_ino, st.st_dev):
            return fd
        os.close(fd)


def _remove_ingest_dir(ingest_dir: str) -> None:
    """Delete an ingest whose lock the caller holds.

    The lock file goes last and the caller releases the flock only afterwards,
    so a concurrent opener either fails to lock or notices the unlinked file.
    """
    for name in ("data", "meta", "ref"):
        _unlink_quiet(os.path.join(ingest_dir, name))
    try:
        for name in os.listdir(ingest_dir):
            if name != "lock":  # leftovers of an interrupted atomic write
                _unlink_quiet(os.path.join(ingest_dir, name))
    except FileNotFoundError:
        return
    _unlink_quiet(os.path.join(ingest_dir, "lock"))
    try:
        os.rmdir(ingest_dir)
    except FileNotFoundError:
        pass
    except OSError as exc:
        _log().warning("ingest directory %s not removed: %s", ingest_dir, exc)


class _FileLock:
    """flock() on a file that is never removed; used as a context manager."""

    __slots__ = ("path", "mode", "fd")

    def __init__(self, path: str, mode: int) -> None:
        self.path, self.mode, self.fd = path, mode, -1

    def __enter__(self) -> _FileLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, self.mode)
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # closing the only descriptor releases the flock
        self.fd = -1


class IngestStatus:
    """What an in-progress write has received so far."""

    __slots__ = ("ref", "offset", "total", "expected", "started_at", "updated_at")

    def __init__(self, ref: str, offset: int, total: int | None, expected: Digest | None,
                 started_at: float, updated_at: float) -> None:
        self.ref = ref
        self.offset = offset
        self.total = total
        self.expected = expected
        self.started_at = started_at
        self.updated_at = updated_at

    def __repr__(self) -> str:
        return (f"IngestStatus(ref={self.ref!r}, offset={self.offset}, total={self.total}, "
                f"expected={self.expected!r})")


class Writer:
    """The one writer of an ingest; get it from ContentStore.writer().

    Not thread-safe: one thread writes. close() (also the end of a `with` block)
    keeps the received bytes for a later resume; abort() throws them away.
    """

    def __init__(self, store: ContentStore, ref: str, expected: Digest | None,
                 size: int | None, lease: Lease | None) -> None:
        self._store = store
        self.ref = ref
        self.expected = expected
        self.total = size
        self._lease = lease
        self._dir = store._ingest_dir(ref)
        self._lock_fd = -1
        self._data_fd = -1
        self._closed = True
        self._lock()
        try:
            self._open_ingest()
        except BaseException:
            self._release()
            raise
        self._closed = False

    # -- opening -----------------------------------------------------------

    def _lock(self) -> None:
        self._lock_fd = _lock_ingest(self._dir, self.ref)

    def _open_ingest(self) -> None:
        ref_path = os.path.join(self._dir, "ref")
        data_path = os.path.join(self._dir, "data")
        stored = self._store._read_ingest(self._dir)
        reset = False
        if stored is None:
            reset = True
        else:
            if stored.ref != self.ref:
                # sha256 collision or a tampered directory; refuse rather than mix data.
                raise Conflict(f"ingest directory for ref {self.ref!r} belongs to {stored.ref!r}")
            if ((self.expected is not None and stored.expected not in (None, self.expected))
                    or (self.total is not None and stored.total not in (None, self.total))):
                # The old bytes were meant to become different content: useless here.
                _log().warning("ingest %r restarted: expected %s/%s, found %s/%s", self.ref,
                               self.expected, self.total, stored.expected, stored.total)
                reset = True
            if self.expected is None:
                self.expected = stored.expected
            if self.total is None:
                self.total = stored.total
            if not reset and (self.expected, self.total) != (stored.expected, stored.total):
                self._write_meta(stored.started_at)  # record what this writer added
        if reset:
            _unlink_quiet(data_path)
            write_atomic(ref_path, self.ref.encode(), 0o600)
            self._write_meta(time.time())
        self._data_fd = os.open(data_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        # Re-hash what an earlier writer left, so the offset and digest carry on.
        self._hasher = self.expected.hasher() if self.expected is not None else hashlib.sha256()
        offset = 0
        while True:
            chunk = os.read(self._data_fd, _CHUNK)
            if not chunk:
                break
            self._hasher.update(chunk)
            offset += len(chunk)
        if self.total is not None and offset > self.total:
            _log().warning("ingest %r holds %d bytes, more than the expected %d; restarting",
                           self.ref, offset, self.total)
            os.ftruncate(self._data_fd, 0)
            os.lseek(self._data_fd, 0, os.SEEK_SET)
            self._hasher = self.expected.hasher() if self.expected is not None else hashlib.sha256()
            offset = 0
        self.offset = offset
        if self._lease is not None:
            self._lease.add_ingest(self.ref)

    def _write_meta(self, started: float) -> None:
        lines = [f"started={started!r}"]
        if self.expected is not None:
            lines.append(f"expected={self.expected}")
        if self.total is not None:
            lines.append(f"total={self.total}")
        write_atomic(os.path.join(self._dir, "meta"), ("\n".join(lines) + "\n").encode(), 0o600)

    # -- writing -----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgument(f"writer for ref {self.ref!r} is closed")

    def write(self, data: bytes) -> int:
        self._check_open()
        if self.total is not None and self.offset + len(data) > self.total:
            raise InvalidArgument(
                f"write to ref {self.ref!r} of {len(data)} bytes at offset {self.offset} "
                f"exceeds the expected size {self.total}")
        view = memoryview(data)
        while view:
            n = os.write(self._data_fd, view)
            self._hasher.update(view[:n])
            self.offset += n
            view = view[n:]
        return len(data)

    def digest(self) -> Digest:
        """The digest of the bytes written so far."""
        return Digest.from_hasher(self._hasher.copy())

    def commit(self, size: int | None = None, expected: Digest | None = None) -> Digest:
        """Verify and move the content into the store; returns its digest.

        A wrong size with fewer bytes than expected leaves the ingest open for more
        writes; wrong content (a digest mismatch or too many bytes) can never become
        right, so the ingest is discarded. Either way nothing enters blobs/.
        """
        self._check_open()
        size = self.total if size is None else size
        expected = self.expected if expected is None else _as_digest(expected)
        if expected is not None and expected.algorithm != self._hasher.name:
            raise InvalidArgument(f"commit of ref {self.ref!r}: expected digest {expected} uses "
                                  f"{expected.algorithm}, the writer hashed with {self._hasher.name}")
        if size is not None and self.offset != size:
            msg = (f"commit of ref {self.ref!r} failed: unexpected size {self.offset}, "
                   f"expected {size}")
            if self.offset > size:
                self.abort()
            raise InvalidArgument(msg)
        actual = self.digest()
        if expected is not None and actual != expected:
            self.abort()
            raise InvalidArgument(f"commit of ref {self.ref!r} failed: unexpected digest {actual}, "
                                  f"expected {expected} ({self.offset} bytes)")
        os.fsync(self._data_fd)
        data_path = os.path.join(self._dir, "data")
        store = self._store
        with store._gc_shared():
            if self._lease is not None:
                # Recorded before the blob appears, so no GC can see it unprotected.
                # A lease that expired meanwhile raises NotFound with the ingest intact.
                self._lease._update(add_digests=(actual,), drop_ingests=(self.ref,), locked=True)
            target = store._blob_path(actual)
            alg_dir = os.path.dirname(target)
            if not os.path.isdir(alg_dir):
                os.makedirs(alg_dir, mode=0o755, exist_ok=True)
                fsync_dir(os.path.dirname(alg_dir))
            if os.path.exists(target):
                # Committed already (another ref, or an earlier run): content is equal.
                os.unlink(data_path)
            else:
                # Read-only, as containerd leaves blobs: content must never change in place.
                os.fchmod(self._data_fd, 0o444)
                os.rename(data_path, target)
                fsync_dir(alg_dir)
        self._closed = True
        self._remove_ingest()
        self._release()
        return actual

    # -- ending ------------------------------------------------------------

    def close(self) -> None:
        """Stop writing but keep the bytes: a writer on the same ref resumes them."""
        if self._closed:
            return
        self._closed = True
        self._release()

    def abort(self) -> None:
        """Throw the received bytes away and forget the ref. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._remove_ingest()
        if self._lease is not None:
            try:
                self._lease._update(drop_ingests=(self.ref,))
            except NotFound:
                pass
        self._release()

    def _remove_ingest(self) -> None:
        _remove_ingest_dir(self._dir)

    def _release(self) -> None:
        if self._data_fd >= 0:
            os.close(self._data_fd)
            self._data_fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Raw descriptors are not closed by the garbage collector; a dropped writer
        # must not keep its ref locked for the life of the process.
        try:
            self._release()
        except Exception:
            pass


class Lease:
    """Keeps digests (and ingest refs) from garbage collection until released or expired.

    The state lives in ROOT/leases/<id>.json and is re-read on every change, so
    several processes may add to one lease. As a context manager it is released
    when the block ends, like containerd's operation-scoped leases.
    """

    def __init__(self, store: ContentStore, lease_id: str, created: float,
                 expire: float | None, digests: set[Digest], ingests: set[str]) -> None:
        self._store = store
        self.id = lease_id
        self.created = created
        self.expire = expire
        self._digests = digests
        self._ingests = ingests

    @property
    def digests(self) -> frozenset[Digest]:
        return frozenset(self._digests)

    @property
    def ingests(self) -> frozenset[str]:
        return frozenset(self._ingests)

    def expired(self, now: float | None = None) -> bool:
        return self.expire is not None and (time.time() if now is None else now) >= self.expire

    def add(self, *digests: str) -> None:
        """Protect DIGESTS (present or still to come) from garbage collection."""
        self._update(add_digests=tuple(_as_digest(d) for d in digests))

    def remove(self, *digests: str) -> None:
        self._update(drop_digests=tuple(_as_digest(d) for d in digests))

    def add_ingest(self, ref: str) -> None:
        """Protect an in-progress write from abort_stale()."""
        self._update(add_ingests=(ref,))

    def release(self) -> None:
        """Forget the lease; what it protected is garbage unless something else holds it."""
        store = self._store
        with store._gc_shared(), _FileLock(store._leases_lock_path(), fcntl.LOCK_EX):
            _unlink_quiet(store._lease_path(self.id))

    def _update(self, add_digests: tuple[Digest, ...] = (), drop_digests: tuple[Digest, ...] = (),
                add_ingests: tuple[str, ...] = (), drop_ingests: tuple[str, ...] = (),
                locked: bool = False) -> None:
        store = self._store
        if locked:  # the caller holds gc.lock shared already
            self._update_file(add_digests, drop_digests, add_ingests, drop_ingests)
            return
        with store._gc_shared():
            self._update_file(add_digests, drop_digests, add_ingests, drop_ingests)

    def _update_file(self, add_digests: tuple[Digest, ...], drop_digests: tuple[Digest, ...],
                     add_ingests: tuple[str, ...], drop_ingests: tuple[str, ...]) -> None:
        store = self._store
        with _FileLock(store._leases_lock_path(), fcntl.LOCK_EX):
            current = store._load_lease(self.id)
            if current is None or current.expired():
                raise NotFound(f"lease {self.id!r} no longer exists (released or expired)")
            current._digests.update(add_digests)
            current._digests.difference_update(drop_digests)
            current._ingests.update(add_ingests)
            current._ingests.difference_update(drop_ingests)
            store._save_lease(current)
            self.expire = current.expire
            self._digests = current._digests
            self._ingests = current._ingests

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Lease(id={self.id!r}, expire={self.expire}, digests={len(self._digests)})"


class ContentStore:
    """Blobs under ROOT/blobs/<alg>/<hex>, with resumable ingests, leases and GC."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        os.makedirs(os.path.join(self.root, "blobs"), mode=0o755, exist_ok=True)
        os.makedirs(os.path.join(self.root, "ingest"), mode=0o700, exist_ok=True)
        os.makedirs(os.path.join(self.root, "leases"), mode=0o700, exist_ok=True)

    # -- paths -------------------------------------------------------------

    def _blob_path(self, d: Digest) -> str:
        return os.path.join(self.root, "blobs", d.algorithm, d.hex)

    def _ingest_dir(self, ref: str) -> str:
        return os.path.join(self.root, "ingest", hashlib.sha256(ref.encode()).hexdigest())

    def _lease_path(self, lease_id: str) -> str:
        return os.path.join(self.root, "leases", f"{lease_id}.json")

    def _leases_lock_path(self) -> str:
        return os.path.join(self.root, "leases", ".lock")

    def _gc_shared(self) -> _FileLock:
        return _FileLock(os.path.join(self.root, "gc.lock"), fcntl.LOCK_SH)

    # -- blobs -------------------------------------------------------------

    def writer(self, ref: str, expected: Digest | str | None = None, size: int | None = None,
               *, lease: Lease | None = None) -> Writer:
        """Open (or resume) the ingest REF; Conflict if another writer holds it.

        With LEASE the ingest, and on commit the blob, are recorded in the lease
        atomically with respect to gc().
        """
        if not isinstance(ref, str) or not ref or "\0" in ref:
            raise InvalidArgument(f"invalid ingest ref {ref!r}")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise InvalidArgument(f"invalid expected size {size!r} for ref {ref!r}")
        return Writer(self, ref, None if expected is None else _as_digest(expected), size, lease)

    def put(self, data: bytes, expected: Digest | str | None = None, *,
            lease: Lease | None = None) -> Digest:
        """Store DATA in one go; returns its digest. Storing existing content is a no-op."""
        algorithm = "sha256" if expected is None else _as_digest(expected).algorithm
        actual = Digest.of(data, algorithm)
        if expected is not None and actual != expected:
            raise InvalidArgument(f"content has digest {actual}, expected {expected} "
                                  f"({len(data)} bytes)")
        with self._gc_shared():
            if os.path.exists(self._blob_path(actual)):
                if lease is not None:
                    lease._update(add_digests=(actual,), locked=True)
                return actual
        # A private ref: concurrent puts of the same bytes must not conflict.
        ref = f"put-{actual}-{os.getpid()}-{os.urandom(6).hex()}"
        w = Writer(self, ref, actual, len(data), lease)
        try:
            w.write(data)
            return w.commit()
        except BaseException:
            w.abort()
            raise

    def exists(self, d: Digest | str) -> bool:
        return os.path.exists(self._blob_path(_as_digest(d)))

    def info(self, d: Digest | str) -> tuple[int, float]:
        """(size, mtime) of a blob."""
        d = _as_digest(d)
        try:
            st = os.stat(self._blob_path(d))
        except FileNotFoundError:
            raise NotFound(f"content {d} not found") from None
        return st.st_size, st.st_mtime

    def path(self, d: Digest | str) -> str:
        """The file holding a blob (a str path), for readers that want to open it themselves."""
        d = _as_digest(d)
        p = self._blob_path(d)
        if not os.path.exists(p):
            raise NotFound(f"content {d} not found")
        return p

    def open(self, d: Digest | str) -> BinaryIO:
        d = _as_digest(d)
        try:
            return open(self._blob_path(d), "rb")
        except FileNotFoundError:
            raise NotFound(f"content {d} not found") from None

    def read(self, d: Digest | str, *, verify: bool = False) -> bytes:
        """A blob's bytes; with VERIFY, check them against the digest (catches disk rot)."""
        d = _as_digest(d)
        with self.open(d) as f:
            data = f.read()
        if verify:
            actual = Digest.of(data, d.algorithm)
            if actual != d:
                raise InvalidArgument(f"content {d} is corrupt: its bytes hash to {actual}")
        return data

    def delete(self, d: Digest | str) -> None:
        d = _as_digest(d)
        try:
            os.unlink(self._blob_path(d))
        except FileNotFoundError:
            raise NotFound(f"content {d} not found") from None

    def walk(self) -> Iterator[Digest]:
        """Every committed blob's digest, in a stable order."""
        blobs = os.path.join(self.root, "blobs")
        for algorithm in sorted(ALGORITHMS):
            try:
                names = sorted(os.listdir(os.path.join(blobs, algorithm)))
            except FileNotFoundError:
                continue
            for name in names:
                try:
                    yield Digest(f"{algorithm}:{name}")
                except InvalidArgument:
                    continue  # not ours (a stray file); never counted as content

    # -- ingests -----------------------------------------------------------

    def _read_ingest(self, ingest_dir: str) -> IngestStatus | None:
        try:
            with open(os.path.join(ingest_dir, "ref"), "rb") as f:
                ref = f.read().decode()
            with open(os.path.join(ingest_dir, "meta"), "rb") as f:
                meta = f.read().decode()
        except FileNotFoundError:
            return None
        fields = dict(line.split("=", 1) for line in meta.splitlines() if "=" in line)
        started = float(fields.get("started", "0"))
        try:
            st = os.stat(os.path.join(ingest_dir, "data"))
            offset, updated = st.st_size, st.st_mtime
        except FileNotFoundError:
            offset, updated = 0, started
        expected = Digest(fields["expected"]) if "expected" in fields else None
        total = int(fields["total"]) if "total" in fields else None
        return IngestStatus(ref, offset, total, expected, started, max(started, updated))

    def ingests(self) -> list[IngestStatus]:
        """The in-progress writes (locked by a live writer or left by a dead one)."""
        base = os.path.join(self.root, "ingest")
        out = []
        for name in sorted(os.listdir(base)):
            status = self._read_ingest(os.path.join(base, name))
            if status is not None:
                out.append(status)
        return out

    def abort_stale(self, older_than: float) -> list[str]:
        """Remove ingests untouched for OLDER_THAN seconds, unless a writer holds them
        or a live lease protects them; returns the refs removed."""
        now = time.time()
        protected = set()
        for lease in self.leases():
            if not lease.expired(now):
                protected |= lease._ingests
        base = os.path.join(self.root, "ingest")
        removed = []
        for name in sorted(os.listdir(base)):
            d = os.path.join(base, name)
            status = self._read_ingest(d)
            if status is None:
                # Half-created (crash before ref/meta were written): use the dir's age.
                try:
                    age = now - os.stat(d).st_mtime
                except FileNotFoundError:
                    continue
                if age >= older_than:
                    self._remove_locked(d, None)
                continue
            if status.ref in protected or now - status.updated_at < older_than:
                continue
            if self._remove_locked(d, status.ref):
                removed.append(status.ref)
                _log().info("aborted stale ingest %r (%d bytes)", status.ref, status.offset)
        return removed

    def _remove_locked(self, ingest_dir: str, ref: str | None) -> bool:
        try:
            fd = _lock_ingest(ingest_dir, ref or os.path.basename(ingest_dir))
        except Conflict:
            return False  # a live writer owns it
        try:
            _remove_ingest_dir(ingest_dir)
        finally:
            os.close(fd)
        return True

    # -- leases ------------------------------------------------------------

    def lease(self, lease_id: str, expire: float | datetime | None = None) -> Lease:
        """Create the lease LEASE_ID, or reopen it (an interrupted pull resuming).

        EXPIRE is seconds from now or an aware datetime; without it the lease
        lasts until released. An expired lease protects nothing and GC deletes it.
        """
        if (not isinstance(lease_id, str) or not lease_id or lease_id.startswith(".")
                or not set(lease_id) <= _LEASE_ID_CHARS):
            raise InvalidArgument(f"invalid lease id {lease_id!r}: use letters, digits, '.', '_', '-'")
        now = time.time()
        if expire is None:
            expire_at = None
        elif isinstance(expire, (int, float)):
            expire_at = now + float(expire)
        else:
            expire_at = expire.timestamp()
        with self._gc_shared(), _FileLock(self._leases_lock_path(), fcntl.LOCK_EX):
            lease = self._load_lease(lease_id)
            if lease is None or lease.expired(now):
                lease = Lease(self, lease_id, now, expire_at, set(), set())
            elif expire is not None:
                lease.expire = expire_at
            self._save_lease(lease)
        return lease

    def leases(self) -> list[Lease]:
        out = []
        for name in sorted(os.listdir(os.path.join(self.root, "leases"))):
            if name.endswith(".json") and not name.startswith("."):
                lease = self._load_lease(name[:-5])
                if lease is not None:
                    out.append(lease)
        return out

    def _load_lease(self, lease_id: str) -> Lease | None:
        import json

        try:
            with open(self._lease_path(lease_id), "rb") as f:
                doc = json.loads(f.read())
        except FileNotFoundError:
            return None
        return Lease(self, lease_id, float(doc.get("created", 0)), doc.get("expire"),
                     {Digest(d) for d in doc.get("digests", ())}, set(doc.get("ingests", ())))

    def _save_lease(self, lease: Lease) -> None:
        import json

        doc = {"id": lease.id, "created": lease.created, "expire": lease.expire,
               "digests": sorted(lease._digests), "ingests": sorted(lease._ingests)}
        write_atomic(self._lease_path(lease.id), json.dumps(doc, indent=1).encode(), 0o600)

    # -- garbage collection ------------------------------------------------

    def gc(self, roots: Iterable[Digest | str],
           children: Callable[[Digest], Iterable[Digest | str]]) -> list[Digest]:
        """Delete every blob not reachable from ROOTS or a live lease; returns the deleted.

        CHILDREN(d) lists what blob d references (manifest.blob_children() gives one
        for manifests and indexes); it is called only for blobs present in the
        store. If it raises, GC stops before deleting anything: a blob whose
        references cannot be read must not cost its children. Expired leases are
        removed. CHILDREN must not write to this store (commits wait for GC).
        """
        now = time.time()
        with _FileLock(os.path.join(self.root, "gc.lock"), fcntl.LOCK_EX):
            pending = [_as_digest(d) for d in roots]
            with _FileLock(self._leases_lock_path(), fcntl.LOCK_EX):
                for lease in self.leases():
                    if lease.expired(now):
                        _log().info("lease %r expired; removing it", lease.id)
                        _unlink_quiet(self._lease_path(lease.id))
                    else:
                        pending.extend(lease._digests)
            marked: set[Digest] = set()
            while pending:
                d = pending.pop()
                if d in marked:
                    continue
                marked.add(d)
                if self.exists(d):
                    pending.extend(_as_digest(c) for c in children(d))
            deleted = []
            touched = set()
            for d in list(self.walk()):
                if d in marked:
                    continue
                try:
                    os.unlink(self._blob_path(d))
                except FileNotFoundError:
                    continue
                deleted.append(d)
                touched.add(d.algorithm)
            for algorithm in touched:
                fsync_dir(os.path.join(self.root, "blobs", algorithm))
        if deleted:
            _log().info("content gc removed %d blobs", len(deleted))
        return deleted
