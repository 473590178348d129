"""The subscriber row lookup every store module shares (by address, case-insensitive)."""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from newsletter.errors import SubscriberNotFound


def subscriber_row(db: Database, email: str) -> dict[str, Any]:
    rows = list(db.table("subscribers").rows_where("lower(email) = lower(?)", [email.strip()],
                                                   limit=1))
    if not rows:
        raise SubscriberNotFound(
            f"no subscriber {email.strip()} - see \"newsletter subscribers list\""
        )
    return rows[0]
