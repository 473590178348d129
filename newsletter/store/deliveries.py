"""One delivery row per (subscriber, issue date): what makes sending idempotent."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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


def finish_delivery(db: Database, delivery_id: int, status: str, *, error: str | None = None,
                    path: str | None = None, now: datetime | None = None) -> None:
    """One delivery's outcome ("sent", "deferred" or "failed"), on its own."""
    record_progress(db, [(delivery_id, status, error, path)], now)


def record_progress(db: Database, steps: Sequence[tuple[int, str, str | None, str | None]],
                    now: datetime | None = None) -> None:
    """Several deliveries' steps, in order, in one transaction: (delivery id, status, error,
    path) where status "sending" is a hand-over begun (an attempt counted) and "sent",
    "deferred" or "failed" its outcome."""
    stamp = iso(now or utcnow())
    with transaction(db):
        for delivery_id, status, error, path in steps:
            if status == "sending":
                db.conn.execute("update deliveries set status = 'sending', attempts ="
                                " attempts + 1 where id = ?", (delivery_id,))
            else:
                db.conn.execute(
                    "update deliveries set status = ?, error = ?, path = coalesce(?, path),"
                    " sent_at = case when ? = 'sent' then ? else sent_at end where id = ?",
                    (status, error, path, status, stamp, delivery_id))


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


# --- a batch of subscribers at a time (the morning run) -----------------------------------


@dataclass(frozen=True)
class History:
    """What a run needs to know about one subscriber's past deliveries."""

    last_sent_at: datetime | None  # when the last delivered issue was planned
    last_issue_date: date | None
    unfinished: dict[str, Any] | None  # the oldest delivery a previous run did not finish
    delivered: frozenset[str]  # ids of every paper already delivered


def histories(db: Database, subscriber_ids: Sequence[int]) -> dict[int, History]:
    """``History`` for each of these subscribers, in one query."""
    rows: dict[int, list[dict[str, Any]]] = {sid: [] for sid in subscriber_ids}
    if not rows:
        return {}
    marks = ",".join("?" * len(rows))
    for r in db.query(f"select * from deliveries where subscriber_id in ({marks})"
                      " order by issue_date", list(rows)):
        rows[r["subscriber_id"]].append(r)
    out = {}
    for sid, ds in rows.items():
        sent = [d for d in ds if d["status"] == "sent"]
        created = max((d["created"] for d in sent), default=None)
        last_date = max((d["issue_date"] for d in sent), default=None)
        delivered: set[str] = set()
        for d in sent:
            delivered.update(json.loads(d["paper_ids"] or "[]"))
        out[sid] = History(
            datetime.fromisoformat(created) if created else None,
            date.fromisoformat(last_date) if last_date else None,
            next((d for d in ds if d["status"] in UNFINISHED), None), frozenset(delivered))
    return out


def earliest_last_sent(db: Database) -> datetime | None:
    """The oldest among active subscribers' latest delivered issues (where a run's paper
    index must reach back to)."""
    got = db.execute(
        "select min(latest) from (select max(d.created) latest from deliveries d join"
        " subscribers s on s.id = d.subscriber_id where d.status = 'sent' and"
        " s.status = 'active' group by d.subscriber_id)").fetchone()[0]
    return datetime.fromisoformat(got) if got else None


def begin_deliveries(db: Database, planned: Sequence[tuple[int, date, str, Sequence[str]]],
                     now: datetime | None = None) -> dict[int, dict[str, Any]]:
    """``begin_delivery`` for a batch of (subscriber id, issue date, Message-ID, paper ids):
    the pending rows are written in one transaction; returns each subscriber's row (an
    existing row for the same day is kept as it was)."""
    if not planned:
        return {}
    stamp = iso(now or utcnow())
    with transaction(db):
        db.conn.executemany(
            "insert or ignore into deliveries (subscriber_id, issue_date, status, message_id,"
            " paper_ids, attempts, created) values (?, ?, 'pending', ?, ?, 0, ?)",
            [(sid, day.isoformat(), mid, json.dumps(list(ids)), stamp)
             for sid, day, mid, ids in planned])
    wanted = {(sid, day.isoformat()) for sid, day, _, _ in planned}
    days = sorted({day for _, day in wanted})
    marks, day_marks = ",".join("?" * len(planned)), ",".join("?" * len(days))
    return {r["subscriber_id"]: r for r in db.query(
        f"select * from deliveries where subscriber_id in ({marks}) and issue_date in"
        f" ({day_marks})", [*(sid for sid, _, _, _ in planned), *days])
        if (r["subscriber_id"], r["issue_date"]) in wanted}


def sent_since(db: Database, since: datetime) -> int:
    """How many deliveries were sent at or after ``since`` (the provider's daily quota)."""
    got: int = db.execute("select count(*) from deliveries where status = 'sent' and"
                          " sent_at >= ?", [iso(since)]).fetchone()[0]
    return got
