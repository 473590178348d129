"""Papers by DOI, for seed papers: Crossref's REST API first, OpenAlex for what it lacks.

Crossref (``GET /works/{doi}``) has the title, authors, venue and date of nearly every DOI
and an abstract for some; OpenAlex (``GET /works/doi:{doi}``) often has the abstract (as an
inverted index) when Crossref has none, and answers when Crossref does not know the DOI.
Every request has a total deadline and a size cap; nothing here touches the database.
"""

from __future__ import annotations

import html
import re
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from newsletter.config import Settings
from newsletter.models import Paper

MAX_BYTES = 4 * 1024 * 1024
_TAG = re.compile(r"<[^>]+>")


class DoiLookupError(Exception):
    """A DOI that could not be looked up (network, HTTP status, or not JSON)."""


def _get_json(session: Any, url: str, deadline: float) -> dict[str, Any] | None:
    """The JSON answer at ``url`` (None for 404), read within ``deadline`` (monotonic)."""
    import json

    left = deadline - time.monotonic()
    if left <= 0:
        raise DoiLookupError("deadline passed")
    try:
        with session.get(url, timeout=(min(left, 10.0), min(left, 20.0)), stream=True) as r:
            if r.status_code == 404:
                return None
            if r.status_code != 200:
                raise DoiLookupError(f"HTTP {r.status_code}")
            body = bytearray()
            for chunk in r.iter_content(65536):
                body += chunk
                if len(body) > MAX_BYTES or time.monotonic() > deadline:
                    raise DoiLookupError("answer too large or too slow")
        data = json.loads(bytes(body))
    except DoiLookupError:
        raise
    except Exception as e:  # requests' errors and bad JSON alike: one line for the caller
        raise DoiLookupError(f"{type(e).__name__}: {str(e)[:120]}") from e
    return data if isinstance(data, dict) else None


def _text(value: Any) -> str:
    return " ".join(html.unescape(_TAG.sub(" ", str(value or ""))).split())


def _date(parts: Any) -> datetime | None:
    try:
        y, m, d = ([*parts["date-parts"][0], 1, 1])[:3]
        return datetime(int(y), int(m or 1), int(d or 1), tzinfo=UTC)
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def from_crossref(doi: str, message: dict[str, Any]) -> Paper:
    """A Paper from Crossref's ``message`` for a work."""
    title = _text((message.get("title") or [""])[0])
    authors = tuple(_text(f"{a.get('given', '')} {a.get('family', '')}") or _text(a.get("name"))
                    for a in message.get("author") or [] if isinstance(a, dict))
    when = next((d for d in (_date(message.get(k) or {}) for k in
                             ("published-online", "published-print", "issued", "created"))
                 if d), datetime(1970, 1, 1, tzinfo=UTC))
    venue = _text((message.get("container-title") or [""])[0]) or None
    abstract = _text(re.sub(r"<jats:title>.*?</jats:title>", " ", str(message.get("abstract")
                                                                     or ""), flags=re.S))
    return Paper(id=doi, source="doi", title=title, authors=tuple(a for a in authors if a),
                 abstract=abstract, url=f"https://doi.org/{doi}", published=when,
                 doi=doi, venue=venue)


def from_openalex(doi: str, work: dict[str, Any]) -> Paper:
    """A Paper from an OpenAlex work (its abstract rebuilt from the inverted index)."""
    words: dict[int, str] = {}
    for word, places in (work.get("abstract_inverted_index") or {}).items():
        for n in places if isinstance(places, list) else []:
            if isinstance(n, int) and 0 <= n < 20_000:
                words[n] = str(word)
    abstract = _text(" ".join(words[n] for n in sorted(words)))
    authors = tuple(_text((a.get("author") or {}).get("display_name"))
                    for a in work.get("authorships") or [] if isinstance(a, dict))
    try:
        when = datetime.fromisoformat(str(work.get("publication_date"))).replace(tzinfo=UTC)
    except ValueError:
        when = datetime(1970, 1, 1, tzinfo=UTC)
    source = ((work.get("primary_location") or {}).get("source") or {})
    return Paper(id=doi, source="doi", title=_text(work.get("title") or
                                                      work.get("display_name")),
                 authors=tuple(a for a in authors if a), abstract=abstract,
                 url=f"https://doi.org/{doi}", published=when, doi=doi,
                 venue=_text(source.get("display_name")) or None)


def lookup(dois: list[str], settings: Settings, budget: float = 60.0
           ) -> tuple[list[Paper], list[str]]:
    """(papers found, one line per DOI that was not) for lower-case DOIs."""
    import requests

    session = requests.Session()
    session.headers["User-Agent"] = "academichub-newsletter (seed papers)"
    deadline = time.monotonic() + budget
    found, missing = [], []
    for doi in dois:
        paper: Paper | None = None
        why = "not found in Crossref or OpenAlex"
        try:
            data = _get_json(session, f"{settings.crossref_url.rstrip('/')}/works/"
                             f"{quote(doi, safe='/')}", deadline)
            if data and isinstance(data.get("message"), dict):
                paper = from_crossref(doi, data["message"])
        except DoiLookupError as e:
            why = f"Crossref: {e}"
        if paper is None or not paper.abstract:
            try:
                work = _get_json(session, f"{settings.openalex_url.rstrip('/')}/works/doi:"
                                 f"{quote(doi, safe='/')}", deadline)
                if work and (work.get("title") or work.get("display_name")):
                    other = from_openalex(doi, work)
                    paper = other if paper is None else Paper(**{
                        **paper.__dict__, "abstract": other.abstract})
            except DoiLookupError as e:
                why = f"{why}; OpenAlex: {e}" if paper is None else why
        if paper is not None and paper.title:
            found.append(paper)
        else:
            missing.append(f"doi:{doi}: {why}")
    return found, missing
