"""arXiv through the real API client (requests + urllib3 retries) and feed fetcher, against
a loopback server that answers in the API's exact Atom format (tests/data/arxiv) and
arXiv's listing RSS."""

import threading
import time
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import DATA, invoke

from newsletter.config import Settings
from newsletter.models import Subscriber
from newsletter.sources import arxiv

ATOM = "application/atom+xml; charset=UTF-8"
SINCE = datetime(2026, 11, 19, 9, tzinfo=UTC)
NOW = datetime(2026, 11, 22, 9, tzinfo=UTC)  # a Sunday


def atom(name):
    body = (DATA / "arxiv" / name).read_bytes()
    return lambda h, _: (200, {"Content-Type": ATOM}, body)


def status(code):
    return lambda h, _: (code, {"Content-Type": "text/plain"}, b"busy")


def settings_for(server, **kw):
    return Settings(arxiv_api_url=server.base + "/api/query",
                    arxiv_rss_url=server.base + "/rss", arxiv_delay=0.0, **kw)


def queries(server):
    return [parse_qs(urlsplit(path).query) for m, path, _, _ in server.requests
            if path.startswith("/api/query")]


ADA = Subscriber("ada@example.org", authors=("Taiming Lu", "Daniel Khashabi"))


def test_plan_batches_authors_and_keeps_one_feed_per_category():
    subs = [Subscriber(f"s{i}@example.org",
                       authors=tuple(f"Author{(i * 7 + k) % 300} Person" for k in range(5)),
                       categories=(f"cat.{i % 20}",)) for i in range(200)]
    queries_, cats = arxiv.plan(subs)
    authors = {a for q in queries_ for a in q.terms}
    assert len(authors) == 300
    # 300 authors in OR queries small enough for arXiv to answer reliably (up to ~25)
    assert len(queries_) == 15 and all(len(q.terms) <= 25 for q in queries_)
    assert len(cats) == 20


def test_plan_dedupes_name_forms_and_reads_topics():
    subs = [Subscriber("a@example.org", authors=("Taiming Lu",),
                       topics=('"diffusion models" AND protein*',), categories=("cs.*",)),
            Subscriber("b@example.org", authors=("Lu, Taiming", "Jürgen Schmidhuber"),
                       categories=("cs.CL",))]
    queries_, cats = arxiv.plan(subs)
    assert [q.terms for q in queries_] == [("jurgen schmidhuber", "taiming lu"),
                                           ("diffusion models",)]
    assert cats == ["cs", "cs.CL"]
    q = queries_[0].search_query(SINCE, NOW)
    assert q == ('(au:"jurgen schmidhuber" OR au:"taiming lu") AND '
                 'submittedDate:[202611190900 TO 202611220900]')


def test_fetch_by_author(http_server):
    http_server.routes["/api/query"] = atom("query-authors.atom")
    result = arxiv.fetch(settings_for(http_server), [ADA], SINCE, NOW)
    assert result.error is None and result.requests == 1
    by_id = {p.id: p for p in result.papers}
    assert sorted(by_id) == sorted(["2411.11844", "2406.14673", "2212.10560", "2005.00700"])
    genex = by_id["2411.11844"]
    assert genex.title == "Generative World Explorer"
    assert genex.authors[0] == "Taiming Lu"
    assert genex.url == "https://arxiv.org/abs/2411.11844"
    assert genex.pdf_url == "https://arxiv.org/pdf/2411.11844"
    assert genex.published == datetime(2024, 11, 18, 18, 59, 31, tzinfo=UTC)
    assert by_id["2212.10560"].doi  # arxiv:doi is carried over
    (sent,) = queries(http_server)
    assert sent["search_query"] == ['(au:"daniel khashabi" OR au:"taiming lu") AND '
                                    'submittedDate:[202611190900 TO 202611220900]']
    assert sent["sortBy"] == ["submittedDate"]


def test_503_then_success_is_retried_with_backoff(http_server):
    http_server.routes["/api/query"] = [status(503), atom("query-authors.atom")]
    result = arxiv.fetch(settings_for(http_server), [ADA], SINCE, NOW)
    assert result.error is None
    assert len(result.papers) == 4 and result.requests == 2


