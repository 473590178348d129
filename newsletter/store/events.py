"""The history of every change to a subscriber: what happened, when, and where from.

Events name what happened (added, imported, edited, paused, resumed, pending, confirmation
sent, confirmed, unsubscribed, bounced, soft bounce, forgotten, expired, removed); the origin
says who or what did it (cli, import, unsubscribe, bounce, complaint, reply, web). The detail
may hold personal data (an old name, a filter); it is erased with the subscriber.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from sqlite_utils import Database

from newsletter.store.db import iso, transaction, utcnow
from newsletter.store.rows import subscriber_row

ORIGINS = ("cli", "import", "unsubscribe", "bounce", "complaint", "reply", "web")


def insert_event(conn: sqlite3.Connection, subscriber_id: int | None, event: str,
                  origin: str, detail: str = "", now: datetime | None = None) -> None:
    """Append one event inside the caller's transaction."""
    conn.execute(
        "insert into subscriber_events (subscriber_id, event, origin, detail, created)"
        " values (?, ?, ?, ?, ?)",
        (subscriber_id, event, origin, detail, iso(now or utcnow())),
    )


def record_event(db: Database, email: str, event: str, origin: str, detail: str = "",
                 now: datetime | None = None) -> None:
    """Record something that happened to EMAIL's subscription, e.g.
    ``record_event(db, "ada@example.org", "bounced", "bounce", "550 mailbox full")``.

    Raises SubscriberNotFound for an unknown address."""
    row = subscriber_row(db, email)
    with transaction(db):
        insert_event(db.conn, row["id"], event, origin, detail, now)


def subscriber_history(db: Database, email: str) -> list[dict[str, Any]]:
    """EMAIL's events, oldest first: dicts with created, event, origin and detail."""
    row = subscriber_row(db, email)
    return [dict(r) for r in db.query(
        "select created, event, origin, detail from subscriber_events"
        " where subscriber_id = ? order by id", [row["id"]])]


def soft_bounces(db: Database, email: str, since: datetime) -> int:
    """How many soft bounces EMAIL had since SINCE and since their status last changed
    (resuming or reactivating someone starts the count again)."""
    row = subscriber_row(db, email)
    start = max(iso(since) or "", row["status_changed"] or "")
    got: int = db.execute(
        "select count(*) from subscriber_events where subscriber_id = ? and event = "
        "'soft bounce' and created >= ?", [row["id"], start]).fetchone()[0]
    return got


def anonymous_events(db: Database) -> list[dict[str, Any]]:
    """Events left by subscribers who were forgotten, expired or removed (no subscriber)."""
    return [dict(r) for r in db.query(
        "select created, event, origin, detail from subscriber_events"
        " where subscriber_id is null order by id")]


def change_marker(db: Database) -> tuple[int, int]:
    """Changes as cheap as a glance: (how many history events, the last one's id). Every
    change to a subscriber (web, mailbox, CLI) records an event, so a change moves it."""
    row = db.execute("select count(*), coalesce(max(id), 0) from subscriber_events").fetchone()
    return int(row[0]), int(row[1])


__all__ = ["ORIGINS", "anonymous_events", "change_marker", "record_event", "soft_bounces",
           "subscriber_history"]
