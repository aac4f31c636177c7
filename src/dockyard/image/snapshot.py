"""Snapshots: image layers unpacked once and shared read-only, and the writable
layers of containers stacked on them.

The ideas are containerd's overlayfs snapshotter, simplified. Under ROOT:

* ``snapshots/<id>/fs``: a snapshot's files. For a layer, the unpacked layer
  (an overlayfs lower directory); for a container, its upper directory, with
  ``snapshots/<id>/work`` beside it as overlayfs's work directory.
* ``snapshots.db``: sqlite metadata, one row per snapshot: which layer chain
  (ChainID) or container key it is, and its parent layer chain.
* ``tmp/``: layers being unpacked, ``<chain>.<id>`` each; ``locks/``: one lock
  file per chain; ``trash/``: snapshots being deleted.

A layer is identified by its ChainID, which names the layer *and* everything
under it, so one unpacked directory serves every image that shares the chain.
It is unpacked into ``tmp/``, then renamed into ``snapshots/`` and recorded in
one sqlite transaction, under a per-chain file lock: concurrent preparations
(threads or processes) unpack a chain once, and a crash leaves only a ``tmp/``
directory (or an unrecorded ``snapshots/`` one) that :meth:`Snapshotter.cleanup`
removes. A committed layer's files are never written again; containers only
ever write to their own upper directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from dockyard.errors import Conflict, InvalidArgument, NotFound
from dockyard.image import overlay
from dockyard.image.database import Database
from dockyard.image.digest import Digest
from dockyard.image.manifest import chain_ids  # noqa: F401  (re-exported for callers)

__all__ = ["Snapshotter", "Usage", "chain_ids"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id      TEXT PRIMARY KEY,              -- directory name under snapshots/
    kind    TEXT NOT NULL,                 -- 'layer' or 'container'
    name    TEXT NOT NULL,                 -- ChainID of a layer, key of a container
    parent  TEXT,                          -- ChainID of the layer underneath
    created REAL NOT NULL,
    size    INTEGER,                       -- cached usage of a layer (never changes)
    inodes  INTEGER,
    mounted TEXT,                          -- where a container's snapshot is mounted
    UNIQUE (kind, name)
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots (parent);
"""


@dataclass(frozen=True)
class Usage:
    """Disk use of a snapshot's own files: apparent bytes of its regular files and
    symlinks (hard links counted once), and its number of inodes."""

    size: int
    inodes: int


@dataclass(frozen=True)
class _Row:
    id: str
    kind: str
    name: str
    parent: str | None
    mounted: str | None


def _lockname(chain_id: Digest) -> str:
    return f"{chain_id.algorithm}-{chain_id.hex}"


def _measure(path: str) -> Usage:
    size = inodes = 0
    seen: set[tuple[int, int]] = set()
    stack = [path]
    while stack:
        top = stack.pop()
        with os.scandir(top) as entries:
            for e in entries:
                st = e.stat(follow_symlinks=False)
                if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                inodes += 1
                if stat.S_ISDIR(st.st_mode):
                    stack.append(e.path)
                elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                    size += st.st_size
    return Usage(size=size, inodes=inodes)


