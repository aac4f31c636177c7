"""The SQLite databases of the image side (image records, snapshots): one way to open
them and to run read and write transactions."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator


class Database:
    """A SQLite file in WAL mode (readers go on while one process commits), opened per
    operation: connections do not cross threads, and opening one is cheap next to the
    work done under it. SYNCHRONOUS is NORMAL or FULL (FULL: a commit the caller saw
    survives a power cut too)."""

    def __init__(self, path: str, schema: str, synchronous: str = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous
        with contextlib.closing(self.connect()) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(schema)

    def connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        return db

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        db = self.connect()
        try:
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction under BEGIN IMMEDIATE: the database-wide write lock, so a
        lookup and the change it leads to see one consistent state, and the work done
        inside (such as directory renames) is serialised with other writers."""
        db = self.connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()
