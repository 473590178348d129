"""Source administration: switching sources on and off, and checking one by hand."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlite_utils import Database

from newsletter import sources, store
from newsletter.config import Settings
from newsletter.errors import NewsletterError


def set_source_enabled(db: Database, name: str, enabled: bool) -> dict[str, Any]:
    """Switch a source on or off; a catalogue feed is added on first enable."""
    state = store.source_state(db, name)
    if not state.get("kind"):
        if name in sources.BUILTIN:
            state = {"kind": name}
        elif name in sources.catalogue():
            entry = sources.catalogue()[name]
            state = {"kind": "feed", "url": entry["url"], "label": entry["label"]}
        else:
            raise NewsletterError(
                f"no source {name} - add it with \"newsletter sources add {name} URL\" or "
                "pick one from \"newsletter sources list --catalogue\"")
    fields = {k: v for k, v in state.items() if k != "name"}  # the row's key, passed apart
    store.save_source_state(db, name, **{**fields, "enabled": 1 if enabled else 0})
    return store.source_state(db, name)


def check_source(db: Database, name: str, settings: Settings, now: datetime) -> Any:
    """Fetch one source once and return what was parsed; stores nothing."""
    state = store.source_state(db, name)
    feed = state if state.get("kind") == "feed" else None
    since = now - timedelta(days=settings.first_issue_days)
    return sources.fetch(name, settings, {}, since, store.list_subscribers(db, "active"),
                         feed, until=now)