def test_retry_after_is_honoured(http_server):
    busy = (503, {"Content-Type": "text/plain", "Retry-After": "1"}, b"busy")
    http_server.routes["/api/query"] = [lambda h, _: busy, atom("query-authors.atom")]
    started = time.monotonic()
    result = arxiv.fetch(settings_for(http_server), [ADA], SINCE, NOW)
    assert time.monotonic() - started >= 1.0  # pacing is off: only Retry-After waited
    assert result.error is None and len(result.papers) == 4 and result.requests == 2


def test_paging_follows_total_results(http_server):
    def page(h, _):
        start = parse_qs(urlsplit(h.path).query)["start"][0]
        name = "query-category-page1.atom" if start == "0" else "query-category-page2.atom"
        return 200, {"Content-Type": ATOM}, (DATA / "arxiv" / name).read_bytes()

    http_server.routes["/api/query"] = page
    sub = Subscriber("b@example.org", topics=("attention",))
    result = arxiv.fetch(settings_for(http_server), [sub], SINCE, NOW)
    assert len(result.papers) == 5 and result.requests == 2
    assert [q["start"] for q in queries(http_server)] == [["0"], ["3"]]


def test_one_failing_query_does_not_fail_the_others(http_server):
    def route(h, _):
        q = parse_qs(urlsplit(h.path).query)["search_query"][0]
        if q.startswith("(all:"):
            return 503, {"Content-Type": "text/plain"}, b"busy"
        return 200, {"Content-Type": ATOM}, (DATA / "arxiv" / "query-authors.atom").read_bytes()

    http_server.routes["/api/query"] = route
    sub = Subscriber("c@example.org", authors=("Taiming Lu",), topics=("world models",))
    result = arxiv.fetch(settings_for(http_server), [sub], SINCE, NOW)
    assert len(result.papers) == 4
    assert result.partial
    assert result.error == ("1 of 2 requests failed: keywords query (world models...): "
                            "HTTP 503 after retries")


def test_timeout_is_reported_quickly(http_server):
    release = threading.Event()

    def slow(h, _):
        release.wait(20)
        return 200, {"Content-Type": ATOM}, b""

    http_server.routes["/api/query"] = slow
    started = time.monotonic()
    try:
        result = arxiv.fetch(settings_for(http_server), [ADA], SINCE, NOW, timeout=0.3)
    finally:
        release.set()
    # without the time-out the first request alone would wait the server's 20 s
    assert time.monotonic() - started < 15
    assert not result.partial and result.papers == ()
    # the time-out is a total deadline for the request, retries included
    assert "timed out after 0.3 s" in result.error


def test_quiet_day_is_told_apart_from_a_broken_source(http_server):
    http_server.routes["/api/query"] = atom("query-empty.atom")
    friday = datetime(2026, 11, 21, 3, tzinfo=UTC)  # Friday evening in New York
    result = arxiv.fetch(settings_for(http_server), [ADA], SINCE, friday)
    assert result.error is None and result.papers == ()
    assert result.note == "quiet: arXiv announces nothing on Friday and Saturday"
    result = arxiv.fetch(settings_for(http_server), [ADA], SINCE, NOW)
    assert result.note == "quiet: no new papers in the window"


def test_listing_feed_takes_new_and_cross_lists_not_replacements(http_server):
    http_server.serve("/rss/cs.CL", (DATA / "feeds" / "arxiv-cs.CL.rss").read_bytes(),
                      content_type="application/rss+xml")
    sub = Subscriber("d@example.org", categories=("cs.CL",))
    result = arxiv.fetch(settings_for(http_server), [sub], SINCE, NOW)
    assert result.error is None
    import json
    expected = json.loads((DATA / "feeds" / "EXPECTED.json").read_text())["arxiv-cs.CL.rss"]
    wanted = {i["arxiv_id"] for i in expected["items"]
              if i["announce_type"] in ("new", "cross")}
    assert {p.id for p in result.papers} == wanted
    assert all(p.source == "arxiv" for p in result.papers)


