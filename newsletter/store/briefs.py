"""The brief cache and the log of every model call."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlite_utils import Database
from sqlite_utils.db import NotFoundError

from newsletter.store.db import _iso, transaction, utcnow


def get_brief(db: Database, key: str) -> dict[str, Any] | None:
    try:
        return dict(db.table("briefs").get(key))
    except NotFoundError:
        return None


def put_brief(db: Database, row: dict[str, Any]) -> None:
    with transaction(db):
        db.table("briefs").insert({**row, "created": _iso(utcnow())}, replace=True)


def log_llm_call(db: Database, row: dict[str, Any]) -> None:
    with transaction(db):
        db.table("llm_calls").insert({**row, "created": _iso(utcnow())})


def llm_spend_since(db: Database, since: datetime) -> float:
    got = db.execute("select coalesce(sum(cost_usd), 0) from llm_calls where created >= ?",
                     [_iso(since)]).fetchone()[0]
    return float(got)
