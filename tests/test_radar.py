"""The research radar page (issue 17) against the real `newsletter serve`: signed links,
chips that edit, another batch, feedback, the archive, the Atom feed, and what a forwarded,
expired or revoked link can do."""

from __future__ import annotations

import re
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Callable
from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import feedparser
import httpx
import pytest
from conftest import DATA, HTTPServer, invoke, parts
from lxml import etree
from test_serve import Forms

from newsletter import store

SECRET = "radar-signing-key"
ADA = "ada+news@example.org"
FILTERS = ("--author", "Taiming Lu", "--category", "cs.*", "--category", "stat.*",
           "--topic", "cell OR protein OR quantum OR patients OR brain OR neurons")


@pytest.fixture
def radar(isolated: Path, monkeypatch: pytest.MonkeyPatch, http_server: HTTPServer) -> Path:
    """ADA and bob, two issues each: 2026-11-21 from an arXiv cs.CL feed, 2026-11-22 from
    the bundled sample papers (3 in full + 20 more matches, more beyond for the batches)."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("NEWSLETTER_WEB_URL", "https://radar.example.org")
    invoke("subscribers", "add", ADA, *FILTERS, "--max-papers", "3")
    invoke("subscribers", "add", "bob@example.org", "--topic", "protein", "--lang", "zh")
    http_server.serve("/cl", (DATA / "feeds" / "arxiv-cs.CL.rss").read_bytes(),
                      content_type="application/rss+xml")
    invoke("sources", "add", "cl", http_server.base + "/cl", "--label", "arXiv cs.CL")
    monkeypatch.setenv("NEWSLETTER_SOURCES", "cl")
    invoke("run", "--all", "--date", "2026-11-21")
    monkeypatch.setenv("NEWSLETTER_SOURCES", "sample")
    invoke("run", "--all", "--date", "2026-11-22")
    return isolated


def db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path / "newsletter.db")
    conn.row_factory = sqlite3.Row
    return conn


def events(path: Path, email: str = ADA) -> list[tuple[str, str, str]]:
    return [(r["event"], r["origin"], r["detail"]) for r in db(path).execute(
        "select e.event, e.origin, e.detail from subscriber_events e join subscribers s"
        " on s.id = e.subscriber_id where s.email = ? order by e.id", [email])]


def local(url: str, server_base: str) -> str:
    """The page link as printed (on the public web URL), pointed at the test server."""
    parts = urlsplit(url)
    return f"{server_base}{parts.path}?{parts.query}"


def page_link(email: str = ADA, *args: str) -> str:
    return invoke("subscribers", "link", email, *args).output.strip()


def test_the_radar_page_step_by_step(radar: Path, serve_endpoint: Callable) -> None:
    server = serve_endpoint()
    url = local(page_link(), server.base)
    with httpx.Client(base_url=server.base, follow_redirects=True) as client:
        page = client.get(url)
        assert page.status_code == 200
        html = page.text
        # what the seed shows
        assert "Academic Intelligence · Curated Daily" in html
        assert "Explore the frontier of research worldwide" in html
        assert 'rel="alternate" type="application/atom+xml"' in html
        assert "Author: Taiming Lu" in html and "Category: cs.*" in html
        assert "Issue of November 22, 2026" in html
        assert html.count('class="card paper"') == 23  # 3 in full + 20 more, as emailed
        assert '<span class="badge">' in html and "Cross-field brief" in html
        forms = Forms(html)
        # remove a chip with its ×
        action, fields = next((a, f) for a, f, label in forms.forms
                              if label == "×" and f.get("value") == "stat.*")
        assert fields["csrf"] and fields["kind"] == "category"
        assert client.post(action, data=fields).status_code == 200
        assert "stat.*" not in store.get_subscriber(store.open_db(radar / "newsletter.db"),
                                                    ADA).categories
        # add a broken topic: the CLI's message, with the position marked; nothing stored
        add, add_fields = next((a, f) for a, f, label in forms.forms if label == "Add")
        bad = client.post(add, data={**add_fields, "kind": "topic", "value": "(diffusion"})
        assert bad.status_code == 400
        assert "topic &#39;(diffusion&#39;: missing &#39;)&#39; at position 11" in bad.text
        assert "<mark> </mark>" in bad.text  # past the end: the missing ")"
        bad2 = client.post(add, data={**add_fields, "kind": "topic", "value": "a AND OR b"})
        assert "unexpected &#39;OR&#39; at position 7" in bad2.text
        assert "a AND <mark>O</mark>R b" in bad2.text
        # add a good topic
        ok = client.post(add, data={**add_fields, "kind": "topic",
                                    "value": "diffusion models"})
        assert ok.status_code == 200 and "Topic: diffusion models" in ok.text
        # another batch, until the end, without repeats
        seen = set(re.findall(r'name="paper" value="([^"]+)"', ok.text))
        batches = 0
        batch_url = re.search(r'<a class="button batch" href="([^"]+)"', ok.text)
        while batch_url:
            batches += 1
            got = client.get(server.base + batch_url.group(1).replace("&amp;", "&"))
            ids = set(re.findall(r'name="paper" value="([^"]+)"', got.text))
            assert ids and not ids & seen, "a batch repeated a paper"
            seen |= ids
            batch_url = re.search(r'<a class="button batch" href="([^"]+)"', got.text)
            assert batches < 20
        assert batches >= 2 and "No more matches beyond these" in got.text
        # switch language
        zh = client.get(url + "&lang=zh")
        assert '<html lang="zh-Hans">' in zh.text and "探索全球前沿学术脉络" in zh.text
        assert "换一批" in zh.text and "作者: Taiming Lu" in zh.text
        # mark a paper not relevant
        fb = next((a, f) for a, f, label in Forms(zh.text).forms if label == "不相关")
        assert client.post(*fb[:1], data=fb[1]).status_code == 200
        # yesterday's issue in the archive
        assert "November 21, 2026 · " in html
        day = client.get(url + "&day=2026-11-21")
        assert "Issue of November 21, 2026" in day.text and ">arXiv cs.CL<" in day.text
        # unsubscribe
        unsub = next((a, f) for a, f, label in Forms(html).forms if label == "Unsubscribe")
        assert client.post(unsub[0], data=unsub[1]).status_code == 200
    conn = db(radar)
    row = conn.execute("select f.verdict, f.origin, f.paper_id from feedback f join "
                       "subscribers s on s.id = f.subscriber_id where s.email = ?",
                       [ADA]).fetchall()
    assert [(r["verdict"], r["origin"]) for r in row] == [("not_relevant", "web")]
    assert conn.execute("select status from subscribers where email = ?",
                        [ADA]).fetchone()[0] == "unsubscribed"
    web = [(e, d) for e, o, d in events(radar) if o == "web"]
    assert web == [("edited", "removed category: stat.*"),
                   ("edited", "added topic: diffusion models"),
                   ("feedback", f"not relevant: {row[0]['paper_id']}"),
                   ("unsubscribed", "")]


def test_settings_pause_and_resume(radar: Path, serve_endpoint: Callable) -> None:
    server = serve_endpoint()
    url = local(page_link(), server.base)
    with httpx.Client(base_url=server.base, follow_redirects=True) as client:
        forms = Forms(client.get(url).text)
        action, fields = forms.by_label("Save")
        bad = client.post(action, data={**fields, "frequency": "weekly", "weekday": "fri",
                                        "send_hour": "6", "timezone": "Mars/Olympus"})
        assert bad.status_code == 400 and "unknown time zone &#39;Mars/Olympus&#39;" in bad.text
        saved = client.post(action, data={**fields, "frequency": "weekly", "weekday": "fri",
                                          "send_hour": "6", "timezone": "Asia/Shanghai",
                                          "language": "zh"})
        assert saved.status_code == 200 and "已保存" in saved.text  # now in their language
        pause = Forms(saved.text).by_label("暂停")
        assert client.post(*pause[:1], data=pause[1]).status_code == 200
    sub = store.get_subscriber(store.open_db(radar / "newsletter.db"), ADA)
    assert (sub.frequency, sub.weekday, sub.send_hour, sub.timezone, sub.language,
            sub.status) == ("weekly", "fri", 6, "Asia/Shanghai", "zh", "paused")
    assert [e for e, o, _ in events(radar) if o == "web"] == ["edited", "paused"]


def test_forwarded_expired_and_revoked_links(radar: Path, serve_endpoint: Callable,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve_endpoint()
    url = local(page_link(), server.base)
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    with httpx.Client(base_url=server.base, follow_redirects=True) as client:
        page = client.get(url)
        action, fields = Forms(page.text).by_label("Unsubscribe")
        # ADA's link and cookie cannot act on bob: the token is bound to the address
        other = action.replace(urlencode({"email": ADA}), urlencode({"email": "bob@example.org"}))
        assert other != action
        assert client.post(server.base + other, data=fields).status_code == 403
        assert client.get(url.replace("ada%2Bnews", "bob")).status_code == 403
        # a changed expiry breaks the signature; a past expiry is refused
        longer = url.replace(f"exp={q['exp']}", f"exp={int(q['exp']) + 999}")
        assert client.get(longer).status_code == 403
        short = local(page_link(ADA, "--days", "1"), server.base)
        assert client.get(short).status_code == 200
        # no CSRF field, or another visitor's: refused
        assert client.post(server.base + action, data={}).status_code == 403
        # revoke: the old link stops working, the new one works
        new = local(page_link(ADA, "--revoke"), server.base)
        assert client.get(url).status_code == 403
        assert client.get(new).status_code == 200
    assert ("links revoked", "cli", "") in events(radar)
    assert store.get_subscriber(store.open_db(radar / "newsletter.db"), "bob@example.org"
                                ).status == "active"
    # an expired link: the server's clock a year later
    monkeypatch.setenv("NEWSLETTER_NOW", "2027-11-22T09:00:00+00:00")
    later = serve_endpoint()
    with httpx.Client() as client:
        expired = client.get(local(new, later.base))
        assert expired.status_code == 403 and "has expired" in expired.text
    # rotating the secret revokes every link
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-11-22T10:00:00+00:00")
    monkeypatch.setenv("NEWSLETTER_SECRET", "a-new-secret")
    rotated = serve_endpoint()
    with httpx.Client() as client:
        assert client.get(local(new, rotated.base)).status_code == 403


def test_atom_feed_is_valid_for_two_parsers(radar: Path, serve_endpoint: Callable) -> None:
    server = serve_endpoint()
    feed_url = local(page_link(ADA, "--feed"), server.base)
    page = httpx.get(local(page_link(), server.base)).text
    linked = re.search(r'<link rel="alternate" type="application/atom\+xml" title="[^"]*" '
                       r'href="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert urlsplit(linked).path == "/radar/feed.atom"
    answer = httpx.get(feed_url)
    assert answer.headers["content-type"] == "application/atom+xml; charset=utf-8"
    body = answer.content
    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert [e.title.split(" · ")[0] for e in parsed.entries] == ["November 22, 2026",
                                                                 "November 21, 2026"]
    assert all(urlsplit(e.link).netloc == "radar.example.org" for e in parsed.entries)
    assert "Small LLMs: Pruning vs. Training from Scratch" in parsed.entries[0].content[0].value
    # the second parser: lxml, strict, and the elements RFC 4287 requires
    root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    atom = {"a": "http://www.w3.org/2005/Atom"}
    assert root.tag == "{http://www.w3.org/2005/Atom}feed"
    for required in ("a:id", "a:title", "a:updated", "a:author/a:name"):
        assert len(root.xpath(required, namespaces=atom)) == 1, required
    entries = root.xpath("a:entry", namespaces=atom)
    assert len(entries) == 2
    for entry in entries:
        for required in ("a:id", "a:title", "a:updated", "a:link[@rel='alternate']"):
            assert len(entry.xpath(required, namespaces=atom)) == 1, required
        assert entry.xpath("a:content/@type", namespaces=atom) == ["xhtml"]
    ids = [e.xpath("string(a:id)", namespaces=atom) for e in entries]
    assert len(set(ids)) == 2 and all(i.startswith("tag:") for i in ids)
    assert ET.fromstring(body).tag.endswith("feed")
    assert SECRET not in body.decode()
    # a forwarded feed link cannot read anybody else's issues
    assert httpx.get(feed_url.replace("ada%2Bnews", "bob")).status_code == 403


def test_email_links_to_the_page_when_a_web_url_is_set(radar: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    sent = sorted((radar / "outbox").glob(f"*{ADA}*.eml"))[-1]
    msg = message_from_bytes(sent.read_bytes(), policy=policy.default)
    text, html = parts(msg)
    chips = re.findall(r'<a class="nl-x" href="([^"]+)"', html)
    assert chips and all(c.startswith("https://radar.example.org/radar?") for c in chips)
    assert all(c.endswith("#filters-h") for c in chips)
    assert "Read them on your research radar page" in html
    assert "https://radar.example.org/radar?" in text
    # without a web URL the email is as before: the x opens a reply
    monkeypatch.delenv("NEWSLETTER_WEB_URL")
    out = invoke("preview", ADA, "--date", "2026-11-22").output
    assert "radar.example.org" not in out and 'class="nl-x" href="mailto:' in out


def test_link_needs_a_web_url(radar: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEWSLETTER_WEB_URL")
    result = invoke("subscribers", "link", ADA, ok=False)
    assert result.exit_code == 1
    assert result.output == ("Error: set NEWSLETTER_WEB_URL to the public address of "
                             "'newsletter serve' first (see README > The research radar)\n")


def serve_arxiv_lookup(http_server: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The arXiv API on loopback, answering the saved real response for 1706.03762; DOIs
    are not found (Crossref and OpenAlex answer 404)."""
    http_server.serve("/api/query", (DATA / "lookup" / "arxiv-id.atom").read_bytes())
    monkeypatch.setenv("NEWSLETTER_ARXIV_API_URL", http_server.base + "/api/query")
    monkeypatch.setenv("NEWSLETTER_ARXIV_DELAY", "0")
    monkeypatch.setenv("NEWSLETTER_CROSSREF_URL", http_server.base + "/nothing")
    monkeypatch.setenv("NEWSLETTER_OPENALEX_URL", http_server.base + "/nothing")


