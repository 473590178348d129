"""What the last fetch of each source left behind (ETag, window, status)."""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database
from sqlite_utils.db import NotFoundError

from newsletter.errors import NewsletterError
from newsletter.store.db import transaction


def source_state(db: Database, name: str) -> dict[str, Any]:
    try:
        return dict(db.table("sources").get(name))
    except NotFoundError:
        return {}


def save_source_state(db: Database, name: str, **fields: Any) -> None:
    with transaction(db):
        db.table("sources").upsert({"name": name, **fields}, pk="name")


def add_feed(db: Database, name: str, url: str, label: str) -> None:
    if source_state(db, name).get("kind"):
        raise NewsletterError(f"source {name} already exists - use \"newsletter sources "
                              "remove\" first to replace it")
    save_source_state(db, name, kind="feed", url=url, label=label, enabled=1)


def list_sources(db: Database) -> list[dict[str, Any]]:
    return [dict(r) for r in db.table("sources").rows_where(order_by="name")]


def remove_source(db: Database, name: str) -> None:
    if not source_state(db, name):
        raise NewsletterError(f"no source {name} - see \"newsletter sources list\"")
    with transaction(db):
        db.conn.execute("delete from sources where name = ?", (name,))
