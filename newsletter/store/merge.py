"""Merging a morning run's state into a newer copy of the database.

The scheduled job commits the database back to the repository. If a person pushed a
subscriber change while the job ran, the job's copy is older than the repository's: the
run's append-only state (papers, deliveries, briefs and model calls, fetch state, and the
status changes it applied from the mailbox) is merged into the newer copy, whose subscribers
and filters win.
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from newsletter.store.db import transaction

RUN_ORIGINS = ("unsubscribe", "bounce", "reply", "web")


def _ids_by_email(db: Database) -> dict[str, int]:
    return {r["email"].lower(): r["id"] for r in db.query("select id, email from subscribers")}


def merge_run_state(target: Database, source: Database) -> dict[str, int]:
    """Copy into ``target`` what ``source`` (the run's copy) has and ``target`` lacks.

    Returns how many rows of each kind were added or updated."""
    counts = {"papers": 0, "deliveries": 0, "briefs": 0, "llm_calls": 0, "sources": 0,
              "statuses": 0}
    src_ids = {v: k for k, v in _ids_by_email(source).items()}
    dst_ids = _ids_by_email(target)
    with transaction(target):
        have = {r["id"] for r in target.query("select id from papers")}
        for row in source.query("select * from papers"):
            if row["id"] not in have:
                target.table("papers").insert(row)
                counts["papers"] += 1
        counts["deliveries"] = _merge_deliveries(target, source, src_ids, dst_ids)
        keys = {r["key"] for r in target.query("select key from briefs")}
        for row in source.query("select * from briefs"):
            if row["key"] not in keys:
                target.table("briefs").insert(row)
                counts["briefs"] += 1
        seen = {(r["brief_key"], r["created"], r["model"]) for r in
                target.query("select brief_key, created, model from llm_calls")}
        for row in source.query("select * from llm_calls"):
            if (row["brief_key"], row["created"], row["model"]) not in seen:
                target.table("llm_calls").insert({k: v for k, v in row.items() if k != "id"})
                counts["llm_calls"] += 1
        counts["sources"] = _merge_sources(target, source)
        counts["statuses"] = _merge_status_changes(target, source, src_ids, dst_ids)
    return counts


def _merge_deliveries(target: Database, source: Database, src_ids: dict[int, str],
                      dst_ids: dict[str, int]) -> int:
    """New deliveries, and ones the run sent that the target still has as unsent."""
    changed = 0
    for row in source.query("select * from deliveries"):
        email = src_ids.get(row["subscriber_id"])
        if email is None or email not in dst_ids:
            continue  # the person removed or forgot this subscriber: they win
        new = {**{k: v for k, v in row.items() if k != "id"},
               "subscriber_id": dst_ids[email]}
        old = next(iter(target.query(
            "select id, status from deliveries where subscriber_id = ? and issue_date = ?",
            [new["subscriber_id"], new["issue_date"]])), None)
        if old is None:
            target.table("deliveries").insert(new)
            changed += 1
        elif old["status"] != "sent" and new["status"] == "sent":
            target.table("deliveries").update(old["id"], new)
            changed += 1
    return changed


def _merge_sources(target: Database, source: Database) -> int:
    """Each source's fetch state, where the run's copy fetched later."""
    changed = 0
    for row in source.query("select * from sources"):
        old = next(iter(target.query("select last_fetched from sources where name = ?",
                                     [row["name"]])), None)
        if old is None or (row["last_fetched"] or "") > (old["last_fetched"] or ""):
            target.table("sources").upsert(row, pk="name")
            changed += 1
    return changed


def _merge_status_changes(target: Database, source: Database, src_ids: dict[int, str],
                          dst_ids: dict[str, int]) -> int:
    """Unsubscribes, bounces and confirmations the run applied from the mailbox."""
    if not source.table("subscriber_events").exists():
        return 0
    marks = ",".join("?" * len(RUN_ORIGINS))
    known = {(r["subscriber_id"], r["event"], r["created"]) for r in target.query(
        "select subscriber_id, event, created from subscriber_events")}
    changed = 0
    for ev in source.query(f"select * from subscriber_events where origin in ({marks})"
                           " order by id", list(RUN_ORIGINS)):
        email = src_ids.get(ev["subscriber_id"])
        if email is None or email not in dst_ids:
            continue
        sid = dst_ids[email]
        if (sid, ev["event"], ev["created"]) in known:
            continue
        status: Any = next(iter(source.query("select status from subscribers where id = ?",
                                             [ev["subscriber_id"]])))["status"]
        target.table("subscriber_events").insert(
            {**{k: v for k, v in ev.items() if k != "id"}, "subscriber_id": sid})
        target.table("subscribers").update(sid, {"status": status})
        changed += 1
    return changed
