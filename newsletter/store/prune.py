"""Pruning: what keeps a year of daily runs from growing the state without end.

Older than the retention: delivery rows (their counts per issue date and status are kept in
``pruned_deliveries``; each subscriber's latest sent delivery is kept, since the next issue
starts where it ended), cached briefs, LLM call and cache-hit rows, and then every paper that
no remaining delivery, brief or unfinished delivery refers to. The full-text index follows
the papers table (its triggers delete the index rows with the papers).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlite_utils import Database

from newsletter.store.db import iso, transaction


def prune(db: Database, retention_days: int, now: datetime) -> dict[str, int]:
    """Drop what is older than ``retention_days`` before ``now`` and referred to by nothing
    kept. Returns how many rows of each kind were dropped."""
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1")
    cutoff = iso(now - timedelta(days=retention_days))
    assert cutoff is not None
    day = cutoff[:10]
    conn = db.conn
    dropped: dict[str, int] = {}
    with transaction(db):
        old = ("from deliveries where issue_date < ? and status in ('sent', 'failed', 'skipped')"
               " and id not in (select max(id) from deliveries where status = 'sent'"
               " group by subscriber_id)")
        conn.execute(
            "insert into pruned_deliveries (issue_date, status, count)"
            f" select issue_date, status, count(*) {old} group by issue_date, status"
            " on conflict (issue_date, status) do update set count = count + excluded.count",
            (day,))
        dropped["deliveries"] = conn.execute(f"delete {old}", (day,)).rowcount
        dropped["briefs"] = conn.execute("delete from briefs where created < ?",
                                         (cutoff,)).rowcount
        dropped["llm_calls"] = conn.execute("delete from llm_calls where created < ?",
                                            (cutoff,)).rowcount
        dropped["brief_hits"] = conn.execute("delete from brief_hits where created < ?",
                                             (cutoff,)).rowcount
        dropped["brief_fallbacks"] = conn.execute(
            "delete from brief_fallbacks where created < ?", (cutoff,)).rowcount
        dropped["papers"] = conn.execute(
            "delete from papers where first_seen < ? and id not in ("
            " select j.value from deliveries d, json_each(coalesce(d.paper_ids, '[]')) j"
            " union select j.value from briefs b, json_each(coalesce(b.paper_ids, '[]')) j"
            " union select value from filters where kind = 'like'"  # seed papers
            " union select paper_id from feedback)",  # what readers judged: the ranking learns
            (cutoff,)).rowcount
    return dropped


__all__ = ["prune"]
