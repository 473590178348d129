"""Subscribers and their filters."""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from newsletter.errors import SubscriberExists, SubscriberNotFound
from newsletter.models import Subscriber
from newsletter.store.db import _iso, transaction, utcnow

FILTER_KINDS = ("author", "topic", "category", "exclude")
_FILTER_FIELD = {"author": "authors", "topic": "topics", "category": "categories",
                 "exclude": "exclude"}


def _subscriber_row(db: Database, email: str) -> dict[str, Any]:
    rows = list(db.table("subscribers").rows_where("lower(email) = lower(?)", [email], limit=1))
    if not rows:
        raise SubscriberNotFound(
            f"no subscriber {email} - see \"newsletter subscribers list\""
        )
    return rows[0]


def _to_subscriber(db: Database, row: dict[str, Any]) -> Subscriber:
    filters: dict[str, list[str]] = {k: [] for k in FILTER_KINDS}
    for f in db.table("filters").rows_where("subscriber_id = ?", [row["id"]], order_by="id"):
        filters.setdefault(f["kind"], []).append(f["value"])
    return Subscriber(
        email=row["email"],
        name=row["name"] or "",
        language=row["language"],
        timezone=row["timezone"],
        send_hour=row["send_hour"],
        frequency=row["frequency"],
        max_papers=row["max_papers"],
        status=row["status"],
        authors=tuple(filters["author"]),
        topics=tuple(filters["topic"]),
        categories=tuple(filters["category"]),
        exclude=tuple(filters["exclude"]),
    )


def add_subscriber(db: Database, sub: Subscriber) -> Subscriber:
    """Insert a subscriber with its filters in one transaction."""
    if list(db.table("subscribers").rows_where("lower(email) = lower(?)", [sub.email], limit=1)):
        raise SubscriberExists(
            f"subscriber {sub.email} already exists - use \"newsletter subscribers remove\" "
            "first to replace it"
        )
    now = _iso(utcnow())
    with transaction(db):
        cursor = db.conn.execute(
            "insert into subscribers (email, name, language, timezone, send_hour, frequency,"
            " max_papers, status, created, updated) values (?,?,?,?,?,?,?,?,?,?)",
            (sub.email, sub.name, sub.language, sub.timezone, sub.send_hour, sub.frequency,
             sub.max_papers, sub.status, now, now),
        )
        sid = cursor.lastrowid
        for kind in FILTER_KINDS:
            for value in dict.fromkeys(getattr(sub, _FILTER_FIELD[kind])):
                db.conn.execute(
                    "insert into filters (subscriber_id, kind, value) values (?,?,?)",
                    (sid, kind, value),
                )
    return get_subscriber(db, sub.email)


def get_subscriber(db: Database, email: str) -> Subscriber:
    return _to_subscriber(db, _subscriber_row(db, email))


def list_subscribers(db: Database, status: str | None = None) -> list[Subscriber]:
    where, args = ("status = ?", [status]) if status else (None, [])
    rows = db.table("subscribers").rows_where(where, args, order_by="email")
    return [_to_subscriber(db, r) for r in rows]


def remove_subscriber(db: Database, email: str) -> None:
    row = _subscriber_row(db, email)
    with transaction(db):
        db.conn.execute("delete from filters where subscriber_id = ?", (row["id"],))
        db.conn.execute("delete from deliveries where subscriber_id = ?", (row["id"],))
        db.conn.execute("delete from subscribers where id = ?", (row["id"],))
