"""arXiv: the API (through the ``arxiv`` package) for followed authors and keywords, and
arXiv's listing feeds for category subscriptions.

Queries are planned for all active subscribers together: authors are deduplicated and
batched into OR queries, keywords likewise, each restricted to the window since the last
successful fetch. Requests are paced at one per ``arxiv_delay`` seconds (at least 3, the
API's terms; only a loopback test server may be asked faster), with timeouts and
exponential backoff on 503s, errors and empty pages. One failing query is reported and does
not stop the others; the window does not move on until every query has succeeded, so its
papers come on the next run.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from newsletter.config import Settings
from newsletter.lists.addresses import is_loopback
from newsletter.match import Term, compile_query, name_key, positive_terms
from newsletter.models import Paper, SourceResult, Subscriber
from newsletter.ops import schedule

AUTHOR_BATCH = 20  # authors per OR query: long queries are answered reliably up to ~25
KEYWORD_BATCH = 15
MAX_RESULTS_PER_QUERY = 2000
MIN_DELAY = 3.0


@dataclass(frozen=True)
class Query:
    kind: str  # "authors" or "keywords"
    terms: tuple[str, ...]

    def search_query(self, since: datetime, until: datetime) -> str:
        field = "au" if self.kind == "authors" else "all"
        ors = " OR ".join(f'{field}:"{t}"' if " " in t else f"{field}:{t}" for t in self.terms)
        window = f"submittedDate:[{since:%Y%m%d%H%M} TO {until:%Y%m%d%H%M}]"
        return f"({ors}) AND {window}"


def _author_term(name: str) -> str:
    return " ".join(t for t in name_key(name))


def plan(subscribers: Iterable[Subscriber], author_batch: int = AUTHOR_BATCH,
         keyword_batch: int = KEYWORD_BATCH) -> tuple[list[Query], list[str]]:
    """(API queries, listing-feed categories) covering every active subscriber's filters."""
    authors: dict[str, str] = {}
    keywords: dict[str, str] = {}
    categories: dict[str, str] = {}
    for sub in subscribers:
        for a in sub.authors:
            authors.setdefault(_author_term(a), a)
        for topic in sub.topics:
            for term in positive_terms(compile_query(topic)):
                if isinstance(term, Term) and not term.prefix and term.text:
                    keywords.setdefault(term.text, term.text)
        for c in sub.categories:
            feed = c.split(".*")[0] if c.endswith(".*") else c
            categories.setdefault(feed.lower(), feed)
    author_list, keyword_list = sorted(authors), sorted(keywords)
    queries = [Query("authors", tuple(author_list[i:i + author_batch]))
               for i in range(0, len(author_list), author_batch)]
    queries += [Query("keywords", tuple(keyword_list[i:i + keyword_batch]))
                for i in range(0, len(keyword_list), keyword_batch)]
    return queries, sorted(categories.values())


def effective_delay(settings: Settings) -> float:
    if is_loopback(urlsplit(settings.arxiv_api_url).hostname or ""):
        return max(0.0, settings.arxiv_delay)
    return max(MIN_DELAY, settings.arxiv_delay)


def paper_from_result(r: Any) -> Paper:
    short = r.get_short_id()
    pid = short.rsplit("v", 1)[0] if "v" in short.split("/")[-1] else short
    cats = [r.primary_category] + [c for c in r.categories if c != r.primary_category]
    return Paper(
        id=pid,
        source="arxiv",
        title=" ".join(r.title.split()),
        authors=tuple(a.name for a in r.authors),
        abstract=" ".join(r.summary.split()),
        url=f"https://arxiv.org/abs/{pid}",
        pdf_url=f"https://arxiv.org/pdf/{pid}",
        doi=(r.doi or "").lower() or None,
        categories=tuple(cats),
        published=r.published.astimezone(UTC),
        updated=r.updated.astimezone(UTC) if r.updated else None,
    )


def _client(settings: Settings, timeout: float, counter: list[int]) -> Any:
    import arxiv
    import requests

    class PoliteClient(arxiv.Client):  # type: ignore[misc]
        query_url_format = settings.arxiv_api_url.rstrip("?") + "?{}"

        def __init__(self) -> None:
            super().__init__(page_size=200, delay_seconds=effective_delay(settings),
                             num_retries=3)
            session = requests.Session()
            original = session.get

            def get(url: str, **kw: Any) -> Any:
                counter[0] += 1
                return original(url, timeout=timeout, **kw)

            session.get = get  # type: ignore[method-assign,assignment]
            self._session = session

        def _parse_feed(self, url: str, first_page: bool = True, _try_index: int = 0) -> Any:
            try:
                return self._Client__try_parse_feed(url, first_page=first_page,
                                                    try_index=_try_index)
            except (arxiv.HTTPError, arxiv.UnexpectedEmptyPageError,
                    requests.exceptions.RequestException):
                if _try_index >= self.num_retries:
                    raise
                time.sleep(max(self.delay_seconds, 0.05) * 2 ** _try_index)  # backoff
                return self._parse_feed(url, first_page, _try_index + 1)

    return PoliteClient()


def _describe(err: Exception) -> str:
    status = getattr(err, "status", None)
    if status:
        return f"HTTP {status} after retries"
    name = type(err).__name__
    if "Timeout" in name:
        return "timed out after retries"
    return f"{name}: {str(err)[:160]}"


def fetch(settings: Settings, subscribers: Iterable[Subscriber], since: datetime,
          until: datetime | None = None, timeout: float = 30.0) -> SourceResult:
    import arxiv

    from newsletter.sources import feeds

    until = until or datetime.now(UTC)
    queries, categories = plan(subscribers)
    counter = [0]
    papers: dict[str, Paper] = {}
    failures: list[str] = []
    client = _client(settings, timeout, counter)
    for q in queries:
        search = arxiv.Search(query=q.search_query(since, until),
                              max_results=MAX_RESULTS_PER_QUERY,
                              sort_by=arxiv.SortCriterion.SubmittedDate)
        try:
            for r in client.results(search):
                p = paper_from_result(r)
                papers.setdefault(p.id, p)
        except Exception as e:  # one failing query must not fail the others
            failures.append(f"{q.kind} query ({', '.join(q.terms[:2])}...): {_describe(e)}")
    base = settings.arxiv_rss_url.rstrip("/")
    for cat in categories:
        counter[0] += 1
        try:
            resp = feeds.get(f"{base}/{cat}", {}, settings, timeout, 20_000_000)
            for p, kind in feeds.parse_arxiv_listing(resp.body, resp.content_type):
                if kind in ("new", "cross"):  # replacements were sent when they were new
                    papers.setdefault(p.id, p)
        except (feeds.FetchFailed, ValueError) as e:
            failures.append(f"listing {cat}: {e}")
    total = len(queries) + len(categories)
    note = None
    if not failures and not papers and total:
        eastern = until.astimezone(ZoneInfo("America/New_York"))
        holidays = schedule.parse_holidays(settings.arxiv_holidays)
        if eastern.weekday() in (4, 5):
            note = "quiet: arXiv announces nothing on Friday and Saturday"
        elif not schedule.arxiv_announces(eastern.date(), holidays):
            note = "quiet: no arXiv announcement today (holiday)"
        else:
            note = "quiet: no new papers in the window"
    return SourceResult(
        name="arxiv",
        papers=tuple(papers.values()),
        requests=counter[0],
        error=(f"{len(failures)} of {total} requests failed: " + "; ".join(failures))
        if failures else None,
        partial=bool(failures) and len(failures) < total,
        note=note,
    )
