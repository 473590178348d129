"""Opening the database (migrations applied every time) and transactions."""

from __future__ import annotations

import os
import queue
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlite_utils import Database

from newsletter.errors import NewsletterError
from newsletter.store.migrations import migrations


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat(timespec="seconds") if dt else None


class DatabaseProblem(NewsletterError):
    """The database cannot be used as it is (damaged, read-only, locked, missing)."""


def describe_problem(path: str | Path, e: BaseException) -> str:
    """One line for a person: what is wrong with the database at ``path`` and what to do."""
    text = str(e).lower()
    where = f"the database {path}"
    if Path(path).is_dir():
        return f"{where} is a folder, not a file - set NEWSLETTER_DB to a file path"
    if "readonly" in text or "read-only" in text or isinstance(e, PermissionError) \
            or "permission" in text:
        return (f"{where} is read-only (or its folder is) - make both writable by this "
                "user, or set NEWSLETTER_DB to a writable path")
    if "locked" in text or "busy" in text:
        return f"{where} is locked by another program - try again when it has finished"
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (f"{where} is damaged or not a newsletter database ({e}) - restore it "
                "from a backup (e.g. \"newsletter state pull\") or move it aside")
    if "unable to open" in text or isinstance(e, FileNotFoundError | NotADirectoryError):
        return (f"cannot open {where} - check that its folder exists and is writable "
                "(NEWSLETTER_DB)")
    if "disk" in text and "full" in text:
        return f"the disk holding {where} is full - free some space and run again"
    return f"{where} cannot be used ({e}) - check the file (NEWSLETTER_DB)"


def _check_writable(path: Path) -> None:
    """Refuse a read-only database (or folder: SQLite writes its log beside the file)
    before any work starts, rather than at the first write. Only asks (access(2)): opening
    and closing the file here would drop SQLite's own locks on it in this process."""
    for target in (path, path.parent):
        if target.exists() and not os.access(target, os.W_OK):
            raise PermissionError(13, "read-only", str(target))


def database_message(path: str | Path, e: BaseException) -> str | None:
    """The one-line message for a database error met in the middle of a command (a write
    to a read-only file, a lock held too long), or None when ``e`` is not one."""
    return describe_problem(path, e) if isinstance(e, sqlite3.Error) else None


def open_db(path: str | Path) -> Database:
    """Open (creating if needed) the database and apply pending migrations; a damaged,
    read-only, locked or unreachable file raises :class:`DatabaseProblem`."""
    if str(path) == ":memory:":
        db = Database(memory=True)
        db.execute("PRAGMA foreign_keys=ON")
        migrations.apply(db)
        return db
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if Path(path).is_dir():
            raise IsADirectoryError(str(path))
        _check_writable(Path(path))
        db = Database(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
        migrations.apply(db)
    except (sqlite3.Error, OSError) as e:
        raise DatabaseProblem(describe_problem(path, e)) from e
    return db


def db_path(db: Database) -> str:
    """The file behind an open database (another thread opens its own connection to it)."""
    path: str = db.execute("pragma database_list").fetchone()[2]
    return path


@contextmanager
def transaction(db: Database) -> Iterator[None]:
    """One real transaction for the block (a savepoint when nested): sqlite-utils' own
    insert/update calls inside it do not commit on their own.

    BEGIN IMMEDIATE takes the write lock first: a block that reads before it writes (as
    sqlite-utils' inserts do) could otherwise fail at once with "database is locked" when
    another connection (a run's sending threads) commits in between, without waiting."""
    if db.conn.in_transaction:
        with db.atomic():
            yield
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.conn.rollback()
        raise
    db.conn.execute("COMMIT")


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


__all__ = ["DatabaseProblem", "Pool", "checkpoint", "database_message", "db_path",
           "describe_problem", "open_db", "transaction", "utcnow"]
