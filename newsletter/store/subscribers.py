"""Subscribers and their filters, their status, and erasing them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlite_utils import Database

from newsletter.errors import SubscriberExists
from newsletter.models import STATUSES, Subscriber
from newsletter.store.db import iso, transaction, utcnow
from newsletter.store.events import insert_event
from newsletter.store.rows import subscriber_row
from newsletter.store.tombstones import insert_tombstone

FILTER_KINDS = ("author", "topic", "category", "exclude", "like")
_FILTER_FIELD = {"author": "authors", "topic": "topics", "category": "categories",
                 "exclude": "exclude", "like": "likes"}
_SCALARS = ("name", "language", "timezone", "send_hour", "frequency", "weekday", "max_papers",
            "ranking", "like_cap")


def _to_subscriber(row: dict[str, Any], filters: dict[str, list[str]]) -> Subscriber:
    confirmed = row.get("confirmed_at")
    return Subscriber(
        email=row["email"],
        name=row["name"] or "",
        language=row["language"],
        timezone=row["timezone"],
        send_hour=row["send_hour"],
        frequency=row["frequency"],
        max_papers=row["max_papers"],
        status=row["status"],
        authors=tuple(filters.get("author", ())),
        topics=tuple(filters.get("topic", ())),
        categories=tuple(filters.get("category", ())),
        exclude=tuple(filters.get("exclude", ())),
        likes=tuple(filters.get("like", ())),
        ranking=row.get("ranking") or "auto",
        like_cap=row.get("like_cap", 3),
        weekday=row.get("weekday") or None,
        confirmed_at=datetime.fromisoformat(confirmed) if confirmed else None,
        link_generation=int(row.get("link_generation") or 0),
    )


def _load(db: Database, where: str = "", args: Sequence[Any] = ()) -> list[Subscriber]:
    """Subscribers matching ``where`` (over ``s``) with their filters, in two queries."""
    clause = f" where {where}" if where else ""
    rows = [dict(r) for r in db.query(f"select s.* from subscribers s{clause}"
                                      " order by s.email", list(args))]
    filters: dict[int, dict[str, list[str]]] = {r["id"]: {} for r in rows}
    if rows:
        for f in db.query(f"select f.subscriber_id, f.kind, f.value from filters f join"
                          f" subscribers s on s.id = f.subscriber_id{clause} order by f.id",
                          list(args)):
            if f["subscriber_id"] in filters:
                filters[f["subscriber_id"]].setdefault(f["kind"], []).append(f["value"])
    return [_to_subscriber(r, filters[r["id"]]) for r in rows]


def _insert(conn: sqlite3.Connection, sub: Subscriber, now: str | None) -> int:
    if conn.execute("select 1 from subscribers where lower(email) = lower(?)",
                    (sub.email,)).fetchone():
        raise SubscriberExists(
            f"subscriber {sub.email} already exists - use \"newsletter subscribers edit\" "
            "to change it"
        )
    cursor = conn.execute(
        "insert into subscribers (email, name, language, timezone, send_hour, frequency,"
        " weekday, max_papers, status, confirmed_at, status_changed, created, updated,"
        " ranking, like_cap) values (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (sub.email, sub.name, sub.language, sub.timezone, sub.send_hour, sub.frequency,
         sub.weekday, sub.max_papers, sub.status, iso(sub.confirmed_at), now, now, now,
         sub.ranking, sub.like_cap),
    )
    sid = cursor.lastrowid
    assert sid is not None
    conn.executemany(
        "insert into filters (subscriber_id, kind, value) values (?,?,?)",
        [(sid, kind, value) for kind in FILTER_KINDS
         for value in dict.fromkeys(getattr(sub, _FILTER_FIELD[kind]))],
    )
    return sid


def _update(conn: sqlite3.Connection, sid: int, old: Subscriber, new: Subscriber,
            now: str | None) -> None:
    """Write the scalar fields that differ and the filters added or removed."""
    changed = [k for k in _SCALARS if getattr(old, k) != getattr(new, k)]
    if changed:
        conn.execute(f"update subscribers set {', '.join(f'{k} = ?' for k in changed)},"
                     " updated = ? where id = ?",
                     [*(getattr(new, k) for k in changed), now, sid])
    for kind in FILTER_KINDS:
        before = getattr(old, _FILTER_FIELD[kind])
        after = getattr(new, _FILTER_FIELD[kind])
        gone = [v for v in before if v not in after]
        if gone:
            conn.executemany("delete from filters where subscriber_id = ? and kind = ?"
                             " and value = ?", [(sid, kind, v) for v in gone])
        conn.executemany("insert into filters (subscriber_id, kind, value) values (?,?,?)",
                         [(sid, kind, v) for v in dict.fromkeys(after) if v not in before])
    if not changed and any(getattr(old, f) != getattr(new, f) for f in _FILTER_FIELD.values()):
        conn.execute("update subscribers set updated = ? where id = ?", (now, sid))


def add_subscriber(db: Database, sub: Subscriber, *, origin: str = "cli",
                   event: str = "added", detail: str = "",
                   now: datetime | None = None) -> Subscriber:
    """Insert a subscriber with their filters and the event that added them, in one
    transaction. Raises SubscriberExists when the address is taken, whatever its case."""
    stamp = iso(now or utcnow())
    with transaction(db):
        sid = _insert(db.conn, sub, stamp)
        insert_event(db.conn, sid, event, origin, detail, now)
    return get_subscriber(db, sub.email)


def update_subscriber(db: Database, old: Subscriber, new: Subscriber, *, origin: str = "cli",
                      detail: str = "", now: datetime | None = None) -> Subscriber:
    """Replace OLD's settings and filters by NEW's (same address) and record an "edited"
    event with ``detail`` (what changed)."""
    sid = subscriber_row(db, old.email)["id"]
    with transaction(db):
        _update(db.conn, sid, old, new, iso(now or utcnow()))
        insert_event(db.conn, sid, "edited", origin, detail, now)
    return get_subscriber(db, old.email)


def import_subscribers(db: Database, added: Iterable[Subscriber],
                       updated: Iterable[tuple[Subscriber, Subscriber, str]],
                       now: datetime | None = None) -> None:
    """Add and update many subscribers in one transaction: all of it is written, or none.
    ``updated`` holds (stored, new, what changed)."""
    stamp = iso(now or utcnow())
    with transaction(db):
        conn = db.conn
        for sub in added:
            sid = _insert(conn, sub, stamp)
            insert_event(conn, sid, "imported", "import", sub.status, now)
        for old, new, detail in updated:
            sid = conn.execute("select id from subscribers where lower(email) = lower(?)",
                               (old.email,)).fetchone()[0]
            _update(conn, sid, old, new, stamp)
            insert_event(conn, sid, "edited", "import", detail, now)


def get_subscriber(db: Database, email: str) -> Subscriber:
    row = subscriber_row(db, email)
    return _load(db, "s.id = ?", [row["id"]])[0]


def list_subscribers(db: Database, status: str | None = None) -> list[Subscriber]:
    return _load(db, "s.status = ?", [status]) if status else _load(db)


def set_subscriber_status(db: Database, email: str, status: str, *, event: str, origin: str,
                          detail: str = "", now: datetime | None = None) -> Subscriber:
    """Change the status and record ``event``; confirming also stamps confirmed_at and
    drops the confirmation token's hash."""
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
    row = subscriber_row(db, email)
    stamp = iso(now or utcnow())
    with transaction(db):
        db.conn.execute("update subscribers set status = ?, status_changed = ?, updated = ?"
                        " where id = ?", (status, stamp, stamp, row["id"]))
        if event == "confirmed":
            db.conn.execute("update subscribers set confirmed_at = ?, confirm_hash = null"
                            " where id = ?", (stamp, row["id"]))
        insert_event(db.conn, row["id"], event, origin, detail, now)
        if status == "unsubscribed":
            insert_tombstone(db.conn, row["email"], "unsubscribed", now)
    return get_subscriber(db, email)


