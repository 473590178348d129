"""Journal and preprint feeds: every fixture in tests/data/feeds is served by a real loopback
HTTP server and fetched with newsletter.sources.feeds.fetch, then compared with
tests/data/feeds/EXPECTED.json (written by hand). Then the HTTP failure modes, and the
cleaning helpers one by one."""

from __future__ import annotations

import gzip
import json
import re
import socket
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from conftest import HTTPServer

from newsletter.config import Settings
from newsletter.models import Paper, SourceResult
from newsletter.sources import feeds
from newsletter.sources.feeds import (
    FeedError,
    arxiv_id,
    clean_text,
    find_doi,
    parse,
    parse_arxiv_listing,
    split_authors,
)

FEEDS = Path(__file__).resolve().parent / "data" / "feeds"
EXPECTED: dict[str, Any] = json.loads((FEEDS / "EXPECTED.json").read_text("utf-8"))
FIXTURES = sorted(p.name for p in FEEDS.iterdir()
                  if p.name not in ("EXPECTED.json", "README.md"))

# What each publisher's server plausibly sends. latin1.xml: no charset, so the XML
# declaration (ISO-8859-1) decides, as EXPECTED.json's note asks.
CONTENT_TYPES = {
    "acl-anthology.xml": "application/rss+xml; charset=utf-8",
    "aps-prl.xml": "application/rdf+xml",
    "arxiv-cs.CL.rss": "application/rss+xml; charset=utf-8",
    "biorxiv.xml": "application/xml; charset=UTF-8",
    "cell.rss": "application/rss+xml",
    "elife.rss": "application/rss+xml; charset=UTF-8",
    "empty.rss": "application/rss+xml; charset=utf-8",
    "jama.xml": "application/rss+xml",
    "latin1.xml": "application/xml",
    "rss091.xml": "application/rss+xml",
    "malformed.xml": "application/rss+xml",
    "medrxiv.xml": "text/xml; charset=UTF-8",
    "nature.rss": "application/rss+xml; charset=UTF-8",
    "not-a-feed.html": "text/html; charset=utf-8",
    "plos-biology.atom": "application/atom+xml;charset=UTF-8",
    "pnas.xml": "application/rss+xml; charset=UTF-8",
    "science.xml": "text/xml; charset=UTF-8",
}

# The first words of each cleaned abstract: the publisher boilerplate in front is gone.
ABSTRACT_STARTS = {
    "acl-anthology.xml": ["A denoising autoencoder for pretraining",
                          "A Transformer encoder pretrained"],
    "aps-prl.xml": ["Two detectors a few thousand", "When a gauge symmetry"],
    "arxiv-cs.CL.rss": ["Probing the hidden states", "We describe how a large English",
                        "Across many open chat models", "Instead of updating every weight",
                        "A change of variables"],
    "biorxiv.xml": ["Structure prediction with AlphaFold2", "A transformer language model"],
    "cell.rss": ["", ""],  # ScienceDirect items carry nothing but boilerplate
    "elife.rss": ["A large project that tried", "What got in the way"],
    "jama.xml": ["This Viewpoint weighs moving the default threshold for claiming a new "
                 "discovery from P < 0.05 to P < 0.005 & what",
                 "Text mining of MEDLINE abstracts"],
    "latin1.xml": ["Thèse de 1900 : les cours de la rente française",
                   "Cellules à mémoire et portes multiplicatives"],
    "malformed.xml": ["Layers learn residual functions"],
    "medrxiv.xml": ["A retrospective cohort study", "Seroprevalence surveys"],
    "nature.rss": ["A neural network trained on known structures",
                   "Policy and value networks", "A review of how models with many layers"],
    "plos-biology.atom": ["A recount of cells", "Regularities in how species"],
    "rss091.xml": ["The Transformer: sequence transduction",
                   "Residual connections make very deep"],
    "pnas.xml": ["Test error keeps falling after a model becomes large enough to fit its "
                 'training data exactly, giving a "double descent" curve',
                 "Slowing down learning on the weights"],
    "science.xml": ["One algorithm, given only the rules of each game, learns chess, shogi "
                    "and Go", "The Cas9 protein"],
}

BOILERPLATE = ("Abstract:", "Announce Type", "Publication date", "Source:", "Author(s)",
               "Volume ", "Published online", "Phys. Rev. Lett.", "&amp;", "&lt;")
TAG = re.compile(r"<\s*/?\s*[a-zA-Z][^>]*>")  # "P < 0.05" is text, "<i>" is a tag


def name_of(filename: str) -> str:
    return filename.rsplit(".", 1)[0]


