"""The hourly run asks arXiv and the feeds once per announcement cycle: later runs of the
same cycle use what the store has, unless the subscribers' arXiv filters changed. An
explicit `newsletter fetch` always asks. Loopback servers answer in arXiv's API format
(tests/data/arxiv) and as a journal feed (tests/data/feeds)."""

from conftest import DATA, invoke

ATOM = "application/atom+xml; charset=UTF-8"


def api_requests(server):
    return [p for m, p, _, _ in server.requests if p.startswith("/api/query")]


def feed_requests(server):
    return [p for m, p, _, _ in server.requests if p.startswith("/feed")]


def test_sources_are_asked_once_per_announcement_cycle(isolated, http_server, monkeypatch):
    body = (DATA / "arxiv" / "query-authors.atom").read_bytes()
    http_server.routes["/api/query"] = lambda h, _: (200, {"Content-Type": ATOM}, body)
    feed = (DATA / "feeds" / "elife.rss").read_bytes()
    http_server.routes["/feed"] = lambda h, _: (200, {"Content-Type": "application/rss+xml"},
                                                feed)
    monkeypatch.setenv("NEWSLETTER_ARXIV_API_URL", http_server.base + "/api/query")
    monkeypatch.setenv("NEWSLETTER_ARXIV_RSS_URL", http_server.base + "/rss")
    monkeypatch.setenv("NEWSLETTER_ARXIV_DELAY", "0")
    monkeypatch.delenv("NEWSLETTER_SOURCES")
    invoke("sources", "add", "elife", http_server.base + "/feed")
    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu")
    # Monday 2026-11-23, 02:00 UTC: after Sunday's 20:00 US Eastern announcement
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-11-23T02:00:00+00:00")
    invoke("run", "--all")
    asked = len(api_requests(http_server)), len(feed_requests(http_server))
    assert asked == (1, 1)
    # the next hourly run of the same cycle (someone new is due) asks nobody and says why
    invoke("subscribers", "add", "ann@example.org", "--author", "Taiming Lu")
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-11-23T03:00:00+00:00")
    out = invoke("run", "--all").output
    assert "1 sent" in out
    assert (len(api_requests(http_server)), len(feed_requests(http_server))) == asked
    assert "Source arxiv: ok, 0 new, 0 requests (fetched after arXiv's announcement of " \
           "2026-11-22 20:00 EST already; using the store)" in out
    assert "Source elife: ok, 0 new, 0 requests (fetched after" in out
    # a new author to follow: arXiv is asked again (the feed is not)
    invoke("subscribers", "add", "bob@example.org", "--author", "Daniel Khashabi")
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-11-23T04:00:00+00:00")
    invoke("run", "--all")
    assert (len(api_requests(http_server)), len(feed_requests(http_server))) == (2, 1)
    # `newsletter fetch --once-per-cycle` (the workflow's first job) asks nobody now...
    assert "elife: fetched after" in invoke("fetch", "--once-per-cycle").output
    assert (len(api_requests(http_server)), len(feed_requests(http_server))) == (2, 1)
    # ...and `newsletter fetch` always asks
    invoke("fetch")
    assert (len(api_requests(http_server)), len(feed_requests(http_server))) == (3, 2)
    # after Monday's announcement (20:00 EST = Tuesday 01:00 UTC) a new cycle begins
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-11-24T01:30:00+00:00")
    invoke("run", "--all")
    assert (len(api_requests(http_server)), len(feed_requests(http_server))) == (4, 3)
