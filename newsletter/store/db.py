"""Opening the database (migrations applied every time) and transactions."""

from __future__ import annotations

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


def checkpoint(path: str | Path) -> None:
    """Fold the write-ahead log into the database file, so the file alone is the state."""
    db = Database(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


__all__ = ["checkpoint", "open_db", "transaction", "utcnow"]