def fetch(server: HTTPServer, path: str, state: dict[str, Any] | None = None,
          settings: Settings | None = None, name: str = "test-feed", label: str = "Test",
          **kw: Any) -> SourceResult:
    feed = {"name": name, "url": server.base + path, "label": label}
    return feeds.fetch(name, feed, state or {}, settings or Settings(), **kw)


def fixture_bytes(filename: str) -> bytes:
    return (FEEDS / filename).read_bytes()


def sent_headers(server: HTTPServer, index: int = -1) -> dict[str, str]:
    return {k.lower(): v for k, v in server.requests[index][2].items()}


def as_expected(paper: Paper) -> dict[str, Any]:
    """A paper in EXPECTED.json's shape."""
    return {
        "title": paper.title,
        "authors": list(paper.authors),
        "doi": paper.doi,
        "arxiv_id": arxiv_id(paper.id),
        "published": paper.published.astimezone(UTC).date().isoformat(),
    }


# --- every fixture, over HTTP ----------------------------------------------------------------


def test_every_fixture_has_an_expectation_and_a_content_type() -> None:
    assert FIXTURES, "no fixtures found"
    assert set(FIXTURES) == set(EXPECTED) == set(CONTENT_TYPES)
    assert set(ABSTRACT_STARTS) == {f for f in FIXTURES if EXPECTED[f]["items"]}


@pytest.mark.parametrize("filename", FIXTURES)
def test_fixture_fetched_and_parsed_as_expected(http_server: HTTPServer, filename: str) -> None:
    expected = EXPECTED[filename]
    path = f"/feeds/{filename}"
    http_server.serve(path, fixture_bytes(filename), content_type=CONTENT_TYPES[filename])
    name = name_of(filename)
    result = fetch(http_server, path, name=name, label=expected["publisher"])

    assert result.name == name
    assert result.requests == 1
    assert result.not_modified is False
    assert len(http_server.requests) == 1 and http_server.requests[0][0] == "GET"

    if expected["expect"] == "not-a-feed":
        url = http_server.base + path
        assert result.error == f"not a feed: {url} returned an HTML page (check the URL)"
        assert result.papers == ()
        assert result.state == {}  # the stored ETag of the real feed is kept
        return

    assert result.error is None, result.error
    assert result.state["etag"] is None and result.state["last_modified"] is None
    assert len(result.papers) == expected["item_count"]
    assert [as_expected(p) for p in result.papers] == [
        {k: item[k] for k in ("title", "authors", "doi", "arxiv_id", "published")}
        for item in expected["items"]]

    if expected["expect"] == "empty":
        assert result.papers == () and "warning" not in result.state
        return
    if expected["expect"] == "bozo-salvaged":
        warning = result.state["warning"]
        assert warning is not None and warning.startswith("malformed feed, salvaged 1 entry (")
        partial_titles = {i["title"] for i in expected["partial_items"]}
        assert not partial_titles & {p.title for p in result.papers}
    else:
        assert "warning" not in result.state

    for paper, start in zip(result.papers, ABSTRACT_STARTS[filename], strict=True):
        assert paper.source == name
        assert paper.venue == expected["publisher"]
        assert paper.published.tzinfo is not None
        assert paper.published.utcoffset() == UTC.utcoffset(None)
        assert paper.url.startswith(("http://", "https://"))
        assert paper.abstract.startswith(start), paper.abstract
        assert not any(b in paper.abstract for b in BOILERPLATE), paper.abstract
        assert not TAG.search(paper.abstract), paper.abstract
        assert not TAG.search(paper.title) and "&amp;" not in paper.title, paper.title
        assert all(a == a.strip() and "et al" not in a and "<" not in a for a in paper.authors)
        if paper.doi:
            assert paper.doi == paper.doi.lower() and not paper.doi.startswith("http")
        aid = arxiv_id(paper.id)
        if aid:
            assert paper.pdf_url == f"https://arxiv.org/pdf/{aid}"
            assert all("." in c for c in paper.categories)
            assert paper.categories or filename == "rss091.xml"  # a link, not arXiv's feed
        elif paper.doi:
            assert paper.id == paper.doi
            assert paper.categories == ()
        else:
            assert paper.id.startswith(f"feed:{name}:") and len(paper.id) > len(name) + 6


