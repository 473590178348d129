"""arXiv: the API (one ``requests`` session, answers read with feedparser) for followed
authors and keywords, and arXiv's listing feeds for category subscriptions.

Queries are planned for all active subscribers together: authors are deduplicated and
batched into OR queries, keywords likewise, each restricted to the window since the last
successful fetch. Requests are paced at one per ``arxiv_delay`` seconds (at least 3, the
API's terms; only a loopback test server may be asked faster), with timeouts and
exponential backoff on 503s, errors and empty pages. One failing query is reported and does
not stop the others; the window does not move on until every query has succeeded, so its
papers come on the next run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
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
from newsletter.safety.deadline import Watchdog
from newsletter.text import untex

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


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def paper_from_entry(e: Any) -> Paper:
    """One ``<entry>`` of the API's Atom answer (as feedparser reads it) as a Paper."""
    short = str(e.id).split("arxiv.org/abs/")[-1]
    pid = short.rsplit("v", 1)[0] if "v" in short.split("/")[-1] else short
    primary = (e.get("arxiv_primary_category") or {}).get("term")
    tags = [t.get("term") for t in e.get("tags", []) if t.get("term")]
    cats = [primary] + [c for c in tags if c != primary] if primary else tags
    return Paper(
        id=pid,
        source="arxiv",
        title=" ".join(e.title.split()),
        authors=tuple(untex(a.get("name", "")) for a in e.get("authors", [])),
        abstract=" ".join(e.get("summary", "").split()),
        url=f"https://arxiv.org/abs/{pid}",
        pdf_url=f"https://arxiv.org/pdf/{pid}",
        doi=(e.get("arxiv_doi") or "").lower() or None,
        categories=tuple(cats),
        published=_when(e.published),
        updated=_when(e.updated) if e.get("updated") else None,
    )


_WATCHING = threading.local()  # the Watchdog of the request this thread is making


def _watched(adapter: Any) -> Any:
    """A requests adapter whose connections register, at each request, with the thread's
    current :class:`~newsletter.safety.deadline.Watchdog` (the watchdog reads ``conn.sock`` when
    it fires, so a connection opened or re-used later in the request is covered too)."""
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def register(conn: Any) -> None:
        dog = getattr(_WATCHING, "dog", None)
        if dog is not None:
            if dog.expired:  # no retry on a new connection once the time is up
                raise TimeoutError("total deadline passed")
            dog.add(conn)

    class Plain(HTTPConnection):  # type: ignore[misc]
        def request(self, *args: Any, **kwargs: Any) -> Any:
            register(self)
            return super().request(*args, **kwargs)

    class Secure(HTTPSConnection):  # type: ignore[misc]
        def request(self, *args: Any, **kwargs: Any) -> Any:
            register(self)
            return super().request(*args, **kwargs)

    class PlainPool(HTTPConnectionPool):  # type: ignore[misc]
        ConnectionCls = Plain

    class SecurePool(HTTPSConnectionPool):  # type: ignore[misc]
        ConnectionCls = Secure

    adapter.poolmanager.pool_classes_by_scheme = {"http": PlainPool, "https": SecurePool}
    return adapter


