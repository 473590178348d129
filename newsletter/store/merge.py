"""Merging two copies of the list's state: ``merge_state(target, other)``.

Two copies part when a scheduled run works on one while a person (a laptop, ``newsletter
serve``, another shard) changes the other. The merge makes ``target`` the union of both, the
same whichever way round it runs:

- subscribers are matched by address; settings and filters come from the copy edited last
  (its ``updated``), status from the copy whose status changed last (``status_changed``);
  the history (``subscriber_events``) is the union, so both sides' edits are in it;
- deliveries are matched by (address, issue date); a "sent" row wins over an unfinished one;
- feedback on papers (the radar page's relevant / not relevant) is the union; the page-link
  generation is the larger of the two, so a revocation on either side stays;
- papers, briefs, LLM calls and cache hits are the union; each source keeps its latest fetch;
- tombstones are the union, and then applied: an address forgotten, expired or removed on
  either side is erased, and one unsubscribed on either side stays unsubscribed (see
  ``store.tombstones``). A merge never undoes an erasure or an unsubscribe.
"""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from newsletter.store.db import transaction
from newsletter.store.subscribers import erase_row
from newsletter.store.tombstones import ERASURES, merge_tombstones, tombstone_matches

_STATUS_COLS = ("status", "status_changed", "confirmed_at", "confirm_hash")
_FIXED = ("id", "email", "created", "link_generation", *_STATUS_COLS)
_RANK = {"sent": 5, "failed": 4, "skipped": 4, "deferred": 2, "sending": 1, "pending": 0}


def _filters(db: Database) -> dict[int, list[tuple[str, str, str]]]:
    out: dict[int, list[tuple[str, str, str]]] = {}
    for f in db.query("select subscriber_id, kind, value, options from filters order by id"):
        out.setdefault(f["subscriber_id"], []).append((f["kind"], f["value"], f["options"]))
    return out


def _settings_key(row: dict[str, Any], filters: list[tuple[str, str, str]]) -> tuple[str, str]:
    """What decides whose settings win: the later ``updated``, then (a tie) the content."""
    content = json.dumps([{k: v for k, v in sorted(row.items()) if k not in _FIXED},
                          sorted(filters)], default=str)
    return (row["updated"] or "", content)


def _merge_subscribers(target: Database, other: Database) -> int:
    mine = {r["email"].lower(): r for r in target.query("select * from subscribers")}
    my_filters = _filters(target)
    their_filters = _filters(other)
    conn = target.conn
    changed = 0
    for row in other.query("select * from subscribers order by id"):
        theirs = their_filters.get(row["id"], [])
        old = mine.get(row["email"].lower())
        if old is None:
            sid = target.table("subscribers").insert(
                {k: v for k, v in row.items() if k != "id"}).last_pk
            conn.executemany("insert into filters (subscriber_id, kind, value, options)"
                             " values (?,?,?,?)", [(sid, *f) for f in theirs])
            changed += 1
            continue
        update: dict[str, Any] = {}
        if _settings_key(row, theirs) > _settings_key(old, my_filters.get(old["id"], [])):
            update.update({k: v for k, v in row.items() if k not in _FIXED})
            conn.execute("delete from filters where subscriber_id = ?", (old["id"],))
            conn.executemany("insert into filters (subscriber_id, kind, value, options)"
                             " values (?,?,?,?)", [(old["id"], *f) for f in theirs])
        if ((row["status_changed"] or row["created"] or "")
                > (old["status_changed"] or old["created"] or "")):
            update.update({k: row[k] for k in _STATUS_COLS})
        if (row.get("link_generation") or 0) > (old.get("link_generation") or 0):
            update["link_generation"] = row["link_generation"]  # a revocation stays
        if update:
            target.table("subscribers").update(old["id"], update)
            changed += 1
    return changed


def _emails(db: Database) -> dict[int, str]:
    return {r["id"]: r["email"].lower() for r in db.query("select id, email from subscribers")}


def _merge_events(target: Database, other: Database, src: dict[int, str],
                  dst: dict[str, int]) -> int:
    def key(ev: dict[str, Any], who: str | None) -> tuple[Any, ...]:
        return (who, ev["event"], ev["origin"], ev["created"], ev["detail"])

    mine = _emails(target)
    known = {key(ev, mine.get(ev["subscriber_id"])) for ev in
             target.query("select * from subscriber_events")}
    added = 0
    for ev in other.query("select * from subscriber_events order by id"):
        who = src.get(ev["subscriber_id"]) if ev["subscriber_id"] is not None else None
        if ev["subscriber_id"] is not None and (who is None or who not in dst):
            continue  # erased on this side: the tombstone decides
        if key(ev, who) in known:
            continue
        target.table("subscriber_events").insert(
            {**{k: v for k, v in ev.items() if k != "id"},
             "subscriber_id": dst[who] if who else None})
        added += 1
    return added