def test_aps_collaborations_are_dropped_and_et_al_removed(http_server: HTTPServer) -> None:
    # EXPECTED.json keeps only the named first author of "B. P. Abbott et al. (LIGO
    # Scientific Collaboration and Virgo Collaboration)" and lists the collaborations
    # separately; a Paper has no field for them, so they are dropped from the authors.
    http_server.serve("/prl", fixture_bytes("aps-prl.xml"), content_type="application/rdf+xml")
    result = fetch(http_server, "/prl", label="Phys. Rev. Lett.")
    first = result.papers[0]
    expected = EXPECTED["aps-prl.xml"]["items"][0]
    assert first.authors == tuple(expected["authors"]) == ("B. P. Abbott",)
    assert not set(expected["collaborations"]) & set(first.authors)
    assert result.papers[1].authors == ("F. Englert", "R. Brout")


def test_arxiv_replacements_get_the_listing_date(http_server: HTTPServer) -> None:
    # EXPECTED.json gives every arXiv item the listing date (2024-06-21) as "published",
    # including the replace / replace-cross items, whose papers first appeared in 2021 and
    # 2023 (v2, v3). That is what the feed says, but for replacements it is the date of
    # the new version, not of the paper. The test follows the fixture.
    http_server.serve("/cl", fixture_bytes("arxiv-cs.CL.rss"),
                      content_type="application/rss+xml")
    result = fetch(http_server, "/cl", name="arxiv-cs.CL", label="arXiv cs.CL")
    lora = {p.id: p for p in result.papers}["2106.09685"]
    assert lora.published == datetime(2024, 6, 21, 4, 0, tzinfo=UTC)
    assert lora.updated is None


@pytest.mark.parametrize("content_type", [
    "application/xml", "application/rss+xml", "text/xml", "application/xml; charset=utf-8"])
def test_latin1_decoded_whatever_the_content_type(http_server: HTTPServer,
                                                  content_type: str) -> None:
    http_server.serve("/latin1", fixture_bytes("latin1.xml"), content_type=content_type)
    result = fetch(http_server, "/latin1")
    assert result.error is None
    assert [p.title for p in result.papers] == ["Théorie de la spéculation",
                                                "Long Short-Term Memory"]
    assert result.papers[1].authors == ("Sepp Hochreiter", "Jürgen Schmidhuber")
    assert "séance de jeudi" in result.papers[1].abstract
    # a charset that contradicts the document is feedparser's harmless bozo, not "malformed"
    assert "warning" not in result.state


# --- HTTP: conditional GET, state, failures ------------------------------------------------


def test_etag_and_last_modified_are_stored_in_state(http_server: HTTPServer) -> None:
    http_server.serve("/nature", fixture_bytes("nature.rss"),
                      content_type="application/rss+xml",
                      headers={"ETag": 'W/"nature-1"',
                               "Last-Modified": "Thu, 15 Jul 2021 16:00:00 GMT"})
    result = fetch(http_server, "/nature")
    assert result.error is None and len(result.papers) == 3
    assert result.state == {"etag": 'W/"nature-1"',
                            "last_modified": "Thu, 15 Jul 2021 16:00:00 GMT"}
    headers = sent_headers(http_server)
    assert "if-none-match" not in headers and "if-modified-since" not in headers


def test_304_not_modified_sends_the_etag_back(http_server: HTTPServer) -> None:
    etag, modified = '"pnas-42"', "Wed, 24 Jul 2019 19:00:00 GMT"
    body = fixture_bytes("pnas.xml")

    def route(h: BaseHTTPRequestHandler, _: bytes) -> tuple[int, dict[str, str], bytes]:
        if h.headers.get("If-None-Match") == etag:
            return 304, {"ETag": etag}, b""
        return 200, {"Content-Type": "application/rss+xml", "ETag": etag,
                     "Last-Modified": modified}, body

    http_server.routes["/pnas"] = route
    first = fetch(http_server, "/pnas")
    assert len(first.papers) == 2 and first.state["etag"] == etag

    second = fetch(http_server, "/pnas", state={**first.state, "last_success": "x"})
    assert second.not_modified is True
    assert second.error is None and second.papers == () and second.requests == 1
    assert second.state == {"etag": etag, "last_modified": modified}  # unchanged
    headers = sent_headers(http_server)
    assert headers["if-none-match"] == etag
    assert headers["if-modified-since"] == modified
    assert len(http_server.requests) == 2


def test_user_agent_names_the_sender(http_server: HTTPServer) -> None:
    http_server.serve("/empty", fixture_bytes("empty.rss"), content_type="application/rss+xml")
    fetch(http_server, "/empty", settings=Settings(from_addr="AcademicHub <news@example.org>"))
    fetch(http_server, "/empty", settings=Settings(from_addr="AcademicHub"))
    assert sent_headers(http_server, 0)["user-agent"] == (
        "AcademicHub-newsletter/0.1 (+mailto:news@example.org)")
    assert sent_headers(http_server, 1)["user-agent"] == "AcademicHub-newsletter/0.1"
    assert "rss+xml" in sent_headers(http_server, 0)["accept"]


