"""Tombstones: what a merge needs so that it never brings back a person who was erased, or
resubscribes one who unsubscribed.

Forgetting, expiring or removing a subscriber, and unsubscribing, leave one row: a keyed hash
of the address (HMAC-SHA256 with this list's random ``tombstone_keys`` key, so the table
alone does not say who it was), the event and its time. Every merge copies the other side's
tombstones and keys and applies them all: an erased address is erased again (unless it was
added anew after the erasure), and an unsubscribed one is unsubscribed again (unless they
confirmed anew after unsubscribing).
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from datetime import datetime
from typing import Any

from sqlite_utils import Database

from newsletter.store.db import iso, transaction, utcnow

ERASURES = ("forgotten", "expired", "removed")


def _fold(email: str) -> str:
    return email.strip().lower()


def _digest(key: str, email: str) -> str:
    return hmac.new(bytes.fromhex(key), _fold(email).encode(), hashlib.sha256).hexdigest()


def _own_key(conn: sqlite3.Connection) -> tuple[str, str]:
    """This list's key: the first one it made (others arrive by merges)."""
    row = conn.execute("select id, key from tombstone_keys order by rowid limit 1").fetchone()
    return row[0], row[1]


def insert_tombstone(conn: sqlite3.Connection, email: str, event: str,
                      now: datetime | None = None) -> None:
    """Leave a tombstone for EMAIL inside the caller's transaction (a newer one replaces an
    older one for the same address)."""
    key_id, key = _own_key(conn)
    conn.execute(
        "insert into tombstones (digest, key_id, event, created) values (?, ?, ?, ?)"
        " on conflict (digest) do update set event = excluded.event,"
        " created = excluded.created where excluded.created >= tombstones.created",
        (_digest(key, email), key_id, event, iso(now or utcnow())))


def tombstone_for(db: Database, email: str) -> dict[str, Any] | None:
    """The tombstone matching EMAIL (event and created), if any."""
    for key_id, key in db.execute("select id, key from tombstone_keys").fetchall():
        row = db.execute("select event, created from tombstones where digest = ?"
                         " and key_id = ?", [_digest(key, email), key_id]).fetchone()
        if row:
            return {"event": row[0], "created": row[1]}
    return None


def tombstone_matches(db: Database) -> list[tuple[dict[str, Any], str, str]]:
    """(subscriber row, tombstone event, tombstone time) for every subscriber a tombstone
    names, the newest tombstone per subscriber."""
    keys = db.execute("select id, key from tombstone_keys").fetchall()
    stones: dict[tuple[str, str], tuple[str, str]] = {
        (r[0], r[1]): (r[2], r[3]) for r in db.execute(
            "select key_id, digest, event, created from tombstones")}
    if not stones:
        return []
    found = []
    for sub in db.query("select id, email, status, created, confirmed_at from subscribers"):
        hits = [stones[(key_id, d)] for key_id, key in keys
                if (key_id, d := _digest(key, sub["email"])) in stones]
        if hits:
            event, when = max(hits, key=lambda h: h[1])
            found.append((sub, event, when))
    return found


def merge_tombstones(target: Database, other: Database) -> int:
    """Copy the other list's tombstone keys and tombstones into ``target``; returns how many
    tombstones were new or newer."""
    added = 0
    with transaction(target):
        for row in other.query("select * from tombstone_keys"):
            target.execute("insert or ignore into tombstone_keys (id, key, created)"
                           " values (?, ?, ?)", [row["id"], row["key"], row["created"]])
        for row in other.query("select * from tombstones"):
            cur = target.execute(
                "insert into tombstones (digest, key_id, event, created) values (?,?,?,?)"
                " on conflict (digest) do update set event = excluded.event,"
                " created = excluded.created where excluded.created > tombstones.created",
                [row["digest"], row["key_id"], row["event"], row["created"]])
            added += cur.rowcount
    return added


__all__ = ["ERASURES", "merge_tombstones", "tombstone_for", "tombstone_matches"]
