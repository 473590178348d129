"""Opening the database (migrations applied every time) and transactions."""

from __future__ import annotations

import queue
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlite_utils import Database

from newsletter.store.migrations import migrations


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat(timespec="seconds") if dt else None


def open_db(path: str | Path) -> Database:
    """Open (creating if needed) the database and apply pending migrations."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = Database(path)
        db.execute("PRAGMA journal_mode=WAL")
    else:
        db = Database(memory=True)
    db.execute("PRAGMA foreign_keys=ON")
    migrations.apply(db)
    return db


@contextmanager
def transaction(db: Database) -> Iterator[None]:
    """One real transaction for the block (a savepoint when nested): sqlite-utils' own
    insert/update calls inside it do not commit on their own."""
    with db.atomic():
        yield


class Pool:
    """A fixed set of connections to one database, shared by the threads of a server:
    opened (and migrated) once, then lent out one at a time. ``with pool.connection() as
    db:`` waits up to ``timeout`` seconds for a free one."""

    def __init__(self, path: str | Path, size: int = 4, timeout: float = 10.0) -> None:
        open_db(path).close()  # create and migrate once, not per request
        self.timeout = timeout
        self._free: queue.Queue[Database] = queue.Queue()
        for _ in range(size):
            conn = sqlite3.connect(str(path), check_same_thread=False, timeout=timeout)
            db = Database(conn)
            db.execute("PRAGMA foreign_keys=ON")
            db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            self._free.put(db)
        self.size = size

    @contextmanager
    def connection(self) -> Iterator[Database]:
        db = self._free.get(timeout=self.timeout)
        try:
            yield db
        finally:
            self._free.put(db)

    def close(self) -> None:
        while not self._free.empty():
            self._free.get_nowait().close()


def checkpoint(path: str | Path) -> None:
    """Fold the write-ahead log into the database file, so the file alone is the state."""
    db = Database(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


__all__ = ["Pool", "checkpoint", "open_db", "transaction", "utcnow"]