def test_http_503_is_reported(http_server: HTTPServer) -> None:
    http_server.serve("/down", "Service Unavailable", status=503, content_type="text/plain")
    http_server.serve("/busy", "busy", status=503, content_type="text/plain",
                      headers={"Retry-After": "120"})
    down = fetch(http_server, "/down")
    assert down.error == f"HTTP 503 from {http_server.base}/down"
    assert down.papers == () and down.requests == 1 and down.state == {}
    busy = fetch(http_server, "/busy")
    assert busy.error == f"HTTP 503 from {http_server.base}/busy (retry after 120)"


def test_http_404_suggests_checking_the_url(http_server: HTTPServer) -> None:
    result = fetch(http_server, "/nowhere")
    assert result.error == f"HTTP 404 from {http_server.base}/nowhere (check the URL)"


def test_timeout_is_reported_quickly(http_server: HTTPServer) -> None:
    release = threading.Event()

    def slow(h: BaseHTTPRequestHandler, _: bytes) -> tuple[int, dict[str, str], bytes]:
        release.wait(10)
        return 200, {"Content-Type": "application/rss+xml"}, fixture_bytes("empty.rss")

    http_server.routes["/slow"] = slow
    start = time.monotonic()
    try:
        result = fetch(http_server, "/slow", timeout=0.5)
    finally:
        release.set()
    assert time.monotonic() - start < 8  # the server holds the answer back for 10 s
    assert result.error == f"timed out after 0.5 s ({http_server.base}/slow)"
    assert result.papers == () and result.requests == 1


def test_a_server_that_trickles_bytes_meets_the_overall_deadline(
        http_server: HTTPServer) -> None:
    stop = threading.Event()

    def trickle(h: BaseHTTPRequestHandler, _: bytes) -> tuple[int, dict[str, str], bytes]:
        h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
                      b"Content-Length: 100000\r\n\r\n<?xml version='1.0'?><rss>")
        try:
            while not stop.wait(0.1):
                h.wfile.write(b"          ")
        except OSError:
            pass
        return -1, {}, b""

    http_server.routes["/trickle"] = trickle
    start = time.monotonic()
    try:
        result = fetch(http_server, "/trickle", timeout=0.5)
    finally:
        stop.set()
    assert time.monotonic() - start < 8  # 100 000 bytes at 100 a second would take 1000 s
    assert result.error == f"timed out after 0.5 s ({http_server.base}/trickle)"


def test_connection_refused_is_reported() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/feed.rss"
    result = feeds.fetch("gone", {"name": "gone", "url": url, "label": "Gone"}, {}, Settings(),
                         timeout=2)
    assert result.error == f"connection refused by 127.0.0.1:{port} ({url})"
    assert result.papers == () and result.requests == 1


def test_server_hanging_up_is_reported(http_server: HTTPServer) -> None:
    http_server.routes["/hangup"] = lambda h, b: (-1, {}, b"")
    result = fetch(http_server, "/hangup")
    assert result.error == f"{http_server.base}/hangup closed the connection without answering"


def test_html_page_is_not_a_feed(http_server: HTTPServer) -> None:
    http_server.serve("/login", fixture_bytes("not-a-feed.html"), content_type="text/html")
    result = fetch(http_server, "/login")
    assert result.error == (f"not a feed: {http_server.base}/login returned an HTML page "
                            "(check the URL)")
    # an HTML page is recognised even when the server labels it as RSS
    http_server.serve("/liar", fixture_bytes("not-a-feed.html"),
                      content_type="application/rss+xml")
    assert fetch(http_server, "/liar").error == (
        f"not a feed: {http_server.base}/liar returned an HTML page (check the URL)")


def test_json_and_empty_bodies_are_not_feeds(http_server: HTTPServer) -> None:
    http_server.serve("/json", '{"items": []}', content_type="application/json")
    http_server.serve("/blank", b"", content_type="application/rss+xml")
    assert fetch(http_server, "/json").error == (
        f"not a feed: {http_server.base}/json returned application/json content, not RSS or "
        "Atom (check the URL)")
    assert fetch(http_server, "/blank").error == (
        f"not a feed: {http_server.base}/blank returned an empty response (check the URL)")