class Snapshotter:
    """Layer and container snapshots under directory ROOT (created if missing).

    Safe to use from several threads and processes at once. Call
    :meth:`cleanup` once at start-up to remove what crashed operations left.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self._snapshots = os.path.join(self.root, "snapshots")
        self._tmp = os.path.join(self.root, "tmp")
        self._locks = os.path.join(self.root, "locks")
        self._trash = os.path.join(self.root, "trash")
        # An always-empty lower directory for containers without an image layer
        # (FROM scratch): overlayfs needs at least one lower.
        self._empty = os.path.join(self.root, "empty")
        for d in (self.root, self._snapshots, self._tmp, self._locks, self._trash, self._empty):
            os.makedirs(d, mode=0o700, exist_ok=True)
        os.chmod(self._empty, 0o755)
        self._db = Database(os.path.join(self.root, "snapshots.db"), _SCHEMA, "NORMAL")

    # -- plumbing

    @contextlib.contextmanager
    def _chain_lock(self, chain_id: Digest, blocking: bool = True) -> Iterator[bool]:
        # flock, not fcntl locks: each open file description is its own lock, so
        # threads of one process exclude each other too, and the kernel drops the
        # lock when a process dies.
        fd = os.open(os.path.join(self._locks, _lockname(chain_id)),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    @staticmethod
    def _row(r: tuple | None) -> _Row | None:
        return _Row(*r) if r is not None else None

    def _get(self, db: sqlite3.Connection, kind: str, name: str) -> _Row | None:
        return self._row(db.execute(
            "SELECT id, kind, name, parent, mounted FROM snapshots WHERE kind=? AND name=?",
            (kind, name)).fetchone())

    def _fs(self, sid: str) -> str:
        return os.path.join(self._snapshots, sid, "fs")

    def _discard(self, path: str) -> None:
        """Remove a snapshot directory: renamed into trash/ first, so a crash
        half-way leaves nothing that looks like a snapshot."""
        if not os.path.lexists(path):
            return
        doomed = os.path.join(self._trash, secrets.token_hex(8))
        os.rename(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    # -- layers

    def layer_path(self, chain_id: str) -> str | None:
        """The fs directory of committed layer CHAIN_ID, or None."""
        with self._db.read() as db:
            row = self._get(db, "layer", Digest(chain_id))
        return self._fs(row.id) if row else None

    def prepare_layer(self, chain_id: str, parent_chain: str | None,
                      apply_fn: Callable[[str], object]) -> str:
        """The fs directory of layer CHAIN_ID, unpacking it first if needed.

        When no committed snapshot exists, APPLY_FN is called with a fresh, empty
        directory to unpack the layer into (it should also verify the DiffID and
        raise on a mismatch); when it returns, the directory is committed under
        CHAIN_ID, atomically. If it raises, nothing is committed and the
        directory is removed. PARENT_CHAIN, the ChainID of the layer underneath,
        must be committed already (NotFound otherwise). Concurrent callers for
        the same CHAIN_ID wait for the first one and get its result.
        """
        chain_id = Digest(chain_id)
        parent = Digest(parent_chain) if parent_chain is not None else None
        existing = self.layer_path(chain_id)
        if existing is not None:
            return existing
        with self._chain_lock(chain_id):
            with self._db.read() as db:
                row = self._get(db, "layer", chain_id)
                if row is not None:  # another caller unpacked it while we waited
                    return self._fs(row.id)
                if parent is not None and self._get(db, "layer", parent) is None:
                    raise NotFound(f"parent layer {parent} of {chain_id} is not unpacked")
            sid = secrets.token_hex(16)
            tmp = os.path.join(self._tmp, f"{_lockname(chain_id)}.{sid}")
            final = os.path.join(self._snapshots, sid)
            os.mkdir(tmp, 0o700)
            try:
                fs = os.path.join(tmp, "fs")
                os.mkdir(fs, 0o755)
                os.chmod(fs, 0o755)  # not the umask's idea of it
                started = time.monotonic()
                apply_fn(fs)
                with self._db.write() as db:
                    row = self._get(db, "layer", chain_id)
                    if row is not None:
                        # Only if the chain lock did not exclude the other process
                        # (a filesystem where flock is not shared, such as some NFS):
                        # theirs wins, ours goes, and the state stays consistent.
                        shutil.rmtree(tmp, ignore_errors=True)
                        return self._fs(row.id)
                    # Checked again: the parent may have been removed meanwhile.
                    if parent is not None and self._get(db, "layer", parent) is None:
                        raise NotFound(f"parent layer {parent} of {chain_id} was removed "
                                       "while this layer was unpacked")
                    os.rename(tmp, final)
                    db.execute("INSERT INTO snapshots (id, kind, name, parent, created) "
                               "VALUES (?, 'layer', ?, ?, ?)", (sid, chain_id, parent, time.time()))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                if os.path.lexists(final) and self.layer_path(chain_id) != self._fs(sid):
                    self._discard(final)
                raise
            log.info("unpacked layer %s in %.0f ms", chain_id.short,
                     (time.monotonic() - started) * 1000)
            return self._fs(sid)

    def lowers(self, chain_id: str) -> list[str]:
        """The fs directories of layer CHAIN_ID and all layers under it, bottom first."""
        out: list[str] = []
        name: str | None = Digest(chain_id)
        with self._db.read() as db:
            while name is not None:
                row = self._get(db, "layer", name)
                if row is None:
                    raise NotFound(f"layer {name} is not unpacked")
                out.append(self._fs(row.id))
                name = row.parent
        out.reverse()
        return out

    def remove_layer(self, chain_id: str) -> None:
        """Delete layer CHAIN_ID; Conflict while a layer or container is on top of it."""
        chain_id = Digest(chain_id)
        with self._db.write() as db:
            row = self._get(db, "layer", chain_id)
            if row is None:
                raise NotFound(f"layer {chain_id} is not unpacked")
            users = db.execute("SELECT kind, name FROM snapshots WHERE parent=? ORDER BY kind, name",
                               (chain_id,)).fetchall()
            if users:
                kind, name = users[0]
                more = f" and {len(users) - 1} more" if len(users) > 1 else ""
                raise Conflict(f"layer {chain_id} is in use by {kind} {name}{more}")
            db.execute("DELETE FROM snapshots WHERE id=?", (row.id,))
            doomed = os.path.join(self._trash, row.id)
            os.rename(os.path.join(self._snapshots, row.id), doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    # -- containers

    def prepare_container(self, key: str, parent_chain: str | None) -> tuple[list[str], str, str]:
        """Create the writable snapshot KEY on top of layer PARENT_CHAIN (None: an
        empty root). Returns (lowers bottom first, upper directory, work directory)."""
        if not key or "\0" in key:
            raise InvalidArgument(f"invalid snapshot key {key!r}")
        parent = Digest(parent_chain) if parent_chain is not None else None
        sid = secrets.token_hex(16)
        base = os.path.join(self._snapshots, sid)
        with self._db.write() as db:
            if self._get(db, "container", key) is not None:
                raise Conflict(f"snapshot {key} already exists")
            if parent is not None and self._get(db, "layer", parent) is None:
                raise NotFound(f"layer {parent} is not unpacked")
            os.mkdir(base, 0o700)
            try:
                os.mkdir(os.path.join(base, "fs"), 0o755)
                os.chmod(os.path.join(base, "fs"), 0o755)
                os.mkdir(os.path.join(base, "work"), 0o700)
                db.execute("INSERT INTO snapshots (id, kind, name, parent, created) "
                           "VALUES (?, 'container', ?, ?, ?)", (sid, key, parent, time.time()))
            except BaseException:
                shutil.rmtree(base, ignore_errors=True)
                raise
        lowers = self.lowers(parent) if parent is not None else []
        return lowers, os.path.join(base, "fs"), os.path.join(base, "work")

    def _container(self, db: sqlite3.Connection, key: str) -> _Row:
        row = self._get(db, "container", key)
        if row is None:
            raise NotFound(f"no snapshot {key}")
        return row

    def container_dirs(self, key: str) -> tuple[list[str], str, str]:
        """(lowers bottom first, upper, work) of container snapshot KEY."""
        with self._db.read() as db:
            row = self._container(db, key)
        lowers = self.lowers(row.parent) if row.parent is not None else []
        base = os.path.join(self._snapshots, row.id)
        return lowers, os.path.join(base, "fs"), os.path.join(base, "work")

    def mount_container(self, key: str, target: str) -> None:
        """Mount container snapshot KEY (its layers under its upper) at TARGET."""
        lowers, upper, work = self.container_dirs(key)
        target = os.path.abspath(target)
        overlay.mount_overlay(lowers or [self._empty], target, upper=upper, work=work)
        try:
            with self._db.write() as db:
                db.execute("UPDATE snapshots SET mounted=? WHERE kind='container' AND name=?",
                           (target, key))
        except BaseException:
            overlay.unmount(target)
            raise

    def unmount_container(self, key: str, target: str | None = None) -> None:
        """Unmount container snapshot KEY from TARGET (default: where it was mounted)."""
        with self._db.read() as db:
            row = self._container(db, key)
        where = target or row.mounted
        if where:
            overlay.unmount(where)
        with self._db.write() as db:
            db.execute("UPDATE snapshots SET mounted=NULL WHERE kind='container' AND name=?",
                       (key,))

    def remove(self, key: str) -> None:
        """Delete container snapshot KEY and its files; Conflict while mounted."""
        with self._db.write() as db:
            row = self._container(db, key)
            if row.mounted and overlay.is_mounted(row.mounted):
                raise Conflict(f"snapshot {key} is mounted at {row.mounted}; unmount it first")
            db.execute("DELETE FROM snapshots WHERE id=?", (row.id,))
            doomed = os.path.join(self._trash, row.id)
            os.rename(os.path.join(self._snapshots, row.id), doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    # -- both

    def usage(self, name: str) -> Usage:
        """Disk use of layer NAME (a ChainID) or container snapshot NAME.

        A layer's is computed once and cached (its files never change), a
        container's on every call."""
        with self._db.read() as db:
            row = None
            if name.startswith(("sha256:", "sha512:")):
                r = db.execute("SELECT id, size, inodes FROM snapshots "
                               "WHERE kind='layer' AND name=?", (name,)).fetchone()
                if r is not None:
                    if r[1] is not None:
                        return Usage(size=r[1], inodes=r[2])
                    row = r
            if row is None:
                c = self._container(db, name)
                return _measure(self._fs(c.id))
        used = _measure(self._fs(row[0]))
        with self._db.write() as db:
            db.execute("UPDATE snapshots SET size=?, inodes=? WHERE id=?",
                       (used.size, used.inodes, row[0]))
        return used

    def cleanup(self) -> None:
        """Remove what crashed or interrupted operations left: unpacks whose
        process died, snapshot directories with no record, half-deleted ones.
        Safe while other processes work: an unpack in progress holds its chain's
        lock and is left alone."""
        for name in os.listdir(self._tmp):
            lockname, _, _ = name.partition(".")
            algorithm, _, hexpart = lockname.partition("-")
            path = os.path.join(self._tmp, name)
            try:
                chain = Digest(f"{algorithm}:{hexpart}")
            except InvalidArgument:
                shutil.rmtree(path, ignore_errors=True)
                continue
            with self._chain_lock(chain, blocking=False) as locked:
                if locked:
                    log.info("removing interrupted unpack %s", name)
                    shutil.rmtree(path, ignore_errors=True)
        with self._db.write() as db:
            known = {r[0] for r in db.execute("SELECT id FROM snapshots")}
            for sid in os.listdir(self._snapshots):
                if sid not in known:
                    log.info("removing unrecorded snapshot directory %s", sid)
                    os.rename(os.path.join(self._snapshots, sid), os.path.join(self._trash, sid))
        for name in os.listdir(self._trash):
            try:
                shutil.rmtree(os.path.join(self._trash, name))
            except FileNotFoundError:
                pass  # another process is deleting it
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    log.warning("cannot remove %s: %s", name, exc.strerror)

    def snapshots(self) -> list[tuple[str, str, str | None]]:
        """(kind, name, parent ChainID) of every snapshot."""
        with self._db.read() as db:
            return [tuple(r) for r in db.execute(
                "SELECT kind, name, parent FROM snapshots ORDER BY kind, name")]
