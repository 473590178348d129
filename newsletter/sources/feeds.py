"""Journal and preprint feeds (RSS 0.9x/1.0/2.0 and Atom): one polite conditional GET, then
one clean record per paper, whatever the publisher's habits.

Publishers disagree on almost everything: authors come as repeated ``dc:creator``, as one
comma-separated string, as bioRxiv's "Last, F., Last2, F. M." or only inside the
description ("Author(s): ..."); the DOI sits in ``prism:doi``, ``dc:identifier``, an Atom id
"info:doi/...", a doi.org link or the description; dates are ``pubDate``, ``dc:date`` or only
"Publication date: ..." text; abstracts carry volume/issue lines and other boilerplate. The
functions here turn all of that into :class:`~newsletter.models.Paper` records.

No database and no LLM here: :func:`fetch` returns a :class:`SourceResult` and never raises
for a source failure; :func:`parse` is pure.
"""

from __future__ import annotations

import hashlib
import html
import http.client
import io
import os
import re
import ssl
import time
import unicodedata
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote, urlsplit

import feedparser

from newsletter.config import Settings
from newsletter.models import Paper, SourceResult
from newsletter.safety.deadline import Watchdog
from newsletter.text import untex

VERSION = "0.1"
ACCEPT = ("application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
          "application/xml;q=0.8, text/xml;q=0.8, */*;q=0.1")


class FeedError(ValueError):
    """The document could not be turned into papers (one line, for the fetch report)."""


class NotAFeed(FeedError):
    """The server answered with something that is not RSS or Atom (a login page, JSON...)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"not a feed: the response is {what}")
        self.what = what


# --- fetch -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    status: int
    url: str
    content_type: str
    etag: str | None
    last_modified: str | None
    body: bytes


class FetchFailed(Exception):
    pass


def user_agent(settings: Settings) -> str:
    """``AcademicHub-newsletter/0.1 (+mailto:...)`` with the sender's address, if it has one."""
    addr = parseaddr(settings.from_addr or "")[1]
    if "@" in addr:
        return f"AcademicHub-newsletter/{VERSION} (+mailto:{addr})"
    return f"AcademicHub-newsletter/{VERSION}"


def fetch(name: str, feed: dict[str, Any], state: dict[str, Any], settings: Settings,
          timeout: float = 20.0, max_bytes: int = 10_000_000) -> SourceResult:
    """Fetch one configured feed (``{"name", "url", "label"}``) with a conditional GET.

    Never raises for a source failure: HTTP errors, timeouts, HTML pages and unparseable
    documents come back as ``SourceResult.error``. On success ``state`` holds the new
    ``etag`` / ``last_modified`` (None when the server sent none) and, for a malformed feed
    whose complete entries were salvaged, a ``warning``.
    """
    url = ""
    try:
        url = str(feed.get("url") or "").strip()
        if not url:
            return SourceResult(name=name, error=f"feed {name} has no url - re-add it with "
                                "\"newsletter sources add NAME URL\"")
        label = str(feed.get("label") or name)
        try:
            resp = get(url, state, settings, timeout, max_bytes)
        except FetchFailed as e:
            return SourceResult(name=name, error=str(e), requests=1)
        if resp.status == 304:
            kept = {"etag": state.get("etag"), "last_modified": state.get("last_modified")}
            return SourceResult(name=name, not_modified=True, requests=1, state=kept)
        try:
            papers, warning = _parse(resp.body, name, label, resp.content_type, resp.url)
        except NotAFeed as e:
            return SourceResult(name=name, requests=1,
                                error=f"not a feed: {url} returned {e.what} (check the URL)")
        except FeedError as e:
            return SourceResult(name=name, requests=1, error=f"{e} ({url})")
        new_state: dict[str, Any] = {"etag": resp.etag, "last_modified": resp.last_modified}
        if warning:
            new_state["warning"] = warning
        return SourceResult(name=name, papers=tuple(papers), requests=1, state=new_state)
    except Exception as e:  # a bug or a surprise must not spoil the other sources
        return SourceResult(name=name, requests=1,
                            error=_one_line(f"{type(e).__name__}: {e} ({url})"))


def get(url: str, state: dict[str, Any], settings: Settings, timeout: float,
         max_bytes: int) -> Response:
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise FetchFailed(f"cannot fetch {url}: only http and https feed URLs are supported")
    request = urllib.request.Request(url, headers=_request_headers(state, settings))
    deadline = time.monotonic() + timeout
    timed_out = f"timed out after {timeout:.3g} s ({url})"
    with Watchdog(timeout) as dog:
        try:
            response = _get(request, url, dog, max_bytes, deadline, timed_out)
            if dog.expired:  # the shut socket read as a (truncated) end of the body
                raise FetchFailed(timed_out)
            return response
        except FetchFailed:
            if dog.expired:
                raise FetchFailed(timed_out) from None
            raise
        except Exception:
            if dog.expired:  # the watchdog shut the socket: a total-deadline timeout
                raise FetchFailed(timed_out) from None
            raise