def test_feed_that_suddenly_returns_html_with_200(http_server: HTTPServer) -> None:
    feed, page = fixture_bytes("elife.rss"), fixture_bytes("not-a-feed.html")
    http_server.routes["/elife"] = [
        lambda h, b: (200, {"Content-Type": "application/rss+xml", "ETag": '"e1"'}, feed),
        lambda h, b: (200, {"Content-Type": "text/html; charset=utf-8", "ETag": '"login"'},
                      page),
    ]
    first = fetch(http_server, "/elife")
    assert len(first.papers) == 2 and first.state["etag"] == '"e1"'
    second = fetch(http_server, "/elife", state=first.state)
    assert sent_headers(http_server)["if-none-match"] == '"e1"'
    assert second.error == (f"not a feed: {http_server.base}/elife returned an HTML page "
                            "(check the URL)")
    assert second.papers == ()
    assert second.state == {}  # the login page's ETag must not replace the feed's


def test_malformed_feed_salvages_complete_entries(http_server: HTTPServer) -> None:
    http_server.serve("/broken", fixture_bytes("malformed.xml"),
                      content_type="application/rss+xml", headers={"ETag": '"m1"'})
    result = fetch(http_server, "/broken")
    assert result.error is None
    assert [p.title for p in result.papers] == ["Deep Residual Learning for Image Recognition"]
    assert result.papers[0].id == "10.1109/cvpr.2016.90"
    assert "1412.6980" not in {p.id for p in result.papers}  # the truncated entry
    assert result.state["etag"] == '"m1"'
    assert result.state["warning"] == ("malformed feed, salvaged 1 entry (no element found at "
                                       "line 25, column 95); dropped 1 incomplete")


def test_malformed_feed_with_nothing_to_salvage_is_an_error(http_server: HTTPServer) -> None:
    cut = fixture_bytes("malformed.xml").split(b"<item>")[0] + b"<item><title>Half"
    http_server.serve("/cut", cut, content_type="application/rss+xml")
    result = fetch(http_server, "/cut")
    assert result.error is not None
    assert result.error.startswith("malformed feed: no element found at line ")
    assert result.papers == () and result.state == {}


def test_empty_feed_is_no_papers_and_no_error(http_server: HTTPServer) -> None:
    http_server.serve("/sat", fixture_bytes("empty.rss"), content_type="application/rss+xml",
                      headers={"ETag": '"sat"'})
    result = fetch(http_server, "/sat")
    assert result.error is None and result.papers == () and result.not_modified is False
    assert result.state == {"etag": '"sat"', "last_modified": None}


def test_oversize_feed_is_refused(http_server: HTTPServer) -> None:
    http_server.serve("/big", fixture_bytes("nature.rss"), content_type="application/rss+xml")
    result = fetch(http_server, "/big", max_bytes=1000)
    assert result.error == f"feed larger than 0.001 MB ({http_server.base}/big)"
    assert result.papers == ()
    assert fetch(http_server, "/big", max_bytes=len(fixture_bytes("nature.rss"))).error is None


def test_oversize_feed_without_content_length_is_cut_off(http_server: HTTPServer) -> None:
    def no_length(h: BaseHTTPRequestHandler, _: bytes) -> tuple[int, dict[str, str], bytes]:
        h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
                      b"Connection: close\r\n\r\n" + b"<rss>" + b" " * 50_000)
        return -1, {}, b""

    http_server.routes["/stream"] = no_length
    result = fetch(http_server, "/stream", max_bytes=10_000)
    assert result.error == f"feed larger than 0.01 MB ({http_server.base}/stream)"


def test_gzip_body_is_decompressed_and_capped(http_server: HTTPServer) -> None:
    http_server.serve("/gz", gzip.compress(fixture_bytes("jama.xml")),
                      content_type="application/rss+xml", headers={"Content-Encoding": "gzip"})
    result = fetch(http_server, "/gz")
    assert sent_headers(http_server)["accept-encoding"] == "gzip"
    assert result.error is None
    assert [p.doi for p in result.papers] == ["10.1001/jama.2018.1536", "10.1001/jama.2016.1952"]
    bomb = gzip.compress(b"<rss>" + b" " * 2_000_000)
    assert len(bomb) < 10_000
    http_server.serve("/bomb", bomb, content_type="application/rss+xml",
                      headers={"Content-Encoding": "gzip"})
    assert fetch(http_server, "/bomb", max_bytes=1_000_000).error == (
        f"feed larger than 1 MB ({http_server.base}/bomb)")


def test_redirect_is_followed(http_server: HTTPServer) -> None:
    http_server.serve("/old", b"", status=301, content_type="text/plain",
                      headers={"Location": "/new"})
    http_server.serve("/new", fixture_bytes("biorxiv.xml"), content_type="application/xml")
    result = fetch(http_server, "/old")
    assert result.error is None and len(result.papers) == 2
    assert [r[1] for r in http_server.requests] == ["/old", "/new"]