def set_confirm_hash(db: Database, email: str, digest: str, *, origin: str,
                     now: datetime | None = None) -> None:
    """Remember the hash of the confirmation token just sent, and record it was sent."""
    row = subscriber_row(db, email)
    with transaction(db):
        db.conn.execute("update subscribers set confirm_hash = ? where id = ?",
                        (digest, row["id"]))
        insert_event(db.conn, row["id"], "confirmation sent", origin, "", now)


def get_confirm_hash(db: Database, email: str) -> str | None:
    got: str | None = subscriber_row(db, email)["confirm_hash"]
    return got


def pending_before(db: Database, before: datetime) -> list[str]:
    """Addresses still pending since before ``before``."""
    return [r["email"] for r in db.query(
        "select email from subscribers where status = 'pending'"
        " and coalesce(status_changed, created) < ? order by email", [iso(before)])]


@contextmanager
def _secure_delete(db: Database) -> Iterator[None]:
    """Overwrite deleted content with zeros, so it does not linger in free space."""
    previous = db.execute("PRAGMA secure_delete").fetchone()[0]
    db.execute("PRAGMA secure_delete = ON")
    try:
        yield
    finally:
        db.execute(f"PRAGMA secure_delete = {int(previous)}")


def erase_row(db: Database, row: dict[str, Any], event: str | None, origin: str,
              keep_counts: bool, now: datetime | None) -> dict[str, Any]:
    """Erase one subscriber row and everything of theirs; with an ``event``, record it
    anonymously and leave a tombstone (a merge applying a tombstone passes none: the
    event and the tombstone travel with the merge)."""
    sid = row["id"]
    conn = db.conn
    counts = {table: conn.execute(f"select count(*) from {table} where subscriber_id = ?",
                                  (sid,)).fetchone()[0]
              for table in ("filters", "deliveries", "subscriber_events", "feedback")}
    paths = [r[0] for r in conn.execute(
        "select path from deliveries where subscriber_id = ? and path is not null", (sid,))]
    with _secure_delete(db), transaction(db):
        if keep_counts:
            conn.execute(
                "insert into forgotten_deliveries (issue_date, status, count)"
                " select issue_date, status, count(*) from deliveries where subscriber_id = ?"
                " group by issue_date, status"
                " on conflict (issue_date, status) do update set count = count + excluded.count",
                (sid,))
        for table in ("filters", "deliveries", "subscriber_events", "feedback"):
            conn.execute(f"delete from {table} where subscriber_id = ?", (sid,))
        conn.execute("delete from subscribers where id = ?", (sid,))
        if event is not None:
            insert_event(conn, None, event, origin, "", now)
            insert_tombstone(conn, row["email"], event, now)
    return {"email": row["email"], "name": row.get("name") or "", "paths": paths, **counts}