def _merge_feedback(target: Database, other: Database, src: dict[int, str],
                    dst: dict[str, int]) -> int:
    """The union of both copies' verdicts (the latest per paper counts when read)."""
    mine = _emails(target)
    known = {(mine.get(r["subscriber_id"]), r["paper_id"], r["verdict"], r["origin"],
              r["created"]) for r in target.query("select * from feedback")}
    added = 0
    for row in other.query("select * from feedback order by created, id"):
        who = src.get(row["subscriber_id"])
        if who is None or who not in dst:
            continue  # erased on this side
        if (who, row["paper_id"], row["verdict"], row["origin"], row["created"]) in known:
            continue
        target.table("feedback").insert({**{k: v for k, v in row.items() if k != "id"},
                                         "subscriber_id": dst[who]})
        added += 1
    return added


def _merge_deliveries(target: Database, other: Database, src: dict[int, str],
                      dst: dict[str, int]) -> int:
    mine = {(r["subscriber_id"], r["issue_date"]): r for r in
            target.query("select id, subscriber_id, issue_date, status from deliveries")}
    changed = 0
    for row in other.query("select * from deliveries order by id"):
        who = src.get(row["subscriber_id"])
        if who is None or who not in dst:
            continue
        new = {**{k: v for k, v in row.items() if k != "id"}, "subscriber_id": dst[who]}
        old = mine.get((new["subscriber_id"], new["issue_date"]))
        if old is None:
            target.table("deliveries").insert(new)
        elif _RANK.get(new["status"], 0) > _RANK.get(old["status"], 0):
            target.table("deliveries").update(old["id"], new)
        else:
            continue
        changed += 1
    return changed


def _union(target: Database, other: Database, table: str, key: tuple[str, ...],
           skip_id: bool = False) -> int:
    cols = ", ".join(key)
    known = {tuple(r.values()) for r in target.query(f"select {cols} from {table}")}
    added = 0
    for row in other.query(f"select * from {table}"):
        if tuple(row[k] for k in key) in known:
            continue
        target.table(table).insert({k: v for k, v in row.items() if not (skip_id and k == "id")})
        added += 1
    return added


def _max_counts(target: Database, other: Database, table: str) -> None:
    """Anonymous counts: the larger of the two (both copies may hold the same count)."""
    for row in other.query(f"select issue_date, status, count from {table}"):
        target.execute(
            f"insert into {table} (issue_date, status, count) values (?, ?, ?) on conflict"
            f" (issue_date, status) do update set count = max(count, excluded.count)",
            [row["issue_date"], row["status"], row["count"]])


def merge_state(target: Database, other: Database) -> dict[str, int]:
    """Make ``target`` the union of itself and ``other`` (see the module's docstring), then
    apply every tombstone. Returns how many rows of each kind were added or changed, and
    how many subscribers the tombstones erased or unsubscribed."""
    counts: dict[str, int] = {}
    with transaction(target):
        counts["tombstones"] = merge_tombstones(target, other)
        counts["subscribers"] = _merge_subscribers(target, other)
        src = _emails(other)
        dst = {email: sid for sid, email in _emails(target).items()}
        counts["events"] = _merge_events(target, other, src, dst)
        counts["deliveries"] = _merge_deliveries(target, other, src, dst)
        counts["feedback"] = _merge_feedback(target, other, src, dst)
        counts["papers"] = _union(target, other, "papers", ("id",))
        counts["briefs"] = _union(target, other, "briefs", ("key",))
        counts["llm_calls"] = _union(target, other, "llm_calls",
                                     ("brief_key", "created", "model"), skip_id=True)
        counts["brief_hits"] = _union(target, other, "brief_hits",
                                      ("brief_key", "created", "model", "language"),
                                      skip_id=True)
        counts["brief_fallbacks"] = _union(target, other, "brief_fallbacks",
                                           ("brief_key", "created", "model", "language"),
                                           skip_id=True)
        counts["sources"] = 0
        for row in other.query("select * from sources"):
            old = next(iter(target.query("select last_fetched from sources where name = ?",
                                         [row["name"]])), None)
            if old is None or (row["last_fetched"] or "") > (old["last_fetched"] or ""):
                target.table("sources").upsert(row, pk="name")
                counts["sources"] += 1
        _max_counts(target, other, "forgotten_deliveries")
        _max_counts(target, other, "pruned_deliveries")
    applied = apply_tombstones(target)
    counts["erased"] = len(applied["erased"])
    counts["unsubscribed"] = len(applied["unsubscribed"])
    return counts


def apply_tombstones(db: Database) -> dict[str, list[str]]:
    """Erase every subscriber an erasure tombstone names (added before it), and unsubscribe
    every active or paused one an unsubscribe tombstone names (unless added or confirmed
    after it: a person who opted in again). Returns the
    addresses, by what was done: {"erased": [...], "unsubscribed": [...]}."""
    done: dict[str, list[str]] = {"erased": [], "unsubscribed": []}
    for sub, event, when in tombstone_matches(db):
        if event in ERASURES:
            if (sub["created"] or "") <= when:
                erase_row(db, sub, None, "", keep_counts=True, now=None)
                done["erased"].append(sub["email"])
        elif (sub["status"] in ("active", "paused") and (sub["created"] or "") <= when
              and (sub["confirmed_at"] or "") <= when):
            with transaction(db):
                db.execute("update subscribers set status = 'unsubscribed',"
                           " status_changed = ? where id = ?", [when, sub["id"]])
            done["unsubscribed"].append(sub["email"])
    return done


__all__ = ["apply_tombstones", "merge_state"]