@pytest.mark.parametrize("feed, message", [
    ({"name": "x", "label": "X"}, "feed x has no url"),
    ({"name": "x", "url": "ftp://example.org/feed.rss"}, "cannot fetch ftp://example.org/"),
    ({"name": "x", "url": "file:///etc/passwd"}, "cannot fetch file:///etc/passwd"),
    ({"name": "x", "url": "http://"}, "cannot reach http://"),
])
def test_bad_configuration_is_reported_not_raised(feed: dict[str, Any], message: str) -> None:
    result = feeds.fetch("x", feed, {}, Settings(), timeout=1)
    assert result.error is not None and result.error.startswith(message), result.error
    assert result.papers == ()


# --- parse: dates, ids, fallbacks ------------------------------------------------------------


def rss(items: str, ns: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0" {ns}><channel>'
            f"<title>T</title><link>https://example.org/</link><description>d</description>"
            f"{items}</channel></rss>").encode()


def test_elsevier_available_online_date_and_author_line() -> None:
    data = rss("<item><title>A result</title><link>https://example.org/a</link>"
               "<description><![CDATA[<p>Publication date: Available online 12 March 2024</p>"
               "<p><b>Source:</b> Cell Reports</p><p>Author(s): Ann Lee, Bo Chen</p>"
               "<p>Abstract: The finding.</p>]]></description></item>")
    (paper,), warning = parse(data, "cell-reports", "Cell Reports")
    assert warning is None
    assert paper.published == datetime(2024, 3, 12, tzinfo=UTC)
    assert paper.authors == ("Ann Lee", "Bo Chen")
    assert paper.abstract == "The finding."
    assert paper.id.startswith("feed:cell-reports:") and paper.doi is None


def test_no_date_at_all_falls_back_to_now() -> None:
    data = rss("<item><title>Undated</title><link>https://example.org/u</link></item>")
    (paper,), _ = parse(data, "x", "X")
    # conftest fixes the clock with NEWSLETTER_NOW
    assert paper.published == datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def test_atom_updated_kept_when_different_and_pdf_link() -> None:
    data = (b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>J</title>'
            b"<id>urn:j</id><updated>2024-05-02T00:00:00Z</updated><entry>"
            b"<title type='html'>H&lt;sub&gt;2&lt;/sub&gt;O at p &amp;lt; 0.05</title>"
            b"<id>urn:uuid:1</id><link href='https://j.example/a/1'/>"
            b"<link rel='related' type='application/pdf' href='https://j.example/a/1.pdf'/>"
            b"<link rel='related' href='https://doi.org/10.5555/ABC.1'/>"
            b"<published>2024-05-01T10:00:00+02:00</published>"
            b"<updated>2024-05-02T00:00:00Z</updated><author><name>Lu, Taiming</name></author>"
            b"</entry></feed>")
    (paper,), _ = parse(data, "j", "J", "application/atom+xml")
    assert paper.title == "H2O at p < 0.05"
    assert paper.published == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    assert paper.updated == datetime(2024, 5, 2, tzinfo=UTC)
    assert paper.pdf_url == "https://j.example/a/1.pdf"
    assert paper.doi == paper.id == "10.5555/abc.1"
    assert paper.authors == ("Taiming Lu",)


def test_untitled_entries_are_skipped_with_a_warning() -> None:
    data = rss("<item><link>https://example.org/x</link></item>"
               "<item><title>Kept</title><link>https://example.org/k</link></item>")
    papers, warning = parse(data, "x", "X")
    assert [p.title for p in papers] == ["Kept"]
    assert warning == "skipped 1 entry without a title"


def test_duplicate_entries_give_one_paper() -> None:
    item = ("<item><title>Same</title><link>https://example.org/s</link>"
            "<guid>doi:10.5555/same</guid></item>")
    papers, _ = parse(rss(item + item), "x", "X")
    assert [p.id for p in papers] == ["10.5555/same"]


def test_parse_raises_for_html() -> None:
    with pytest.raises(FeedError, match="HTML page"):
        parse(fixture_bytes("not-a-feed.html"), "x", "X", "text/html")


# --- arXiv listing ---------------------------------------------------------------------------


