"""What the research radar page reads and writes: the issues a subscriber was sent, their
page-link generation (raising it revokes their links). Their verdicts on papers are in
``store/relevance.py``."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from sqlite_utils import Database

from newsletter.store.db import transaction
from newsletter.store.events import insert_event
from newsletter.store.rows import subscriber_row


def sent_issues(db: Database, email: str) -> list[dict[str, Any]]:
    """EMAIL's delivered issues, newest first: issue_date (a date), paper_ids (a list),
    created (when it was planned) and sent_at."""
    row = subscriber_row(db, email)
    out = []
    for d in db.query(
            "select issue_date, paper_ids, created, sent_at from deliveries"
            " where subscriber_id = ? and status = 'sent' order by issue_date desc",
            [row["id"]]):
        out.append({"issue_date": date.fromisoformat(d["issue_date"]),
                    "paper_ids": json.loads(d["paper_ids"] or "[]"),
                    "created": datetime.fromisoformat(d["created"]) if d["created"] else None,
                    "sent_at": datetime.fromisoformat(d["sent_at"]) if d["sent_at"] else None})
    return out


def link_generation(db: Database, email: str) -> int:
    return int(subscriber_row(db, email)["link_generation"] or 0)


def revoke_links(db: Database, email: str, origin: str = "cli",
                 now: datetime | None = None) -> int:
    """Make every page link handed out to EMAIL so far invalid; returns the new
    generation."""
    row = subscriber_row(db, email)
    generation = int(row["link_generation"] or 0) + 1
    with transaction(db):
        db.conn.execute("update subscribers set link_generation = ? where id = ?",
                        (generation, row["id"]))
        insert_event(db.conn, row["id"], "links revoked", origin, "", now)
    return generation


def data_version(db: Database) -> tuple[int, ...]:
    """Changes whenever anything a radar page shows may have changed (any subscriber change
    or feedback writes an event; a run adds deliveries, papers, briefs): the largest row id
    of each of those tables, one index lookup each."""
    return tuple(db.execute(f"select coalesce(max(rowid), 0) from {table}").fetchone()[0]
                 for table in ("subscriber_events", "deliveries", "papers", "briefs"))


__all__ = ["data_version", "link_generation",
           "revoke_links", "sent_issues"]