def test_in_chromium_without_javascript(radar: Path, serve_endpoint: Callable,
                                        http_server: HTTPServer,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's steps in Debian's chromium, JavaScript off; screenshots at 375 and
    1280 px, light and dark, both languages; axe-core; then the database."""
    import json
    import subprocess

    from conftest import ROOT, require, require_chromium

    chromium = require_chromium()
    require((ROOT / "node_modules" / "axe-core").exists(),
            "needs npm package axe-core: run 'npm ci' (make test does)")
    serve_arxiv_lookup(http_server, monkeypatch)
    server = serve_endpoint()
    shots = ROOT / "tests" / "artifacts"
    shots.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["node", str(ROOT / "tests" / "browser" / "radar.mjs"), local(page_link(), server.base),
         str(shots)], capture_output=True, text=True, timeout=300,
        env={"CHROMIUM": chromium, "PATH": "/usr/bin:/bin"}, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    for view in facts["views"]:
        if "external" in view:
            assert view["external"] == [], view  # no fonts, scripts or analytics from others
            continue
        assert view["scrollWidth"] <= view["innerWidth"], view  # no horizontal scroll
        assert view["chipTop"] < view["batchTop"], view  # the seed's order
        assert view["firstNum"] == "01."
        assert view["htmlLang"] == {"en": "en", "zh": "zh-Hans"}[view["lang"]]
        serious = [v for v in view["axe"] if v["impact"] in ("serious", "critical")]
        assert serious == [], (view["width"], view["scheme"], view["lang"], serious)
        assert Path(view["shot"]).stat().st_size > 20_000
    s = facts["steps"]
    assert s["opened"] == "Explore the frontier of research worldwide"
    assert s["citeHash"] == s["citeHref"] and s["citeCard"] == 1 and s["citeInView"]
    assert any("Attention Is All You Need" in c for c in s["seedChips"])
    assert s["seedChipsAfterRemove"] == 0
    assert not any("stat.*" in c for c in s["chipsAfterRemove"])
    assert "missing ')' at position 11" in s["addError"] and s["addErrorMark"] == 1
    assert any("Topic: diffusion models" in c for c in s["chipsAfterAdd"])
    seen: set[str] = set()
    for batch in s["batches"]:
        assert batch and not set(batch) & seen
        seen |= set(batch)
    assert len(s["batches"]) >= 3 and "No more matches" in s["endText"]
    assert (s["zhLang"], s["zhHeadline"]) == ("zh-Hans", "探索全球前沿学术脉络")
    assert s["markedPressed"] == "true"
    assert s["archiveHeading"] == "2026年11月21日 的简报"
    assert set(s["archiveBadges"]) == {"arXiv cs.CL"}
    assert "已退订" in s["afterUnsubscribe"]
    web = [(e, d) for e, o, d in events(radar) if o == "web"]
    assert [e for e, _ in web[:2]] == ["edited", "edited"]  # the seed added, removed
    assert all("1706.03762" in d for _, d in web[:2])
    assert web[2:] == [("edited", "removed category: stat.*"),
                       ("edited", "added topic: diffusion models"),
                       ("feedback", f"not relevant: {s['markedPaper']}"),
                       ("unsubscribed", "")]
    conn = db(radar)
    assert [tuple(r) for r in conn.execute("select verdict, origin from feedback")] == [
        ("not_relevant", "web")]


def test_forgetting_a_subscriber_erases_their_feedback(radar: Path) -> None:
    conn = store.open_db(radar / "newsletter.db")
    paper = store.sent_issues(conn, ADA)[0]["paper_ids"][0]
    store.add_feedback(conn, ADA, paper, "relevant", "web")
    assert store.feedback_for(conn, ADA) == {paper: "relevant"}
    invoke("subscribers", "forget", ADA, "--yes")
    assert db(radar).execute("select count(*) from feedback").fetchone()[0] == 0


def test_state_merge_keeps_web_feedback_and_revocations(radar: Path, tmp_path: Path) -> None:
    """A change made on the page (serve's copy) survives `state push` merging it with the
    scheduled run's copy: feedback is the union; a revocation is never undone."""
    a = store.open_db(radar / "newsletter.db")
    b = store.open_db(tmp_path / "run-copy.db")
    store.restore_chunks(b, store.dump_chunks(a))
    paper = store.sent_issues(a, ADA)[0]["paper_ids"][0]
    store.add_feedback(a, ADA, paper, "not_relevant", "web")
    store.revoke_links(a, ADA, "web")
    invoke("subscribers", "edit", ADA, "--name", "Ada")  # a later settings edit on a
    counts = store.merge_state(b, a)
    assert counts["feedback"] == 1
    assert store.feedback_for(b, ADA) == {paper: "not_relevant"}
    assert store.link_generation(b, ADA) == 1
    again = store.merge_state(b, a)  # idempotent
    assert again["feedback"] == 0
    store.merge_state(a, b)  # and the other way round changes nothing back
    assert store.link_generation(a, ADA) == 1


def test_the_extractive_brief_lists_the_papers_it_does_not_quote(radar: Path) -> None:
    """A field with more papers than the digest quotes lists the rest as citation runs."""
    from newsletter import brief as brief_mod
    from newsletter.render import strings
    from newsletter.web.radar import _brief_context

    conn = store.open_db(radar / "newsletter.db")
    papers = store.get_papers(conn, store.sent_issues(conn, ADA)[0]["paper_ids"])[:12]
    view = _brief_context(brief_mod.extractive(papers), strings("en"), len(papers))
    assert view is not None and view["kind"] == "extractive"
    rests = [theme["rest"] for theme in view["themes"] if theme["rest"]]
    # each run of citations is its ends as (number, card anchor): [02]–[05] links both
    assert rests and all(anchor == f"p{n}" and re.fullmatch(r"\d\d", n)
                         for rest in rests for ends in rest for n, anchor in ends), rests


def test_a_model_brief_shows_its_themes_and_connections() -> None:
    from newsletter.models import Brief, Theme
    from newsletter.render import strings
    from newsletter.web.radar import _brief_context

    brief = Brief(kind="llm", headline="Small models, big questions",
                  themes=(Theme("Pruning", "Pruned models beat scratch ones.", (1, 2)),),
                  connections=(Theme("", "Both ask what a parent model transfers.", (1, 3)),),
                  per_paper=("a", "b", "c"), model="openai/gpt-4o-mini")
    view = _brief_context(brief, strings("en"), 3)
    assert view is not None
    assert view["themes"] == [{"title": "Pruning", "text": "Pruned models beat scratch ones.",
                               "cites": [("01", "p01", ""), ("02", "p02", "")]}]
    assert [(c["text"], c["cites"]) for c in view["connections"]] == [
        ("Both ask what a parent model transfers.", [("01", "p01", ""), ("03", "p03", "")])]
    assert "openai/gpt-4o-mini" in view["note"]


# --- issue 18: feedback links in the email, seed papers and the ranking on the page ------


def feedback_rows(path: Path) -> list[tuple[str, str, str, str]]:
    return [(r["email"], r["paper_id"], r["verdict"], r["origin"]) for r in db(path).execute(
        "select s.email, f.paper_id, f.verdict, f.origin from feedback f join subscribers s"
        " on s.id = f.subscriber_id order by f.id")]


def email_feedback_links(path: Path, email: str = ADA) -> tuple[list[str], list[str]]:
    """The feedback links in EMAIL's latest outbox message: (HTML part, plain-text part)."""
    sent = sorted((path / "outbox").glob(f"*{email}*.eml"))[-1]
    msg = message_from_bytes(sent.read_bytes(), policy=policy.default)
    text, html = parts(msg)
    pattern = r"https://radar\.example\.org/feedback\?[^\s\"<>]+"
    return ([u.replace("&amp;", "&") for u in re.findall(pattern, html)],
            re.findall(pattern, text))


def test_feedback_from_the_email_link(radar: Path, serve_endpoint: Callable,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    html_links, text_links = email_feedback_links(radar)
    # each paper in full carries "relevant" and "not relevant", in both parts
    assert len(html_links) == 6 and html_links == text_links
    first = {k: v[0] for k, v in parse_qs(urlsplit(html_links[0]).query).items()}
    second = {k: v[0] for k, v in parse_qs(urlsplit(html_links[1]).query).items()}
    assert (first["v"], second["v"]) == ("relevant", "not_relevant")
    assert first["paper"] == second["paper"] and first["email"] == ADA
    server = serve_endpoint()
    url = local(html_links[1], server.base)
    title = store.get_paper(store.open_db(radar / "newsletter.db"), first["paper"]).title
    with httpx.Client() as client:
        # a GET only asks (mail scanners follow links): nothing recorded yet
        page = client.get(url)
        assert page.status_code == 200 and "Mark &#34;" in page.text
        assert "not relevant to you" in page.text and ADA in page.text
        assert title.replace("'", "&#39;")[:30] in page.text
        assert feedback_rows(radar) == []
        action, fields = Forms(page.text).by_label("Yes, save it")
        assert client.post(server.base + action, data={}).status_code == 403  # no CSRF
        assert feedback_rows(radar) == []
        done = client.post(server.base + action, data=fields)
        assert done.status_code == 200 and "your feedback is saved" in done.text
    assert feedback_rows(radar) == [(ADA, first["paper"], "not_relevant", "mail")]
    assert ("feedback", "mail", f"not relevant: {first['paper']}") in events(radar)
    # bob's links are in Chinese, and so is his confirmation page
    bob_links, _ = email_feedback_links(radar, "bob@example.org")
    zh = httpx.get(local(bob_links[0], server.base))
    assert zh.status_code == 200 and '<html lang="zh-Hans">' in zh.text and "确定保存" in zh.text


def test_feedback_links_cannot_be_forwarded_tampered_or_reused_late(
        radar: Path, serve_endpoint: Callable, monkeypatch: pytest.MonkeyPatch) -> None:
    links, _ = email_feedback_links(radar)
    server = serve_endpoint()
    url = local(links[0], server.base)
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    other_paper = {k: v[0] for k, v in parse_qs(urlsplit(links[2]).query).items()}["paper"]
    with httpx.Client() as client:
        action, fields = Forms(client.get(url).text).by_label("Yes, save it")
        tampered = [
            url.replace(urlencode({"email": ADA}), urlencode({"email": "bob@example.org"})),
            url.replace(urlencode({"paper": q["paper"]}), urlencode({"paper": other_paper})),
            url.replace("v=relevant", "v=not_relevant"),
            url.replace(f"exp={q['exp']}", f"exp={int(q['exp']) + 999}"),
            url.replace(f"token={q['token']}", "token=" + "0" * 32),
        ]
        for bad in tampered:
            assert bad != url
            assert client.get(bad).status_code == 403, bad
            posted = client.post(bad, data=fields)
            assert posted.status_code == 403 and "not valid" in posted.text
        assert client.get(server.base + "/feedback?email=x").status_code == 400
        assert feedback_rows(radar) == []
        # forwarded to bob, the link still acts only for ADA: bob gets nothing recorded
    with httpx.Client() as bob:
        page = bob.get(url)
        assert ADA in page.text
        action, fields = Forms(page.text).by_label("Yes, save it")
        assert bob.post(server.base + action, data=fields).status_code == 200
    assert feedback_rows(radar) == [(ADA, q["paper"], "relevant", "mail")]
    # revoked: after `subscribers link --revoke` the email's links stop working
    page_link(ADA, "--revoke")
    assert httpx.get(local(links[3], server.base)).status_code == 403
    # expired: the server's clock a year later
    monkeypatch.setenv("NEWSLETTER_NOW", "2027-11-22T09:00:00+00:00")
    later = serve_endpoint()
    expired = httpx.get(local(links[1], later.base))
    assert expired.status_code == 403 and "has expired" in expired.text
    assert feedback_rows(radar) == [(ADA, q["paper"], "relevant", "mail")]


def test_email_has_no_feedback_links_without_a_web_url(radar: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEWSLETTER_WEB_URL")
    html = invoke("preview", ADA, "--date", "2026-11-22").output
    text = invoke("preview", ADA, "--date", "2026-11-22", "--text").output
    assert "/feedback?" not in html and "/feedback?" not in text
    assert "Tell us" not in html and "Tell us" not in text


def test_seed_papers_and_ranking_on_the_page(radar: Path, serve_endpoint: Callable,
                                             http_server: HTTPServer,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    serve_arxiv_lookup(http_server, monkeypatch)
    server = serve_endpoint()
    url = local(page_link(), server.base)
    conn = store.open_db(radar / "newsletter.db")
    with httpx.Client(base_url=server.base, follow_redirects=True) as client:
        page = client.get(url)
        assert "Papers like mine" in page.text and "No seed papers yet." in page.text
        add, fields = Forms(page.text).by_label("Add paper")
        # not an id, then an id nobody knows: one line in the page's language, nothing written
        bad = client.post(add, data={**fields, "value": "my favourite paper"})
        assert bad.status_code == 400
        assert ("Not added: my favourite paper is neither an arXiv id (2401.01234) nor a DOI"
                in bad.text)
        unknown = client.post(add + "&lang=zh", data={**fields, "value": "10.9999/nothing"})
        assert unknown.status_code == 400
        assert ("未添加： 在 arXiv、Crossref 和 OpenAlex 上都没有找到 10.9999/nothing"
                in unknown.text)
        assert store.get_subscriber(conn, ADA).likes == ()
        # a real arXiv id, looked up on the (loopback) arXiv API
        ok = client.post(add, data={**fields, "value": "arXiv:1706.03762v7"})
        assert ok.status_code == 200 and "Attention Is All You Need" in ok.text
        assert store.get_subscriber(conn, ADA).likes == ("1706.03762",)
        assert [p.split("?")[0] for _, p, _, _ in http_server.requests].count("/api/query") == 1
        # remove it with its ×
        remove, rfields = next((a, f) for a, f, label in Forms(ok.text).forms
                               if label == "×" and f.get("value") == "1706.03762")
        gone = client.post(remove, data=rfields)
        assert gone.status_code == 200 and "No seed papers yet." in gone.text
        assert store.get_subscriber(conn, ADA).likes == ()
        # the ranking mode and the cap
        rank, kfields = Forms(gone.text).by_label("Save ranking")
        assert client.post(rank, data={**kfields, "ranking": "like",
                                       "like_cap": "5"}).status_code == 200
        bad_mode = client.post(rank, data={**kfields, "ranking": "magic", "like_cap": "5"})
        assert bad_mode.status_code == 400
    sub = store.get_subscriber(conn, ADA)
    assert (sub.ranking, sub.like_cap) == ("like", 5)
    web = [(e, d) for e, o, d in events(radar) if o == "web"]
    assert [e for e, _ in web] == ["edited", "edited", "edited"]
    assert "1706.03762" in web[0][1] and "1706.03762" in web[1][1]
    assert "like" in web[2][1] and "5" in web[2][1]


def test_brief_citations_link_to_the_cards(radar: Path, serve_endpoint: Callable) -> None:
    server = serve_endpoint()
    html = httpx.get(local(page_link(), server.base)).text
    brief = html[html.index('class="card brief"'):html.index('id="papers"')]
    cites = re.findall(r'<a class="cite" href="#(p\d\d)"', brief)
    assert cites, "the brief cites no paper"
    cards = set(re.findall(r'<article class="card paper" id="(p\d\d)"', html))
    assert set(cites) <= cards and "p01" in cards