def test_parse_arxiv_listing() -> None:
    expected = EXPECTED["arxiv-cs.CL.rss"]
    listing = parse_arxiv_listing(fixture_bytes("arxiv-cs.CL.rss"))
    assert [kind for _, kind in listing] == [i["announce_type"] for i in expected["items"]]
    assert [kind for _, kind in listing] == ["new", "new", "cross", "replace", "replace-cross"]
    assert [p.id for p, _ in listing] == [i["arxiv_id"] for i in expected["items"]]
    assert [list(p.authors) for p, _ in listing] == [i["authors"] for i in expected["items"]]
    # new and cross announcements are first versions; replacements are later ones
    for paper, kind in listing:
        assert (expected["versions"][paper.id] == 1) == (kind in ("new", "cross"))
        assert paper.source == "arxiv" and paper.venue is None
        assert paper.pdf_url == f"https://arxiv.org/pdf/{paper.id}"
        assert paper.url == f"https://arxiv.org/abs/{paper.id}"
        assert paper.doi is None
        assert not paper.abstract.startswith(("arXiv:", "Abstract"))
        assert paper.badge.startswith("arXiv (cs.")
    first, _ = listing[0]
    assert first.authors[0] == "Taiming Lu" and len(first.authors) == 5
    assert [p.categories for p, _ in listing] == [
        ("cs.CL", "cs.AI"), ("cs.CL",), ("cs.LG", "cs.AI", "cs.CL"),
        ("cs.CL", "cs.AI", "cs.LG"), ("cs.LG", "cs.AI", "cs.CL")]
    assert "refusing harmful requests is controlled by one direction" in listing[2][0].abstract
    assert listing[2][0].abstract.endswith("harmless requests & ordinary ones alike.")


def test_arxiv_listing_without_announce_type_uses_the_version() -> None:
    items = "".join(
        f"<item><title>P{v}</title><link>https://arxiv.org/abs/2401.0000{v}</link>"
        f"<guid isPermaLink='false'>oai:arXiv.org:2401.0000{v}v{v}</guid>"
        f"<category>math.GT</category><dc:creator>A. Author</dc:creator></item>"
        for v in (1, 2))
    listing = parse_arxiv_listing(rss(items, 'xmlns:dc="http://purl.org/dc/elements/1.1/"'))
    assert [(p.id, kind) for p, kind in listing] == [("2401.00001", "new"),
                                                     ("2401.00002", "replace")]
    assert listing[0][0].categories == ("math.GT",)


def test_arxiv_listing_of_an_html_page_raises_value_error() -> None:
    with pytest.raises(ValueError):
        parse_arxiv_listing(fixture_bytes("not-a-feed.html"), "text/html")
    assert parse_arxiv_listing(fixture_bytes("empty.rss")) == []


# --- helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("A. Smith, B. Jones and C. Wu", ["A. Smith", "B. Jones", "C. Wu"]),
    ("A. Smith, B. Jones, and C. Wu", ["A. Smith", "B. Jones", "C. Wu"]),
    ("A. Smith & B. Jones", ["A. Smith", "B. Jones"]),
    ("F. Englert and R. Brout", ["F. Englert", "R. Brout"]),
    ("Ann Lee; Bo Chen; Cy Young", ["Ann Lee", "Bo Chen", "Cy Young"]),
    ("Smith, John; Doe, Jane", ["John Smith", "Jane Doe"]),
    (" Mirdita, M., Schütze, K., Steinegger, M.", ["M. Mirdita", "K. Schütze", "M. Steinegger"]),
    ("Zitnick, C. L., Ma, J.", ["C. L. Zitnick", "J. Ma"]),
    ("Ioannidis, J. P. A.", ["J. P. A. Ioannidis"]),
    ("Bourguignon, J.-P.", ["J.-P. Bourguignon"]),
    ("Lu, Taiming", ["Taiming Lu"]),
    ("Lu, Taiming, Gao, Muhan", ["Taiming Lu", "Muhan Gao"]),
    ("Hinton, Geoffrey E.", ["Geoffrey E. Hinton"]),
    ("van den Driessche, George", ["George van den Driessche"]),
    ("Taiming Lu, Muhan Gao", ["Taiming Lu", "Muhan Gao"]),
    ("Taiming Lu", ["Taiming Lu"]),
    ("Loubna Ben allal, Leandro Von Werra", ["Loubna Ben allal", "Leandro Von Werra"]),
    ("Timothy M Errington", ["Timothy M Errington"]),
    ("Smith AB, Jones C", ["A. B. Smith", "C. Jones"]),
    ("John Smith, Jr., Jane Doe", ["John Smith Jr.", "Jane Doe"]),
    ("B. P. Abbott et al. (LIGO Scientific Collaboration and Virgo Collaboration)",
     ["B. P. Abbott"]),
    ("B. P. Abbott <i>et al.</i>", ["B. P. Abbott"]),
    ("A. Smith, B. Jones, et al.", ["A. Smith", "B. Jones"]),
    ("(ATLAS Collaboration)", ["ATLAS Collaboration"]),
    ("ATLAS Collaboration", ["ATLAS Collaboration"]),
    ("<b>Mike Lewis</b>, <i>Omer Levy</i>", ["Mike Lewis", "Omer Levy"]),
    ("John Smith<sup>1,2</sup>, Jane Doe<sup>*</sup>", ["John Smith", "Jane Doe"]),
    ("Andrew Ng (Stanford University)", ["Andrew Ng"]),
    ("Author(s): Carlos López-Otín, Maria A. Blasco", ["Carlos López-Otín", "Maria A. Blasco"]),
    ("by Ron Sender, Shai Fuchs, Ron Milo", ["Ron Sender", "Shai Fuchs", "Ron Milo"]),
    ("", []),
    ("  ", []),
])
def test_split_authors(value: str, expected: list[str]) -> None:
    assert split_authors(value) == expected


