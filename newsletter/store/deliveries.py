"""One delivery row per (subscriber, issue date): what makes sending idempotent."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlite_utils import Database

from newsletter.store.db import iso, transaction, utcnow
from newsletter.store.rows import subscriber_row


def delivered_paper_ids(db: Database, email: str) -> set[str]:
    row = subscriber_row(db, email)
    ids: set[str] = set()
    for d in db.table("deliveries").rows_where(
        "subscriber_id = ? and status = 'sent'", [row["id"]], select="paper_ids"
    ):
        ids.update(json.loads(d["paper_ids"] or "[]"))
    return ids


def _latest_sent(db: Database, email: str, column: str) -> str | None:
    """The latest value of a column over this subscriber's sent deliveries."""
    row = subscriber_row(db, email)
    got: str | None = db.execute(
        f"select max({column}) from deliveries where subscriber_id = ? and status = 'sent'",
        [row["id"]],
    ).fetchone()[0]
    return got


def last_sent_at(db: Database, email: str) -> datetime | None:
    """When the last delivered issue was planned: papers first seen after it are new."""
    got = _latest_sent(db, email, "created")
    return datetime.fromisoformat(got) if got else None


def last_issue_date(db: Database, email: str) -> date | None:
    got = _latest_sent(db, email, "issue_date")
    return date.fromisoformat(got) if got else None


def get_delivery(db: Database, email: str, issue_date: date) -> dict[str, Any] | None:
    row = subscriber_row(db, email)
    rows = list(db.table("deliveries").rows_where(
        "subscriber_id = ? and issue_date = ?", [row["id"], issue_date.isoformat()], limit=1))
    return rows[0] if rows else None


# A delivery moves: pending (planned, papers fixed) -> sending (handed to the transport)
# -> sent | deferred (temporary failure: retried next run) | failed (permanent: a 5xx answer;
# not retried until `deliveries retry` sets it back to pending).
# A row left in "pending" or "sending" by a killed run is sent again by the next run, with
# the same papers and the same Message-ID.
UNFINISHED = ("pending", "sending", "deferred")


def begin_delivery(db: Database, email: str, issue_date: date, message_id: str,
                   paper_ids: Iterable[str], now: datetime | None = None) -> dict[str, Any]:
    """Create (or reuse) the one delivery row for (subscriber, issue date)."""
    sub = subscriber_row(db, email)
    existing = get_delivery(db, email, issue_date)
    if existing is not None:
        return existing
    with transaction(db):
        db.conn.execute(
            "insert or ignore into deliveries (subscriber_id, issue_date, status, message_id,"
            " paper_ids, attempts, created) values (?, ?, 'pending', ?, ?, 0, ?)",
            (sub["id"], issue_date.isoformat(), message_id, json.dumps(list(paper_ids)),
             iso(now or utcnow())),
        )
    delivery = get_delivery(db, email, issue_date)
    assert delivery is not None
    return delivery


def mark_sending(db: Database, delivery_id: int) -> None:
    with transaction(db):
        db.conn.execute("update deliveries set status = 'sending', attempts = attempts + 1"
                        " where id = ?", (delivery_id,))


def finish_delivery(db: Database, delivery_id: int, status: str, *, error: str | None = None,
                    path: str | None = None, now: datetime | None = None) -> None:
    with transaction(db):
        db.conn.execute(
            "update deliveries set status = ?, error = ?, path = coalesce(?, path),"
            " sent_at = case when ? = 'sent' then ? else sent_at end where id = ?",
            (status, error, path, status, iso(now or utcnow()), delivery_id),
        )


def retry_failed(db: Database, issue_date: date | None = None, email: str | None = None
                 ) -> int:
    """Set failed deliveries back to pending, so the next run sends them again (with the
    same papers and Message-ID); returns how many."""
    conditions = {"issue_date": issue_date.isoformat() if issue_date else None,
                  "subscriber_id": subscriber_row(db, email)["id"] if email else None}
    sql = "update deliveries set status = 'pending', error = null where status = 'failed'"
    args = [v for v in conditions.values() if v is not None]
    sql += "".join(f" and {k} = ?" for k, v in conditions.items() if v is not None)
    with transaction(db):
        count: int = db.conn.execute(sql, args).rowcount
    return count


def delivery_recipient(db: Database, message_id: str) -> str | None:
    """The subscriber an issue with this Message-ID went to (bounces and complaints quote
    it), or None."""
    mid = message_id.strip()
    if not mid:
        return None
    if not mid.startswith("<"):
        mid = f"<{mid}>"
    row = db.execute("select s.email from deliveries d join subscribers s on s.id ="
                     " d.subscriber_id where d.message_id = ? limit 1", [mid]).fetchone()
    return row[0] if row else None


def list_deliveries(db: Database, issue_date: date | None = None,
                    status: str | None = None) -> list[dict[str, Any]]:
    sql = ("select s.email, d.issue_date, d.status, d.message_id, d.paper_ids, d.attempts,"
           " d.error, d.path, d.created, d.sent_at from deliveries d join subscribers s"
           " on s.id = d.subscriber_id where 1 = 1")
    args: list[Any] = []
    if issue_date:
        sql += " and d.issue_date = ?"
        args.append(issue_date.isoformat())
    if status:
        sql += " and d.status = ?"
        args.append(status)
    return [dict(r) for r in db.query(sql + " order by d.issue_date, s.email", args)]


def unfinished_delivery(db: Database, email: str) -> dict[str, Any] | None:
    """The oldest delivery of this subscriber a previous run did not finish, if any."""
    row = subscriber_row(db, email)
    marks = ",".join("?" * len(UNFINISHED))
    rows = list(db.table("deliveries").rows_where(
        f"subscriber_id = ? and status in ({marks})", [row["id"], *UNFINISHED],
        order_by="issue_date", limit=1))
    return rows[0] if rows else None