def _erase(db: Database, email: str, event: str, origin: str, keep_counts: bool,
           now: datetime | None) -> dict[str, Any]:
    return erase_row(db, subscriber_row(db, email), event, origin, keep_counts, now)


def forget_subscriber(db: Database, email: str, *, event: str = "forgotten",
                      origin: str = "cli", now: datetime | None = None) -> dict[str, Any]:
    """Erase EMAIL's row, filters, history and deliveries (zeroed on disk), keeping only
    how many deliveries there were per issue date and status (``forgotten_deliveries``)
    and one anonymous ``event`` row. Returns what was erased, and the delivery paths."""
    return _erase(db, email, event, origin, True, now)


def remove_subscriber(db: Database, email: str, origin: str = "cli",
                      now: datetime | None = None) -> None:
    """Delete a subscriber, their filters, history and delivery records (no counts kept)."""
    _erase(db, email, "removed", origin, False, now)


def compact(db: Database) -> str | None:
    """VACUUM and checkpoint the WAL, so erased data leaves no copy in the file.
    Returns why it could not, if it could not (e.g. another process has the file open)."""
    try:
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.OperationalError as e:
        return str(e)
    return None


def find_text(db: Database, needle: str) -> list[str]:
    """Every ``table.column`` of an ordinary table whose text contains ``needle``
    (case-insensitive): how ``forget`` checks that nothing was left behind."""
    found = []
    tables = [r[0] for r in db.execute(
        "select name from sqlite_master where type = 'table' and name not like 'sqlite_%'"
        " and sql not like 'CREATE VIRTUAL%'")]
    for table in tables:
        for col in db.table(table).columns:
            hit = db.execute(f'select 1 from "{table}" where instr(lower(cast("{col.name}"'
                             ' as text)), lower(?)) limit 1', [needle]).fetchone()
            if hit:
                found.append(f"{table}.{col.name}")
    return found


def subscriber_emails(db: Database) -> list[str]:
    """Every address on the list, whatever its status (no filters loaded)."""
    return [row[0] for row in db.execute("select email from subscribers order by email")]


__all__ = ["FILTER_KINDS", "add_subscriber", "compact", "find_text",
           "forget_subscriber", "get_confirm_hash", "get_subscriber", "import_subscribers",
           "list_subscribers", "pending_before", "remove_subscriber", "set_confirm_hash",
           "set_subscriber_status", "subscriber_emails", "update_subscriber"]