@pytest.mark.parametrize("value, expected", [
    ("H<sub>2</sub>O", "H2O"),
    ("p &lt; 0.05", "p < 0.05"),
    ("x<sup>2</sup> + <i>y</i>", "x2 + y"),
    ("$x^2$ and α < β", "$x^2$ and α < β"),
    ("Tom &amp; Jerry&#8212;again", "Tom & Jerry—again"),
    ("<p>first</p>\n<p>second   line\n</p>", "first second line"),
    ("one<br/>two", "one two"),
    ("<script>track()</script><style>p{}</style>text", "text"),
    ("<img alt='E = mc^2'> holds", "E = mc^2 holds"),
    ("  plain\ttext \n", "plain text"),
    ("", ""),
])
def test_clean_text(value: str, expected: str) -> None:
    assert clean_text(value) == expected


@pytest.mark.parametrize("value, expected", [
    ("oai:arXiv.org:2406.14673v2", "2406.14673"),
    ("https://arxiv.org/abs/2406.14673v1", "2406.14673"),
    ("http://arxiv.org/pdf/2406.14673v1.pdf", "2406.14673"),
    ("arXiv:2406.14673", "2406.14673"),
    ("2406.14673", "2406.14673"),
    ("arXiv:0704.0001", "0704.0001"),
    ("hep-th/9901001v2", "hep-th/9901001"),
    ("arXiv:hep-th/9901001", "hep-th/9901001"),
    ("math.GT/0309136", "math.GT/0309136"),
    ("10.1038/nature16961", None),
    ("http://biorxiv.org/cgi/content/short/2021.08.15.456425v1?rss=1", None),
    ("https://arxiv.org/abs/2406.146731", None),
    ("feed:x:0123456789ab", None),
    ("", None),
])
def test_arxiv_id(value: str, expected: str | None) -> None:
    assert arxiv_id(value) == expected


@pytest.mark.parametrize("entry, expected", [
    ({"prism_doi": "10.1103/PhysRevLett.116.061102"}, "10.1103/physrevlett.116.061102"),
    ({"dc_identifier": "doi:10.1101/622803"}, "10.1101/622803"),
    ({"dc_identifier": "10.7554/eLife.71601"}, "10.7554/elife.71601"),
    ({"dcterms_identifier": "10.1371/journal.pbio.1002533"}, "10.1371/journal.pbio.1002533"),
    ({"id": "info:doi/10.1371/journal.pbio.1001127"}, "10.1371/journal.pbio.1001127"),
    ({"id": "10.1073/pnas.1903070116"}, "10.1073/pnas.1903070116"),
    ({"id": "https://doi.org/10.7554/eLife.67995"}, "10.7554/elife.67995"),
    ({"link": "https://www.science.org/doi/abs/10.1126/science.aar6404?af=R"},
     "10.1126/science.aar6404"),
    ({"links": [{"href": "https://dx.doi.org/10.1002%2F%28SICI%291097"}]},
     "10.1002/(sici)1097"),
    ({"summary": '<a href="https://doi.org/10.18653/v1/N19-1423">here</a>.'},
     "10.18653/v1/n19-1423"),
    ({"summary": "Nature, Published online: 27 May 2015; doi:10.1038/nature14539."},
     "10.1038/nature14539"),
    ({"summary": "(see 10.1000/abc(1)2)."}, "10.1000/abc(1)2"),
    ({"dc_identifier": "urn:isbn:9780262035613", "id": "https://example.org/x"}, None),
    ({}, None),
])
def test_find_doi(entry: dict[str, Any], expected: str | None) -> None:
    assert find_doi(entry) == expected