def _opener(dog: Watchdog) -> urllib.request.OpenerDirector:
    """urllib with every connection (redirects too) watched by ``dog``."""
    def tracked(cls: type[http.client.HTTPConnection]) -> Any:
        def make(*args: Any, **kwargs: Any) -> http.client.HTTPConnection:
            conn = cls(*args, **kwargs)
            conn._create_connection = dog.connector()  # type: ignore[attr-defined]
            return dog.add(conn)  # conn.sock when the time is up: the TLS one for https
        return make

    class Plain(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(tracked(http.client.HTTPConnection), req)

    class Secure(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(tracked(http.client.HTTPSConnection), req,
                                context=ssl.create_default_context())

    return urllib.request.build_opener(Plain, Secure)


def _get(request: urllib.request.Request, url: str, dog: Watchdog, max_bytes: int,
         deadline: float, timed_out: str) -> Response:
    try:
        with _opener(dog).open(request, timeout=dog.remaining()) as resp:
            length = resp.headers.get("Content-Length") or ""
            if length.isdigit() and int(length) > max_bytes:
                raise FetchFailed(_too_large(max_bytes, url))
            body = _read_capped(resp, max_bytes, deadline, timed_out, url)
            encoding = (resp.headers.get("Content-Encoding") or "").strip().lower()
            if encoding in ("gzip", "x-gzip", "deflate"):
                body = _decompress(body, max_bytes, url)
            return Response(resp.status, resp.geturl() or url,
                             resp.headers.get("Content-Type") or "",
                             resp.headers.get("ETag"), resp.headers.get("Last-Modified"), body)
    except FetchFailed:
        raise
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 304:
            return Response(304, url, "", None, None, b"")
        hint = ""
        if e.code in (404, 410):
            hint = " (check the URL)"
        elif e.code in (429, 503) and (e.headers.get("Retry-After") or "").strip():
            hint = f" (retry after {e.headers['Retry-After'].strip()})"
        raise FetchFailed(f"HTTP {e.code} from {url}{hint}") from None
    except (http.client.HTTPException, OSError, ValueError) as e:
        raise _failure(e, url, timed_out) from None


def _request_headers(state: dict[str, Any], settings: Settings) -> dict[str, str]:
    """What we accept, and the validators of the last answer (so it can say 304)."""
    headers = {"User-Agent": user_agent(settings), "Accept": ACCEPT,
               "Accept-Encoding": "gzip"}
    if state.get("etag"):
        headers["If-None-Match"] = str(state["etag"])
    if state.get("last_modified"):
        headers["If-Modified-Since"] = str(state["last_modified"])
    return headers


def _failure(e: Exception, url: str, timed_out: str) -> FetchFailed:
    """One line that says what went wrong on the way to ``url``."""
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, TimeoutError):
        return FetchFailed(timed_out)
    if isinstance(e, urllib.error.URLError):
        if isinstance(reason, ConnectionRefusedError):
            return FetchFailed(f"connection refused by {urlsplit(url).netloc} ({url})")
        if isinstance(reason, ssl.SSLError):
            return FetchFailed(_one_line(f"TLS error from {url}: {reason}"))
        text = getattr(reason, "strerror", None) or str(reason)
        return FetchFailed(_one_line(f"cannot reach {url}: {text}"))
    if isinstance(e, http.client.RemoteDisconnected):
        return FetchFailed(f"{url} closed the connection without answering")
    if isinstance(e, http.client.IncompleteRead):
        return FetchFailed(f"{url} closed the connection mid-response")
    return FetchFailed(_one_line(f"cannot read {url}: {type(e).__name__}: {e}"))


def _read_capped(resp: Any, max_bytes: int, deadline: float, timed_out: str, url: str
                 ) -> bytes:
    """Read at most ``max_bytes + 1`` bytes, within the overall deadline."""
    chunks: list[bytes] = []
    total = 0
    # read1 returns after one receive, so a server that trickles bytes meets the deadline
    read = getattr(resp, "read1", None) or resp.read
    while True:
        if time.monotonic() > deadline:
            raise FetchFailed(timed_out)
        chunk = read(min(65536, max_bytes + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise FetchFailed(_too_large(max_bytes, url))


def _decompress(body: bytes, max_bytes: int, url: str) -> bytes:
    inflater = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header, detected
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as e:
        raise FetchFailed(f"corrupt compressed body from {url} ({e})") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise FetchFailed(_too_large(max_bytes, url))
    return out


def _too_large(max_bytes: int, url: str) -> str:
    return f"feed larger than {max_bytes / 1_000_000:g} MB ({url})"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- parse -------------------------------------------------------------------------------


def parse(data: bytes, name: str, label: str, content_type: str = "application/xml"
          ) -> tuple[list[Paper], str | None]:
    """Papers of a feed document, and a warning when the feed was malformed but complete
    entries could be salvaged. Pure, no network.

    Raises :class:`NotAFeed` for an HTML page (or anything that is not RSS/Atom) and
    :class:`FeedError` for a malformed document with nothing to salvage.
    """
    return _parse(data, name, label, content_type, None)


def parse_arxiv_listing(data: bytes, content_type: str = "application/rss+xml"
                        ) -> list[tuple[Paper, str]]:
    """arXiv's 2024+ listing feed (rss.arxiv.org/rss/<category>): each paper with its
    announce type: ``new``, ``cross``, ``replace`` or ``replace-cross``."""
    entries, _ = _entries(data, content_type, None)
    out: list[tuple[Paper, str]] = []
    seen: set[str] = set()
    for entry in entries:
        paper = _paper(entry, "arxiv", None)
        if paper is None or paper.id in seen:
            continue
        seen.add(paper.id)
        out.append((paper, _announce_type(entry)))
    return out


def _parse(data: bytes, name: str, label: str | None, content_type: str,
           base_url: str | None) -> tuple[list[Paper], str | None]:
    entries, warning = _entries(data, content_type, base_url)
    papers: list[Paper] = []
    seen: set[str] = set()
    untitled = 0
    for entry in entries:
        paper = _paper(entry, name, label)
        if paper is None:
            untitled += 1
        elif paper.id not in seen:
            seen.add(paper.id)
            papers.append(paper)
    if untitled:
        note = f"skipped {untitled} {'entry' if untitled == 1 else 'entries'} without a title"
        warning = f"{warning}; {note}" if warning else note
    return papers, warning


def _entries(data: bytes, content_type: str, base_url: str | None
             ) -> tuple[list[Any], str | None]:
    """feedparser's entries, with the not-a-feed and malformed-feed decisions made."""
    if not data.strip():
        raise NotAFeed("an empty response")
    headers = {"content-type": content_type or "application/xml"}
    if base_url:
        headers["content-location"] = base_url
    # a stream, never the bytes: feedparser would try to open bytes as a local file name
    doc = feedparser.parse(io.BytesIO(data), response_headers=headers)
    entries = list(doc.get("entries") or [])
    version = doc.get("version") or ""
    exc = doc.get("bozo_exception") if doc.get("bozo") else None
    harmless = exc is None or isinstance(exc, feedparser.ThingsNobodyCaresAboutButMe)
    if not entries:
        if _looks_like_html(data, content_type) and (not version or not harmless):
            raise NotAFeed("an HTML page")
        if not version:
            kind = (content_type or "").split(";")[0].strip() or "unknown"
            raise NotAFeed(f"{kind} content, not RSS or Atom")
        if not harmless:
            raise FeedError(f"malformed feed: {_exception_text(exc)}")
        return [], None
    if harmless:
        return entries, None
    complete = _complete_entries(entries, data, doc.get("encoding"))
    if not complete:
        raise FeedError(f"malformed feed: {_exception_text(exc)}")
    n, dropped = len(complete), len(entries) - len(complete)
    warning = (f"malformed feed, salvaged {n} {'entry' if n == 1 else 'entries'} "
               f"({_exception_text(exc)})")
    if dropped:
        warning += f"; dropped {dropped} incomplete"
    return complete, warning


def _complete_entries(entries: list[Any], data: bytes, encoding: str | None) -> list[Any]:
    """In a malformed document, the entries whose closing tag was seen (a truncated file
    leaves its last entry half-read) and that have a title."""
    try:
        text = data.decode(encoding or "utf-8", "replace")
    except LookupError:
        text = data.decode("latin-1")
    closed = len(re.findall(r"</(?:[\w.-]+:)?(?:item|entry)\s*>", text, re.IGNORECASE))
    return [e for e in entries[:closed] if (e.get("title") or "").strip()]


def _looks_like_html(data: bytes, content_type: str) -> bool:
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml"):
        return True
    head = data[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<html" in head[:512]


def _exception_text(exc: Any) -> str:
    if exc is None:
        return "unknown error"
    get_message = getattr(exc, "getMessage", None)
    line = getattr(exc, "getLineNumber", None)
    if callable(get_message) and callable(line):  # xml.sax.SAXParseException
        try:
            return _one_line(f"{get_message()} at line {line()}, column "
                             f"{exc.getColumnNumber()}", 200)
        except Exception:  # pragma: no cover - defensive, SAX locators vary
            pass
    return _one_line(str(exc) or type(exc).__name__, 200)


def _paper(entry: Any, name: str, label: str | None) -> Paper | None:
    title = _title(entry)
    if not title:
        return None
    aid = _entry_arxiv_id(entry)
    doi = _find_doi(entry, search_text=not aid)  # an arXiv abstract may cite other DOIs
    blocks = _summary_blocks(entry)
    authors = _entry_authors(entry, blocks)
    abstract = _abstract(blocks, authors)
    published, updated = _dates(entry, blocks)
    link = str(entry.get("link") or "")
    entry_id = str(entry.get("id") or "")
    if aid:
        pid = aid
    elif doi:
        pid = doi
    else:
        key = entry_id or link or title
        pid = f"feed:{name}:{hashlib.sha1(key.encode()).hexdigest()[:12]}"
    url = link or (entry_id if entry_id.startswith(("http://", "https://")) else "")
    if not url:
        url = (f"https://arxiv.org/abs/{aid}" if aid
               else f"https://doi.org/{doi}" if doi else "")
    return Paper(
        id=pid,
        source=name,
        venue=label,
        title=title,
        authors=tuple(authors),
        abstract=abstract,
        url=url,
        pdf_url=f"https://arxiv.org/pdf/{aid}" if aid else _pdf_link(entry),
        doi=doi,
        categories=_arxiv_categories(entry) if aid else (),
        published=published,
        updated=updated,
    )


def _title(entry: Any) -> str:
    detail = entry.get("title_detail") or {}
    value = str(entry.get("title") or "")
    if "html" in str(detail.get("type") or ""):
        text = clean_text(value)
    else:
        text = _fold(html.unescape(value))
    # the pre-2024 arXiv listing appended "(arXiv:2406.14673v1 [cs.CL] UPDATED)"
    text = re.sub(r"\s*\(arXiv:\S+(?:\s+\[[^\]]*\])?(?:\s+UPDATED)?\)\s*$", "", text)
    return text.strip()


def _summary_blocks(entry: Any) -> list[str]:
    """The description (or fuller content) as text blocks, one per paragraph / line."""
    best: tuple[str, str] | None = None
    for c in entry.get("content") or []:
        value = str(c.get("value") or "")
        if value.strip() and (best is None or len(value) > len(best[0])):
            best = (value, str(c.get("type") or "text/html"))
    summary = str(entry.get("summary") or "")
    if summary.strip() and (best is None or len(summary) > len(best[0])):
        detail = entry.get("summary_detail") or {}
        best = (summary, str(detail.get("type") or "text/html"))
    if best is None:
        return []
    value, kind = best
    return _html_blocks(value if "html" in kind else html.escape(value))


# --- text ---------------------------------------------------------------------------------

_BLOCK = "\x1e"
_BLOCK_TAGS = frozenset({
    "p", "div", "br", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6",
    "tr", "table", "thead", "tbody", "blockquote", "section", "article", "header", "footer",
    "aside", "nav", "hr", "figure", "figcaption", "pre", "caption", "title", "main", "form",
})
_SKIP_TAGS = frozenset({"script", "style", "noscript", "template"})


class _TextExtractor(HTMLParser):
    def __init__(self, drop_sup: bool = False) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.sup = 0
        self.drop_sup = drop_sup

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append(_BLOCK)
        elif tag == "sup":
            self.sup += 1
        elif tag == "img" and not self.skip:  # formulas drawn as images keep their alt text
            alt = dict(attrs).get("alt")
            if alt:
                self.parts.append(alt)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append(_BLOCK)
        elif tag == "sup":
            self.sup = max(0, self.sup - 1)

    def handle_data(self, data: str) -> None:
        if self.skip or (self.sup and self.drop_sup):
            return
        self.parts.append(data)


def _fold(text: str) -> str:
    return " ".join(text.split())


def _html_blocks(value: str, drop_sup: bool = False) -> list[str]:
    parser = _TextExtractor(drop_sup)
    parser.feed(value.replace(_BLOCK, " "))
    parser.close()
    text = unicodedata.normalize("NFC", "".join(parser.parts))
    return [b for b in (_fold(part) for part in text.split(_BLOCK)) if b]


def clean_text(value: str) -> str:
    """HTML to one line of text: tags dropped (the contents of ``<sub>``, ``<sup>``, ``<i>``
    kept, so ``H<sub>2</sub>O`` gives ``H2O``), entities decoded (``p &lt; 0.05`` gives
    ``p < 0.05``), white space folded. Math text such as ``$x^2$`` or ``α < β`` is kept."""
    return " ".join(_html_blocks(value or ""))


# leading blocks that are publisher boilerplate, not abstract
_VOLUME_LINE = re.compile(
    r"^.{1,200}?,\s*(?:Volume|Vol\.)\s*\S+,\s*(?:Issue|No\.)\s*\S+"
    r"(?:,\s*Pages?\s*\S+)?(?:,\s*[A-Z][a-z]+\.?(?:\s+\d{1,2},?)?\s+\d{4})?\.?$")
_AHEAD_LINE = re.compile(r"^[^.]{1,150}?,\s*Ahead of Print\.?$", re.IGNORECASE)
_CITATION_LINE = re.compile(r"^.{0,400}\bdoi:\s*10\.\d{4,9}/\S+$", re.IGNORECASE)
_ANYWHERE = (
    re.compile(r"^Publication date\s*:", re.IGNORECASE),
    re.compile(r"^Source\s*:", re.IGNORECASE),
    re.compile(r"^Author\(s\)\s*:", re.IGNORECASE),
    re.compile(r"^\[[^\]]{2,100}\]\s*Published\b"),  # APS: "[Phys. Rev. Lett. 116, 061102] ..."
    re.compile(r"^Abstract\s*:?$", re.IGNORECASE),
)
_TEXT_PREFIXES = (
    re.compile(r"^arXiv:\s*\S+\s+Announce Type:\s*[\w-]+\s*"),
    re.compile(r"^(?:Abstract\s*[:.\u2013\u2014-]|ABSTRACT\b)\s*"),
    re.compile(r"^Publication date:\s*(?:Available online\s+)?(?:\d{1,2}\s+)?[A-Z][a-z]+\.?"
               r"\s+\d{4}\s*"),
    re.compile(r"^.{1,200}?,\s*Volume\s+\S+,\s*Issue\s+\S+,\s*(?:Pages?\s+\S+,\s*)?"
               r"[A-Z][a-z]+\.?\s+\d{4}\.\s+"),
    re.compile(r"^[^.]{1,150}?,\s*Ahead of Print\.\s+", re.IGNORECASE),
)


def _abstract(blocks: list[str], authors: list[str]) -> str:
    """The description without publisher boilerplate."""
    kept = [b for b in blocks if not any(p.match(b) for p in _ANYWHERE)]
    wanted = [a.casefold() for a in authors]
    while kept:
        first = kept[0]
        by = re.sub(r"^by\s+", "", first, flags=re.IGNORECASE)
        if (_VOLUME_LINE.match(first) or _AHEAD_LINE.match(first)
                or _CITATION_LINE.match(first)
                or (wanted and [a.casefold() for a in split_authors(by)] == wanted)):
            kept.pop(0)
        else:
            break
    text = " ".join(kept)
    changed = True
    while changed:
        changed = False
        for prefix in _TEXT_PREFIXES:
            new = prefix.sub("", text, count=1)
            if new != text:
                text, changed = new, True
    return text.strip()


# --- authors ------------------------------------------------------------------------------

_PARTICLES = frozenset({
    "van", "von", "der", "den", "de", "del", "della", "degli", "di", "da", "das", "dos", "du",
    "la", "le", "lo", "ten", "ter", "te", "bin", "ibn", "al", "el", "st.", "zu", "y",
})
_SUFFIXES = frozenset({"jr", "jr.", "sr", "sr.", "ii", "iii", "iv", "2nd", "3rd"})
_COLLABORATION = re.compile(
    r"\b(?:collaboration|consortium|group|team|investigators|network|project|initiative)s?\b",
    re.IGNORECASE)
_ET_AL = re.compile(r"\bet\.?\s*al\b\.?|\band\s+others\b|\u2026|\.\.\.", re.IGNORECASE)


def split_authors(value: str) -> list[str]:
    """Individual names, in "Given Family" order, from one author string in any of the
    forms feeds use: "A. Smith, B. Jones and C. Wu", "A; B; C", "A, B, and C",
    bioRxiv's "Smith, A., Jones, B. C.", a single "Lu, Taiming", Vancouver "Smith AB, Jones C",
    HTML inside names, "et al." (dropped) and "(X Collaboration and Y Collaboration)"
    (dropped when individual names are given, else returned as the names)."""
    text = untex(" ".join(_html_blocks(value or "", drop_sup=True)))  # arXiv: "Pi\\v{z}urica"
    text = re.sub(r"^(?:(?:author\(s\)|authors?)\s*:|by\s)\s*", "", text, flags=re.IGNORECASE)
    collaborations: list[str] = []

    def paren(m: re.Match[str]) -> str:
        inner = m.group(1)
        if _COLLABORATION.search(inner):
            collaborations.extend(_split_plain(inner))
        return " "

    text = re.sub(r"\(([^()]*)\)", paren, text)
    text = _ET_AL.sub(" ", text)
    names = _split_plain(text)
    if not names:
        names = collaborations
    return names


def _split_plain(text: str) -> list[str]:
    names: list[str] = []
    for chunk in re.split(r"\s*[;\n]\s*", text):
        chunk = re.sub(r"\s*,?\s+(?:and|&)\s+", ", ", f" {chunk} ").strip(" ,")
        pieces = [_fold(p) for p in chunk.split(",")]
        pieces = [p for p in pieces if p and re.search(r"[^\W\d_]", p)]
        names.extend(_names_from_pieces(pieces))
    names = [n for n in (_tidy_name(n) for n in names) if n]
    return _vancouver(names)


def _names_from_pieces(pieces: list[str]) -> list[str]:
    merged: list[str] = []
    for p in pieces:  # "John Smith, Jr." -> one name
        if merged and p.casefold() in _SUFFIXES:
            merged[-1] = f"{merged[-1]} {p}"
        else:
            merged.append(p)
    pieces = merged
    n = len(pieces)
    if n >= 2 and n % 2 == 0 and all(
            _is_family(pieces[i]) and _is_given(pieces[i + 1]) for i in range(0, n, 2)):
        return [f"{pieces[i + 1]} {pieces[i]}" for i in range(0, n, 2)]  # "Family, Given"
    return pieces


def _is_initials(piece: str) -> bool:
    """"M.", "C. L.", "J.-P.", "J P A", "Ch." - given names reduced to initials."""
    if not piece or re.search(r"[^\w\s.\-]|\d|_", piece):
        return False
    for tok in re.findall(r"[^\s.\-]+\.?", piece):
        letters = tok.rstrip(".")
        if not letters[:1].isupper():
            return False
        if len(letters) > 1 and not (len(letters) == 2 and tok.endswith(".")
                                     and letters[1:].islower()):
            return False
    return True


def _is_family(piece: str) -> bool:
    """One family name, possibly with particles: "Lu", "López-Otín", "van den Driessche"."""
    toks = piece.split()
    if not toks or _is_initials(piece) or re.search(r"\d", piece):
        return False
    *particles, last = toks
    return (all(t.casefold() in _PARTICLES for t in particles)
            and last[:1].isupper() and not last.endswith("."))


def _is_given(piece: str) -> bool:
    """Given names and/or initials: "Taiming", "M.", "Geoffrey E.", "J. P. A."."""
    toks = piece.split()
    if not toks or len(toks) > 4 or re.search(r"\d", piece):
        return False
    return all(t[:1].isupper() and t.casefold() not in _PARTICLES for t in toks)


def _tidy_name(name: str) -> str:
    name = _fold(name).strip(" ,;:\"'")
    name = re.sub(r"[\d*\u2020\u2021\u00a7\u00b6#]+$", "", name).strip(" ,;:")  # footnote marks
    toks = name.split()
    if toks and toks[-1].endswith(".") and len(toks[-1].rstrip(".")) > 2 \
            and toks[-1].casefold() not in _SUFFIXES:
        name = name[:-1]  # "John Smith." but not "A. B." or "Jr."
    return name if re.search(r"[^\W\d_]", name) else ""


def _vancouver(names: list[str]) -> list[str]:
    """PubMed's "Smith AB, Jones C" -> "A. B. Smith", "C. Jones" (only when every name of a
    list of two or more has that shape, so "Kai LI" alone is left as it is)."""
    pattern = re.compile(r"^(?P<family>.*[a-z].*?)\s+(?P<initials>[A-Z]{1,3})$")
    matches = [pattern.match(n) for n in names]
    if len(names) < 2 or not all(matches):
        return names
    out = []
    for m in matches:
        assert m is not None
        initials = " ".join(f"{c}." for c in m.group("initials"))
        out.append(f"{initials} {m.group('family')}")
    return out


# Words that start or end an affiliation or a job title, never part of a person's name.
# Taylor & Francis feeds glue each author's affiliation onto the name in dc:creator
# ("Jane Doe Collection Development Librarian, Kolwyck Library, ..., Tennessee, USA");
# split on commas, the places would become authors.
_AFFILIATION_WORDS = frozenset("""
department dept. school faculty institute institut university université universität
universidad università universidade college center centre laboratory laboratories lab
hospital clinic division library museum program programme academy foundation inc. ltd.
corporation graduate ministry agency council society observatory
librarian professor lecturer researcher scientist engineer manager coordinator curator
editor archivist assistant associate candidate postdoctoral student director
""".split())


def _is_initial(token: str) -> bool:
    return bool(re.fullmatch(r"[A-Z]\.?(?:-[A-Z]\.?)?", token))


def strip_affiliation(creator: str) -> str | None:
    """The person's name when ``creator`` is a name with an affiliation glued on (one
    ``dc:creator`` holding "Name Title, Institution, City, Country"), else None.

    The name is what precedes the first affiliation word of the part before the first
    comma; when more than given + family name precede it (a job title such as "Collection
    Development Librarian"), the given name, any initials or particles, and one family name
    are kept.
    """
    text = _fold(creator)
    tokens_all = re.findall(r"[^\s,;]+", text)
    if not any(t.casefold() in _AFFILIATION_WORDS for t in tokens_all):
        return None
    tokens = text.split(",")[0].split()
    cut = next((i for i, t in enumerate(tokens) if t.casefold() in _AFFILIATION_WORDS),
               len(tokens))
    head = tokens[:cut]
    if len(head) < 2:
        return None  # "University of X, ..." with no person before it
    if len(head) > 2:
        kept = [head[0]]
        i = 1
        while i < len(head) - 1 and (_is_initial(head[i]) or head[i].casefold() in _PARTICLES):
            kept.append(head[i])
            i += 1
        kept.append(head[i])
        head = kept
    return " ".join(head)


def _entry_authors(entry: Any, blocks: list[str]) -> list[str]:
    names: list[str] = []
    for author in entry.get("authors") or []:
        if isinstance(author, dict) and author.get("name"):
            person = strip_affiliation(str(author["name"]))
            names.extend([person] if person else split_authors(str(author["name"])))
    if not names and entry.get("author"):
        names = split_authors(str(entry["author"]))
    if not names:  # Elsevier / APS: "Author(s): A, B, C" inside the description
        for block in blocks:
            if re.match(r"^Author\(s\)\s*:", block, re.IGNORECASE):
                names = split_authors(block)
                break
    if not names and blocks and re.match(r"^by\s+\S", blocks[0], re.IGNORECASE):
        candidates = split_authors(blocks[0])  # PLOS-style "by A, B, C" first paragraph
        if candidates and all(_looks_like_name(c) for c in candidates):
            names = candidates
    return names


def _looks_like_name(name: str) -> bool:
    toks = name.split()
    return 2 <= len(toks) <= 6 and all(
        t[:1].isupper() or t.casefold() in _PARTICLES for t in toks)


# --- identifiers --------------------------------------------------------------------------

_ARXIV_NEW = r"\d{4}\.\d{4,5}"
_ARXIV_OLD = r"[a-z]+(?:-[a-z]+)?(?:\.[A-Z]{2})?/\d{7}"
_ARXIV_ID = re.compile(
    rf"(?:^|(?i:arxiv\.org/(?:abs|pdf|html)/|oai:arxiv\.org:|arxiv:\s?))"
    rf"({_ARXIV_NEW}|{_ARXIV_OLD})(?:v\d+)?(?:\.pdf)?(?=$|[^\w.]|\.(?!\d))")
_ARXIV_ARCHIVES = frozenset({
    "astro-ph", "cond-mat", "cs", "econ", "eess", "gr-qc", "hep-ex", "hep-lat", "hep-ph",
    "hep-th", "math", "math-ph", "nlin", "nucl-ex", "nucl-th", "physics", "q-bio", "q-fin",
    "quant-ph", "stat", "adap-org", "alg-geom", "chao-dyn", "cmp-lg", "comp-gas", "dg-ga",
    "funct-an", "mtrl-th", "patt-sol", "q-alg", "solv-int", "supr-con", "acc-phys",
    "ao-sci", "atom-ph", "bayes-an", "chem-ph", "plasm-ph",
})


def arxiv_id(text: str) -> str | None:
    """The arXiv identifier without version, from an id, URL or reference:
    ``oai:arXiv.org:2406.14673v2``, ``https://arxiv.org/abs/2406.14673v1``,
    ``arXiv:2406.14673`` and ``2406.14673`` give ``2406.14673``; ``hep-th/9901001v2`` gives
    ``hep-th/9901001``. None when the text carries no arXiv identifier."""
    m = _ARXIV_ID.search((text or "").strip())
    return m.group(1) if m else None


def _entry_arxiv_id(entry: Any) -> str | None:
    candidates = [entry.get("id"), entry.get("link")]
    candidates += [link.get("href") for link in entry.get("links") or []
                   if isinstance(link, dict)]
    for c in candidates:
        if c:
            found = arxiv_id(str(c))
            if found:
                return found
    return None


def _arxiv_categories(entry: Any) -> tuple[str, ...]:
    cats: list[str] = []
    for tag in entry.get("tags") or []:
        term = str((tag or {}).get("term") or "").strip()
        if term.split(".")[0] in _ARXIV_ARCHIVES and re.fullmatch(r"[a-z-]+(?:\.[\w-]+)?", term):
            if term not in cats:
                cats.append(term)
    return tuple(cats)


def _announce_type(entry: Any) -> str:
    kind = str(entry.get("arxiv_announce_type") or "").strip().lower()
    if kind:
        return kind
    m = re.search(r"Announce Type:\s*([\w-]+)", str(entry.get("summary") or ""))
    if m:
        return m.group(1).lower()
    version = re.search(r"v(\d+)\s*$", str(entry.get("id") or ""))
    return "replace" if version and int(version.group(1)) > 1 else "new"


_DOI = re.compile(r"10\.\d{4,9}/[^\s\"'<>]+")


def _clean_doi(raw: str) -> str | None:
    m = _DOI.search(raw)
    if not m:
        return None
    doi = m.group(0)
    while doi and (doi[-1] in ".,;:'\"]}>" or (doi[-1] == ")"
                                                and doi.count("(") < doi.count(")"))):
        doi = doi[:-1]
    return doi.lower() if "/" in doi and not doi.endswith("/") else None


def _doi_in_value(value: Any) -> str | None:
    """A DOI from a field meant to hold one or an identifier: "doi:10...", "10...",
    "info:doi/10...", "https://doi.org/10...", a publisher's ".../doi/10..." URL."""
    raw = str(value or "").strip()
    if not raw:
        return None
    if re.match(r"^[a-z][a-z0-9+.-]*://", raw, re.IGNORECASE):
        parts = urlsplit(raw)
        host = (parts.hostname or "").lower()
        path = unquote(parts.path)
        if host in ("doi.org", "dx.doi.org") or host.endswith(".doi.org"):
            return _clean_doi(path.lstrip("/"))
        m = re.search(r"/doi/(?:(?:abs|full|pdf|epdf|epub|reader)/)?(10\.\d{4,9}/.+)$", path)
        return _clean_doi(m.group(1)) if m else None
    m = re.match(r"^(?:(?:info:)?doi[:/]\s*|urn:doi:)?(10\.\d{4,9}/\S+)$", raw, re.IGNORECASE)
    return _clean_doi(m.group(1)) if m else None


def find_doi(entry: Any) -> str | None:
    """The entry's DOI, lowercased, wherever the feed put it: ``prism:doi``,
    ``dc:identifier`` ("doi:10...." or a bare "10...."), an Atom id "info:doi/10....", a
    doi.org link, or the description. None when there is none."""
    return _find_doi(entry, search_text=True)


def _find_doi(entry: Any, search_text: bool) -> str | None:
    for key in ("prism_doi", "dc_identifier", "dcterms_identifier", "identifier", "id",
                "guid", "link"):
        found = _doi_in_value(entry.get(key))
        if found:
            return found
    for link in entry.get("links") or []:
        if isinstance(link, dict):
            found = _doi_in_value(link.get("href"))
            if found:
                return found
    if not search_text:
        return None
    texts = [str(entry.get("summary") or "")]
    texts += [str(c.get("value") or "") for c in entry.get("content") or []
              if isinstance(c, dict)]
    for text in texts:  # a marked DOI first ("doi:10..." or a doi.org link), then any
        m = re.search(r"(?:\bdoi:\s*|doi\.org/)(10\.\d{4,9}/[^\s\"'<>]+)", text, re.IGNORECASE)
        if m:
            return _clean_doi(unquote(m.group(1)))
    for text in texts:
        found = _clean_doi(clean_text(text))
        if found:
            return found
    return None


def _pdf_link(entry: Any) -> str | None:
    for link in entry.get("links") or []:
        if not isinstance(link, dict) or not link.get("href"):
            continue
        href = str(link["href"])
        if link.get("type") == "application/pdf" or urlsplit(href).path.lower().endswith(".pdf"):
            return href
    return None


# --- dates --------------------------------------------------------------------------------

_MONTHS = {m: i + 1 for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}


def _struct_to_datetime(value: Any) -> datetime | None:
    try:
        year, month, day, hour, minute, second = (int(v) for v in value[:6])
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except (TypeError, ValueError, IndexError):
        return None


def _date_string(text: str) -> datetime | None:
    """A W3C/ISO or RFC 822 date string (PRISM dates are W3CDTF) in UTC; missing parts of
    a partial date ("2024-01") are the first of the month; no zone means UTC."""
    from dateutil import parser as dateparser

    try:
        got = dateparser.parse(text.strip(), default=datetime(2000, 1, 1))
    except (ValueError, OverflowError):
        return None
    return (got if got.tzinfo else got.replace(tzinfo=UTC)).astimezone(UTC)


def _now() -> datetime:
    fixed = os.environ.get("NEWSLETTER_NOW")  # the CLI's clock for reproducible runs
    if fixed:
        try:
            return datetime.fromisoformat(fixed).astimezone(UTC)
        except ValueError:
            pass
    return datetime.now(UTC)


def _date_from_words(day: str | None, month: str, year: str) -> datetime | None:
    number = _MONTHS.get(month[:3].casefold())
    if not number:
        return None
    try:
        return datetime(int(year), number, int(day) if day else 1, tzinfo=UTC)
    except ValueError:
        return None


def _date_in_text(text: str) -> datetime | None:
    """Elsevier's "Publication date: 18 January 2024" / "...: Available online 12 March
    2024", Nature's "Published online: 15 July 2021", APS's "Published Thu Feb 11, 2016"."""
    m = re.search(r"\bPublication date:\s*(?:Available online\s+)?(?:(\d{1,2})\s+)?"
                  r"([A-Z][a-z]+)\.?\s+(\d{4})", text)
    if m:
        return _date_from_words(m.group(1), m.group(2), m.group(3))
    m = re.search(r"\bPublished(?: online)?:?\s+(?:[A-Z][a-z]{2},?\s+)?(\d{1,2})\s+"
                  r"([A-Z][a-z]+)\.?\s+(\d{4})", text)
    if m:
        return _date_from_words(m.group(1), m.group(2), m.group(3))
    m = re.search(r"\bPublished(?: online)?:?\s+(?:[A-Z][a-z]{2},?\s+)?([A-Z][a-z]+)\.?\s+"
                  r"(\d{1,2}),?\s+(\d{4})", text)
    if m:
        return _date_from_words(m.group(2), m.group(1), m.group(3))
    return None


def _raw(entry: Any, key: str) -> Any:
    """A key as parsed: FeedParserDict.get("published_parsed") silently (and deprecatedly)
    answers with updated_parsed when the entry has no published date."""
    return dict.get(entry, key) if isinstance(entry, dict) else getattr(entry, key, None)


def _dates(entry: Any, blocks: list[str]) -> tuple[datetime, datetime | None]:
    published = _struct_to_datetime(_raw(entry, "published_parsed"))
    updated = _struct_to_datetime(_raw(entry, "updated_parsed"))
    if published is None:
        # RSS 1.0 dc:date lands in "updated"; then PRISM dates, then the description
        best = updated
        for key in ("prism_publicationdate", "prism_coverdate"):
            if best is None and entry.get(key):
                best = _date_string(str(entry[key]))
        return best or _date_in_text(" ".join(blocks)) or _now(), None
    return published, updated if updated and updated != published else None
