"""One delivery row per (subscriber, issue date): what makes sending idempotent."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlite_utils import Database

from newsletter.store.db import _iso, transaction, utcnow
from newsletter.store.subscribers import _subscriber_row


def delivered_paper_ids(db: Database, email: str) -> set[str]:
    row = _subscriber_row(db, email)
    ids: set[str] = set()
    for d in db.table("deliveries").rows_where(
        "subscriber_id = ? and status = 'sent'", [row["id"]], select="paper_ids"
    ):
        ids.update(json.loads(d["paper_ids"] or "[]"))
    return ids


def last_sent_at(db: Database, email: str) -> datetime | None:
    row = _subscriber_row(db, email)
    got = db.execute(
        "select max(sent_at) from deliveries where subscriber_id = ? and status = 'sent'",
        [row["id"]],
    ).fetchone()[0]
    return datetime.fromisoformat(got) if got else None


def get_delivery(db: Database, email: str, issue_date: date) -> dict[str, Any] | None:
    row = _subscriber_row(db, email)
    rows = list(db.table("deliveries").rows_where(
        "subscriber_id = ? and issue_date = ?", [row["id"], issue_date.isoformat()], limit=1))
    return rows[0] if rows else None


def begin_delivery(db: Database, email: str, issue_date: date, message_id: str,
                   paper_ids: Iterable[str]) -> dict[str, Any]:
    """Create (or reuse) the one delivery row for (subscriber, issue date), marked pending."""
    sub = _subscriber_row(db, email)
    existing = get_delivery(db, email, issue_date)
    if existing is not None:
        return existing
    with transaction(db):
        db.table("deliveries").insert({
            "subscriber_id": sub["id"],
            "issue_date": issue_date.isoformat(),
            "status": "pending",
            "message_id": message_id,
            "paper_ids": json.dumps(list(paper_ids)),
            "attempts": 0,
            "created": _iso(utcnow()),
        })
    delivery = get_delivery(db, email, issue_date)
    assert delivery is not None
    return delivery


def finish_delivery(db: Database, delivery_id: int, status: str, *, error: str | None = None,
                    path: str | None = None) -> None:
    with transaction(db):
        db.conn.execute(
            "update deliveries set status = ?, error = ?, path = coalesce(?, path),"
            " attempts = attempts + 1, sent_at = case when ? = 'sent' then ? else sent_at end"
            " where id = ?",
            (status, error, path, status, _iso(utcnow()), delivery_id),
        )


def list_deliveries(db: Database, issue_date: date | None = None) -> list[dict[str, Any]]:
    sql = ("select s.email, d.issue_date, d.status, d.message_id, d.paper_ids, d.attempts,"
           " d.error, d.path, d.sent_at from deliveries d join subscribers s"
           " on s.id = d.subscriber_id")
    args: list[Any] = []
    if issue_date:
        sql += " where d.issue_date = ?"
        args.append(issue_date.isoformat())
    return [dict(r) for r in db.query(sql + " order by d.issue_date, s.email", args)]
