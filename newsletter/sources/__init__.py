"""Where papers come from. Each source module exposes ``fetch(settings, state, since)``.

``state`` is what the store kept from the last fetch of that source (ETag, Last-Modified,
last success); the returned :class:`SourceResult` carries the papers and the new state.
Sources never talk to the database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from newsletter.config import Settings
from newsletter.models import SourceResult


def fetch(name: str, settings: Settings, state: dict[str, Any], since: datetime,
          subscribers: list[Any], feeds: dict[str, dict[str, Any]]) -> SourceResult:
    """Fetch one named source; never raises for a source failure, reports it instead."""
    try:
        if name == "sample":
            from newsletter.sources import sample

            return sample.fetch()
        if name == "arxiv":
            from newsletter.sources import arxiv

            return arxiv.fetch(settings, subscribers, since)
        if name in feeds:
            from newsletter.sources import feeds as feedmod

            return feedmod.fetch(name, feeds[name], state, settings)
        return SourceResult(name=name, error=f"unknown source {name!r} - see "
                            "\"newsletter sources list\"")
    except Exception as e:  # one bad source must not spoil the run
        return SourceResult(name=name, error=f"{type(e).__name__}: {e}")
