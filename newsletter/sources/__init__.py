"""Where papers come from: ``arxiv`` (API + listing feeds), ``sample`` (the bundled corpus),
and any RSS/Atom feed by name (added with ``sources add`` or switched on from the catalogue
of well-known journals and preprint servers in ``data/feeds.toml``).

Each source returns a :class:`SourceResult`; sources never talk to the database and never
raise for a failing source: they report it.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from newsletter.config import Settings
from newsletter.models import SourceResult, Subscriber

if TYPE_CHECKING:
    from newsletter.sources.arxiv import Query

ArxivPlan = tuple[list["Query"], list[str]]  # (API queries, listing-feed categories)

BUILTIN = ("arxiv", "sample")


@lru_cache(maxsize=1)
def catalogue() -> dict[str, dict[str, str]]:
    """Well-known feeds a user can switch on by name."""
    text = resources.files("newsletter").joinpath("data/feeds.toml").read_text("utf-8")
    return {name: {"name": name, **entry} for name, entry in tomllib.loads(text).items()}


def fetch(name: str, settings: Settings, state: dict[str, Any], since: datetime,
          subscribers: Iterable[Subscriber], feed: dict[str, Any] | None = None,
          until: datetime | None = None, timeout: float | None = None,
          planned: ArxivPlan | None = None) -> SourceResult:
    """Fetch one named source; ``timeout`` (default the fetch_timeout setting) is the total
    time one request may take; a failure comes back as ``SourceResult.error``. Every
    paper's text is stripped of control and invisible characters and its links kept only
    when they are http(s) (see :mod:`newsletter.safety.untrusted`). ``planned``: arXiv's
    queries made beforehand from the subscribers (:func:`arxiv_plan`), instead of
    ``subscribers``."""
    import dataclasses

    from newsletter.safety.untrusted import clean_record

    limit = settings.fetch_timeout if timeout is None else timeout
    result = _fetch(name, settings, state, since, subscribers, feed, until, limit, planned)
    papers = tuple(clean_record(p) for p in result.papers)
    return dataclasses.replace(result, papers=papers) if papers != result.papers else result


def _fetch(name: str, settings: Settings, state: dict[str, Any], since: datetime,
           subscribers: Iterable[Subscriber], feed: dict[str, Any] | None,
           until: datetime | None, timeout: float, planned: ArxivPlan | None
           ) -> SourceResult:
    try:
        if name == "sample":
            from newsletter.sources import sample

            return sample.fetch()
        if name == "arxiv":
            from newsletter.sources import arxiv

            return arxiv.fetch(settings, subscribers, since, until, timeout=timeout,
                               planned=planned)
        feed = feed or catalogue().get(name)
        if feed and feed.get("url"):
            from newsletter.sources import feeds

            return feeds.fetch(name, feed, state, settings, timeout=timeout)
        return SourceResult(name=name, error=f"unknown source {name!r} - see "
                            "\"newsletter sources list\"")
    except Exception as e:  # one bad source must not spoil the run
        return SourceResult(name=name, error=f"{type(e).__name__}: {e}")


def arxiv_plan(subscribers: Iterable[Subscriber]) -> ArxivPlan:
    """The arXiv queries and listing categories these subscribers' filters need (read in
    one pass: the subscribers may be a stream from the database)."""
    from newsletter.sources import arxiv

    return arxiv.plan(subscribers)


def plan_key(planned: ArxivPlan) -> str:
    """A digest of an arXiv plan: a run whose subscribers need other queries fetches again."""
    queries, categories = planned
    text = repr(([(q.kind, q.terms) for q in queries], categories))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