def test_delay_is_at_least_three_seconds_for_a_real_host():
    assert arxiv.effective_delay(Settings(arxiv_delay=0.5)) == 3.0
    assert arxiv.effective_delay(Settings(arxiv_delay=5)) == 5.0
    assert arxiv.effective_delay(Settings(arxiv_api_url="http://127.0.0.1:9/api",
                                          arxiv_delay=0)) == 0.0


@pytest.fixture
def cli_arxiv(http_server, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SOURCES", "arxiv")
    monkeypatch.setenv("NEWSLETTER_ARXIV_API_URL", http_server.base + "/api/query")
    monkeypatch.setenv("NEWSLETTER_ARXIV_RSS_URL", http_server.base + "/rss")
    monkeypatch.setenv("NEWSLETTER_ARXIV_DELAY", "0")
    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu")
    return http_server


def test_window_moves_on_only_after_success(cli_arxiv, monkeypatch):
    cli_arxiv.routes["/api/query"] = [status(503)]
    out = invoke("fetch", ok=False)
    assert out.exit_code == 1 and "arxiv: FAILED - 1 of 1 requests failed" in out.output
    cli_arxiv.routes["/api/query"] = atom("query-authors.atom")
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-11-23T09:00:00+00:00")
    assert "4 new papers (0 updated) from 1 of 1 sources, 1 requests" in invoke("fetch").output
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-11-24T09:00:00+00:00")
    invoke("fetch")
    windows = [q["search_query"][0].split("submittedDate:")[1] for q in queries(cli_arxiv)]
    # the failed run's window is asked again; after a success the next starts there
    assert windows[0] == "[202611190900 TO 202611220900]"
    assert windows[-2] == "[202611190900 TO 202611230900]"
    assert windows[-1] == "[202611230900 TO 202611240900]"
    listed = invoke("papers", "list", "--source", "arxiv").output
    assert listed.rstrip().endswith("4 papers")


def test_listing_from_a_saved_atom_response(http_server):
    """tests/data/arxiv/listing-cs.AI.atom keeps the structure and facts of a real saved
    answer of rss.arxiv.org/atom/cs.AI (2025-08-20; see tests/data/arxiv/README.md)."""
    http_server.serve("/rss/cs.AI", (DATA / "arxiv" / "listing-cs.AI.atom").read_bytes(),
                      content_type="application/atom+xml")
    sub = Subscriber("e@example.org", categories=("cs.AI",))
    result = arxiv.fetch(settings_for(http_server), [sub], SINCE, NOW)
    assert result.error is None and result.requests == 1
    by_id = {p.id: p for p in result.papers}
    assert sorted(by_id) == ["2508.13167", "2508.13176", "2508.13177", "2508.13303",
                             "2508.13355"]
    coa = by_id["2508.13167"]
    assert coa.title == ("Chain-of-Agents: End-to-End Agent Foundation Models via "
                         "Multi-Agent Distillation and Agentic RL")
    # one dc:creator with all 30 authors, comma-separated
    assert len(coa.authors) == 30
    assert (coa.authors[0], coa.authors[25]) == ("Weizhen Li", "Yuchen Eleanor Jiang")
    assert coa.categories == ("cs.AI", "cs.CL")
    assert coa.published == datetime(2025, 8, 20, 4, tzinfo=UTC)  # midnight in New York
    assert coa.url == "https://arxiv.org/abs/2508.13167"
    # a cross-list keeps its own primary category first
    assert by_id["2508.13303"].categories == ("cs.RO", "cs.AI")
    assert by_id["2508.13355"].categories == ("cs.LG", "cs.AI", "stat.ME")
    for p in result.papers:
        assert p.abstract.startswith("Fixture text written for this project")
    # arXiv writes accents in names as TeX; they are read as the letters they stand for
    assert by_id["2508.13177"].authors[:3] == ("Nikola Pižurica", "Nikola Milović",
                                               "Igor Jovančević")