class ApiError(Exception):
    """An API request that failed after its retries."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Api:
    """The arXiv API over one requests session: timeouts on every request, retries with
    backoff (urllib3's ``Retry``: 429/5xx and connection errors, honouring
    Retry-After up to a minute), requests paced at least ``delay`` seconds apart, every
    attempt counted. ``timeout`` is a total deadline for one request, retries included
    (a :class:`~newsletter.safety.deadline.Watchdog`): a server that drips its answer, or stays
    silent, fails the request at ``timeout`` and the window is asked again next run."""

    RETRIES = 3

    def __init__(self, settings: Settings, timeout: float) -> None:
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        delay = effective_delay(settings)

        class PacedRetry(Retry):  # type: ignore[misc]
            def get_backoff_time(self) -> float:  # never sooner than the pacing allows
                return max(delay, float(super().get_backoff_time()))

            def get_retry_after(self, response: Any) -> float | None:  # at most a minute
                asked = super().get_retry_after(response)
                return None if asked is None else min(float(asked), 60.0)

        retry = PacedRetry(total=self.RETRIES, backoff_factor=max(delay, 0.05),
                           status_forcelist=(429, 500, 502, 503, 504),
                           allowed_methods=("GET",), raise_on_status=False)
        self.session = requests.Session()
        self.session.mount("http://", _watched(HTTPAdapter(max_retries=retry)))
        self.session.mount("https://", _watched(HTTPAdapter(max_retries=retry)))
        self.session.headers["User-Agent"] = "academichub-newsletter (+arxiv API)"
        self.url, self.delay, self.timeout = settings.arxiv_api_url, delay, timeout
        self.requests = 0
        self._last = 0.0

    def _get(self, params: dict[str, str]) -> bytes:
        import requests

        wait = self._last + self.delay - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        try:
            with Watchdog(self.timeout) as dog:  # connect, headers and body, retries too
                _WATCHING.dog = dog
                resp = self.session.get(self.url, params=params, timeout=self.timeout)
                body = resp.content
            if dog.expired:
                raise requests.exceptions.ReadTimeout("total deadline passed")
        except requests.exceptions.RequestException as e:
            self.requests += 1 + self.RETRIES  # urllib3 gave up after every retry
            if dog.expired:
                raise ApiError(f"timed out after {self.timeout:g} s") from e
            raise ApiError("timed out after retries" if "Timeout" in type(e).__name__
                           or "timed out" in str(e) else f"{type(e).__name__}: {e}") from e
        finally:
            _WATCHING.dog = None
            self._last = time.monotonic()
        retries = getattr(resp.raw, "retries", None)
        self.requests += 1 + len(retries.history if retries else ())
        if resp.status_code != 200:
            raise ApiError(f"HTTP {resp.status_code} after retries", resp.status_code)
        return body

    def results(self, query: str, limit: int = MAX_RESULTS_PER_QUERY,
                page_size: int = 200) -> Iterator[Paper]:
        """Every paper the query finds, page by page; an empty page before the total is
        reached is asked again (the API sometimes answers one), up to the retries."""
        import feedparser

        start, total, empty = 0, None, 0
        while start < min(limit, total if total is not None else limit):
            body = self._get({"search_query": query, "start": str(start),
                              "max_results": str(min(page_size, limit - start)),
                              "sortBy": "submittedDate", "sortOrder": "descending"})
            feed = feedparser.parse(body)
            if total is None:
                total = int(feed.feed.get("opensearch_totalresults", 0) or 0)
            if not feed.entries:
                empty += 1
                if start == 0 or empty > self.RETRIES:
                    if start:
                        raise ApiError("empty page after retries")
                    return
                continue
            empty = 0
            for entry in feed.entries:
                yield paper_from_entry(entry)
            start += len(feed.entries)


    def by_ids(self, ids: Sequence[str], batch: int = 20) -> Iterator[Paper]:
        """The papers with these arXiv ids (without version), ``batch`` ids a request."""
        import feedparser

        for start in range(0, len(ids), batch):
            chunk = list(ids[start:start + batch])
            feed = feedparser.parse(self._get({"id_list": ",".join(chunk),
                                               "max_results": str(len(chunk))}))
            for entry in feed.entries:
                if "arxiv.org/abs/" in str(entry.get("id", "")) and entry.get("title"):
                    yield paper_from_entry(entry)


def lookup(ids: Sequence[str], settings: Settings, timeout: float = 30.0
           ) -> tuple[list[Paper], list[str]]:
    """(papers found, one line per id that was not) through the API, paced as for fetch."""
    api = Api(settings, timeout)
    try:
        found = list(api.by_ids(list(ids)))
    except ApiError as e:
        return [], [f"arXiv API: {_describe(e)}"]
    got = {p.id for p in found}
    return found, [f"arxiv:{i}: not found on arXiv" for i in ids if i not in got]


def _describe(err: Exception) -> str:
    if isinstance(err, ApiError):
        return str(err)[:160]
    return f"{type(err).__name__}: {str(err)[:160]}"


def fetch(settings: Settings, subscribers: Iterable[Subscriber], since: datetime,
          until: datetime | None = None, timeout: float = 30.0,
          planned: tuple[list[Query], list[str]] | None = None) -> SourceResult:
    """New papers by the subscribers' authors and topics (or ``planned``: the queries and
    categories :func:`plan` made from them earlier)."""
    from newsletter.sources import feeds

    until = until or datetime.now(UTC)
    queries, categories = planned if planned is not None else plan(subscribers)
    papers: dict[str, Paper] = {}
    failures: list[str] = []
    api = Api(settings, timeout)
    for q in queries:
        try:
            for p in api.results(q.search_query(since, until)):
                papers.setdefault(p.id, p)
        except Exception as e:  # one failing query must not fail the others
            failures.append(f"{q.kind} query ({', '.join(q.terms[:2])}...): {_describe(e)}")
    base = settings.arxiv_rss_url.rstrip("/")
    listing_requests = 0
    for cat in categories:
        listing_requests += 1
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
        requests=api.requests + listing_requests,
        error=(f"{len(failures)} of {total} requests failed: " + "; ".join(failures))
        if failures else None,
        partial=bool(failures) and len(failures) < total,
        note=note,
    )
