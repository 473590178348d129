"""What the world sends, and what a careless operator types: each case a real loopback server
or a real file, run through the CLI. (Issue 12; the public endpoint's cases live with
`newsletter serve`'s own tests.)"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DATA, ROOT, HTTPServer, SMTPServer, invoke, parts, read_outbox, require

from newsletter import store
from newsletter.config import Settings
from newsletter.safety.untrusted import clean_text
from newsletter.sources import feeds

HOSTILE = DATA / "hostile"
INVISIBLE = ("\u202e", "\u202c", "\u2066", "\u2069", "\u200b")


def one_line_error(result, codes=(1, 2)) -> str:
    """The command failed with exit 1 or 2 and said so in one line, no traceback."""
    assert result.exit_code in codes, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def feed_subscriber(http_server: HTTPServer, monkeypatch: pytest.MonkeyPatch, fixture: str,
                    name: str = "hostile") -> None:
    http_server.serve(f"/{name}.rss", (HOSTILE / fixture).read_bytes(),
                      content_type="application/rss+xml")
    invoke("sources", "add", name, http_server.base + f"/{name}.rss")
    monkeypatch.setenv("NEWSLETTER_SOURCES", name)
    invoke("subscribers", "add", "ada@example.org", "--topic", "CRISPR")


# --- links and text from feeds -----------------------------------------------------------


def test_only_http_links_reach_the_email_and_the_papers_stay(isolated, http_server,
                                                              monkeypatch):
    feed_subscriber(http_server, monkeypatch, "evil.rss")
    out = invoke("run", "--all").output
    assert "sent" in out
    text, html = parts(read_outbox(isolated / "outbox")["ada@example.org"])
    for scheme in ("javascript:", "vbscript:", "data:text"):
        assert scheme not in html and scheme not in text
    for title in ("Retrieval augmented generation for CRISPR screens",
                  "CRISPR data links are not links", "CRISPR with an ordinary link"):
        assert title in html and title in text  # the paper stays, without the link
    assert 'href="https://journal.example.org/articles/4"' in html
    db = store.open_db(isolated / "newsletter.db")
    urls = {p.title: p.url for p in store.papers_first_seen_since(
        db, __import__("datetime").datetime(2000, 1, 1, tzinfo=__import__("datetime").UTC))[0]}
    assert urls["CRISPR data links are not links"] == ""


def test_bidi_overrides_and_invisible_characters_never_reach_email_or_terminal(
        isolated, http_server, monkeypatch):
    feed_subscriber(http_server, monkeypatch, "evil.rss")
    invoke("fetch")
    listing = invoke("match", "ada@example.org", "--explain").output
    listing += invoke("papers", "list").output
    invoke("run", "--all")
    text, html = parts(read_outbox(isolated / "outbox")["ada@example.org"])
    for ch in INVISIBLE:
        assert ch not in listing and ch not in text and ch not in html, repr(ch)
    assert "CRISPR gnp.exe and the hidden zerowidth text" in text
    assert "Grace Hopper" in text


def test_clean_text_covers_every_control_and_format_character():
    import unicodedata

    for code in range(0x110000):
        ch = chr(code)
        unsafe = unicodedata.category(ch) == "Cf" or (
            unicodedata.category(ch) == "Cc" and ch not in "\t\n")
        newer = 0x13439 <= code <= 0x1343F  # format characters since Unicode 15
        assert (clean_text(f"a{ch}b") == "ab") is (unsafe or newer) or ch == "\r", hex(code)


# --- network deadlines -------------------------------------------------------------------


class DripServer:
    """A TCP server that answers every connection with ``payload`` one byte at a time,
    ``interval`` seconds apart: headers that never finish in any per-read timeout."""

    def __init__(self, payload: bytes, interval: float) -> None:
        self.payload, self.interval = payload, interval
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            for byte in self.payload:
                if self.stop.wait(self.interval):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def drip() -> Iterator[DripServer]:
    server = DripServer(b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
                        + b"X-Slow: " + b"a" * 500 + b"\r\n\r\n", interval=0.2)
    yield server
    server.close()


def test_a_feed_dripping_its_headers_fails_at_the_total_deadline(drip):
    start = time.monotonic()
    result = feeds.fetch("slow", {"url": f"http://127.0.0.1:{drip.port}/feed"}, {},
                         Settings(), timeout=1.0)
    took = time.monotonic() - start
    assert result.error == f"timed out after 1 s (http://127.0.0.1:{drip.port}/feed)"
    assert took < 2.5, took


def test_ended_watchdogs_do_not_pile_up_and_a_live_one_still_fires():
    """A run sends hundreds of messages a second, each under a deadline minutes away: the
    clock must not keep every ended watchdog until its deadline (it kept 13,000 in a
    20,000-reader run), and dropping them must not drop one still running."""
    from newsletter.safety.deadline import Watchdog, _clock

    left, right = socket.socketpair()
    with left, right, Watchdog(0.5) as live:
        live.add(left)
        for _ in range(10_000):
            with Watchdog(600):
                pass
        assert len(_clock()) < 200, len(_clock())  # 10,001 without compaction
        left.settimeout(5)
        start = time.monotonic()
        assert left.recv(1) == b""  # shut down by the clock: the read returns
        assert 0.2 < time.monotonic() - start < 3
        assert live.expired


def test_an_arxiv_api_dripping_its_headers_fails_at_the_total_deadline(drip):
    from datetime import UTC, datetime, timedelta

    from newsletter.models import Subscriber
    from newsletter.sources import arxiv

    settings = Settings(arxiv_api_url=f"http://127.0.0.1:{drip.port}/api/query",
                        arxiv_rss_url=f"http://127.0.0.1:{drip.port}/rss", arxiv_delay=0)
    now = datetime(2026, 11, 22, 9, tzinfo=UTC)
    start = time.monotonic()
    result = arxiv.fetch(settings, [Subscriber("a@example.org", authors=("Taiming Lu",))],
                         now - timedelta(days=3), now, timeout=1.0)
    took = time.monotonic() - start
    assert result.error and "timed out after 1 s" in result.error, result.error
    assert took < 4, took


def test_the_run_sends_although_a_source_drips_and_finishes_within_the_budget(
        isolated, drip, monkeypatch):
    invoke("sources", "add", "slow", f"http://127.0.0.1:{drip.port}/feed")
    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu")
    monkeypatch.setenv("NEWSLETTER_SOURCES", "sample,slow")
    monkeypatch.setenv("NEWSLETTER_FETCH_TIMEOUT", "60")  # the budget must stop it
    monkeypatch.setenv("NEWSLETTER_FETCH_BUDGET", "2")
    start = time.monotonic()
    out = invoke("run", "--all").output
    took = time.monotonic() - start
    assert took < 6, took
    assert "the fetch budget of 2 s was used up" in out
    assert "Source slow: FAILED" in out
    assert "1 sent" in out and "ada@example.org" in read_outbox(isolated / "outbox")


def test_a_model_that_never_answers_costs_the_deadline_not_the_emails(
        isolated, llm_server, monkeypatch):
    release = threading.Event()

    def hang(h, body):
        release.wait(120)  # far longer than the deadline (and than litellm's import)
        return -1, {}, b""

    llm_server.routes["/v1/chat/completions"] = hang
    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu")
    monkeypatch.setenv("NEWSLETTER_LLM_DEADLINE", "1.5")
    try:
        start = time.monotonic()
        out = invoke("run", "--all").output
        took = time.monotonic() - start
    finally:
        release.set()
    assert took < 40, took  # the deadline plus litellm's import on a busy machine
    assert "1 sent" in out
    assert "Brief fallback: model did not answer in time" in out
    text, _ = parts(read_outbox(isolated / "outbox")["ada@example.org"])
    assert "Extractive digest" in text


def test_an_smtp_server_dripping_its_greeting_defers_the_run_quickly(isolated, monkeypatch):
    server = DripServer(b"220 " + b"x" * 500 + b"\r\n", interval=0.2)
    try:
        invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu")
        invoke("subscribers", "add", "bob@example.org", "--author", "Taiming Lu")
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", f"smtp://127.0.0.1:{server.port}")
        monkeypatch.setenv("NEWSLETTER_SMTP_TIMEOUT", "1")
        start = time.monotonic()
        result = invoke("run", "--all", ok=False)
        took = time.monotonic() - start
    finally:
        server.close()
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert took < 6, took
    assert "SMTP timed out: no answer within 1 s" in result.output
    assert "not tried: the SMTP server timed out earlier in this run" in result.output
    assert server.connections == 1
    assert "2 deferred" in result.output


# --- one run per database ----------------------------------------------------------------


def test_runs_through_a_symlink_and_a_hard_link_at_once_send_each_subscriber_once(
        isolated, smtp_server: SMTPServer):
    for n in range(6):
        invoke("subscribers", "add", f"s{n}@example.org", "--author", "Taiming Lu")
    db = isolated / "newsletter.db"
    import gc

    gc.collect()  # the in-process CLI calls above leave connections for the collector
    store.checkpoint(db)
    assert not (isolated / "newsletter.db-wal").exists()  # nothing open here any more
    (isolated / "sym").mkdir()
    (isolated / "hard").mkdir()
    (isolated / "sym" / "news.db").symlink_to(db)
    os.link(db, isolated / "hard" / "news.db")
    env = {k: v for k, v in os.environ.items() if k != "NEWSLETTER_DB"}
    env["NEWSLETTER_SMTP_URL"] = smtp_server.url
    procs = [subprocess.Popen(
        [sys.executable, "-m", "newsletter", "run", "--all", "--wait", "60"],
        env={**env, "NEWSLETTER_DB": str(path)}, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
        for path in (isolated / "sym" / "news.db", isolated / "hard" / "news.db", db)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    rcpts = sorted(str(m["To"]) for m in smtp_server.messages)
    assert rcpts == [f"s{n}@example.org" for n in range(6)], outs
    assert sum("6 sent" in o for o in outs) == 1, outs


# --- broken databases under every command ------------------------------------------------

COMMANDS = [
    ["fetch"], ["run", "--all"], ["match", "ada@example.org"],
    ["preview", "ada@example.org"], ["subscribers", "list"],
    ["subscribers", "add", "x@example.org", "--topic", "x"],
    ["subscribers", "show", "ada@example.org"], ["subscribers", "export"],
    ["subscribers", "pause", "ada@example.org"], ["sources", "list"],
    ["sources", "disable", "nature"], ["deliveries", "list"], ["papers", "list"],
    ["briefs", "list"], ["briefs", "stats"],
]


def _digest(path: Path) -> str:
    if path.is_dir():
        return "dir:" + ",".join(sorted(p.name for p in path.iterdir()))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _break(kind: str, db: Path) -> None:
    if kind == "truncated":
        invoke("subscribers", "add", "ada@example.org", "--topic", "x")
        store.checkpoint(db)
        data = db.read_bytes()
        for extra in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            extra.unlink(missing_ok=True)
        db.write_bytes(data[: len(data) // 3])
    elif kind == "random-bytes":
        db.write_bytes(os.urandom(8192))
    elif kind == "folder":
        db.mkdir()
        (db / "x").write_text("x")
    elif kind == "read-only-file":
        invoke("subscribers", "add", "ada@example.org", "--topic", "x")
        store.checkpoint(db)
        db.chmod(0o444)
        db.parent.chmod(0o555)
    elif kind == "missing-folder-unwritable":
        db.parent.chmod(0o555)
        os.environ["NEWSLETTER_DB"] = str(db.parent / "nope" / "newsletter.db")  # monkeypatched


def _broken_db(isolated: Path, kind: str, monkeypatch: pytest.MonkeyPatch
               ) -> tuple[Path, str | None]:
    """A database broken in the way ``kind`` says, and its digest (None: no file)."""
    db = isolated / "sub" / "newsletter.db"
    db.parent.mkdir()
    monkeypatch.setenv("NEWSLETTER_DB", str(db))
    _break(kind, db)
    return db, _digest(db) if db.exists() else None


def _without_privileges() -> list[str]:
    """A prefix that runs a command without root's power to ignore file permissions
    (``setpriv`` from util-linux drops every capability), so read-only means read-only."""
    if os.geteuid() != 0:
        return []
    import shutil

    found = shutil.which("setpriv")
    require(found is not None, "needs util-linux's setpriv to drop root's capabilities")
    return [str(found), "--bounding-set", "-all", "--inh-caps", "-all"]


@pytest.mark.parametrize("kind", ["read-only-file", "missing-folder-unwritable"])
def test_unwritable_database_is_one_line_under_every_command(isolated, kind, monkeypatch):
    db, before = _broken_db(isolated, kind, monkeypatch)
    prefix = _without_privileges()
    try:
        for args in COMMANDS:
            proc = subprocess.run([*prefix, sys.executable, "-m", "newsletter", *args],
                                  env=dict(os.environ), cwd=ROOT, capture_output=True,
                                  text=True, timeout=120)
            output = (proc.stdout + proc.stderr).strip()
            assert proc.returncode in (1, 2), (args, output)
            lines = output.splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: "), (args, output)
            assert "database" in lines[0], (args, output)
            assert (_digest(db) if db.exists() else None) == before, args
    finally:
        db.parent.chmod(0o755)
        if db.is_file():
            db.chmod(0o644)


@pytest.mark.parametrize("kind", ["truncated", "random-bytes", "folder"])
def test_damaged_database_is_one_line_under_every_command(isolated, kind, monkeypatch):
    db, before = _broken_db(isolated, kind, monkeypatch)
    for args in COMMANDS:
        line = one_line_error(invoke(*args, ok=False))
        assert "database" in line, (args, line)
        assert (_digest(db) if db.exists() else None) == before, args


def test_a_locked_database_is_one_line(isolated, monkeypatch):
    invoke("subscribers", "add", "ada@example.org", "--topic", "x")
    holder = sqlite3.connect(isolated / "newsletter.db", timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        line = one_line_error(invoke("subscribers", "add", "b@example.org", "--topic", "y",
                                     ok=False))
    finally:
        holder.rollback()
        holder.close()
    assert "is locked by another program" in line


def test_raise_errors_still_shows_the_traceback(isolated, monkeypatch):
    (isolated / "newsletter.db").write_bytes(b"not a database at all" * 100)
    monkeypatch.setenv("NEWSLETTER_RAISE_ERRORS", "1")
    result = invoke("subscribers", "list", ok=False)
    assert result.exit_code != 0 and result.exception is not None
    assert not isinstance(result.exception, SystemExit)


# --- bad settings ------------------------------------------------------------------------


@pytest.mark.parametrize("name, value, says", [
    ("SMTP_RATE", "-5", "smtp_rate = -5.0 is out of range"),
    ("SMTP_RATE", "nan", "smtp_rate = nan is out of range"),
    ("SMTP_RATE", "inf", "smtp_rate = inf is out of range"),
    ("LLM_CONCURRENCY", "-1", "llm_concurrency = -1 is out of range"),
    ("FIRST_ISSUE_DAYS", "-10", "first_issue_days = -10 is out of range"),
    ("ARXIV_DELAY", "0.1", "arxiv_delay = 0.1 is out of range - use a number at least 3"),
    ("FROM_ADDR", "not an address", "from_addr = 'not an address' is not an email address"),
    ("FROM_ADDR", "a@example.org\r\nBcc: victim@example.org", "from_addr contains a line"),
    ("REPLY_TO", "nobody", "reply_to = 'nobody' is not an email address"),
    ("UNSUBSCRIBE_URL", "javascript:alert(1)//", "is not a https URL"),
    ("UNSUBSCRIBE_URL", "http://news.example.org/u", "is not a https URL"),
    ("SMTP_URL", "smtp://mail.example.org:notaport", "smtp_url: the value has a bad port"),
    ("SMTP_URL", "hunter2", "smtp_url: the value is not a smtp or smtps or smtp+starttls"),
    ("FETCH_BUDGET", "0", "fetch_budget = 0.0 is out of range"),
])
def test_bad_settings_are_refused_at_load_in_one_line(isolated, monkeypatch, name, value, says):
    monkeypatch.setenv(f"NEWSLETTER_{name}", value)
    for args in (["subscribers", "list"], ["run", "--all"], ["config"]):
        line = one_line_error(invoke(*args, ok=False))
        assert says in line, line
        assert "hunter2" not in line and "notaport" not in line.replace(says, "")
    assert not (isolated / "newsletter.db").exists()


@pytest.mark.parametrize("toml, says", [
    (b'from_addr = ["a@example.org", "b@example.org"]\n', "from_addr must be a string, not list"),
    (b'[brand]\nx = 1\n', "brand must be a string, not dict"),
    (b'smtp_rate = "fast"\n', "smtp_rate must be a number, not str"),
    (b'brand = "\xff\xfe caf\xe9"\n', "is not valid TOML (not UTF-8 text)"),
    (b'sources = ["sample", "nature"]\nbrand = "ok"\nsend_empty = "yes"\n',
     "send_empty must be true or false, not str"),
])
def test_bad_toml_is_one_line(isolated, toml, says):
    (isolated / "newsletter.toml").write_bytes(toml)
    line = one_line_error(invoke("subscribers", "list", ok=False))
    assert says in line, line


def test_a_bare_password_in_a_url_setting_is_never_echoed(isolated, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_IMAP_URL", "s3cret-pass")
    line = one_line_error(invoke("run", "--all", ok=False))
    assert "s3cret" not in line


def test_a_valid_configuration_still_loads(isolated, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_FROM_ADDR", "Lab News <news@lab.example.org>")
    monkeypatch.setenv("NEWSLETTER_UNSUBSCRIBE_URL", "https://lab.example.org/nl")
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", "smtp+starttls://bot:pw@mail.example.org:587")
    out = invoke("config").output
    assert "bot:***@mail.example.org:587" in out and ":pw@" not in out


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("topic, says", [
    ("(" * 300 + "rag" + ")" * 300, "more than 20 nested parentheses"),
    ("NOT " * 20000 + "rag", "is too long"),
    ("NOT " * 200 + "rag", None),  # long but shallow: accepted, parsed without recursion
])
def test_deep_topic_queries_are_refused_or_parsed_without_recursion(isolated, topic, says):
    result = invoke("subscribers", "add", "ada@example.org", "--topic", topic, ok=says is None)
    if says:
        assert says in one_line_error(result)


@pytest.mark.parametrize("args, says", [
    ([], "no filters - give at least one --author, --topic or --category"),
    (["--topic", ""], "empty topic filter"),
    (["--topic", "  "], "empty topic filter"),
    (["--author", "Ada Lovelace", "--exclude", "author:"], "exclude 'author:' names nobody"),
    (["--category", "cs.XX"], "'cs.XX' is not an arXiv category"),
    (["--category", "cs.cl"], "did you mean cs.CL?"),
    (["--exclude", "survey"], "no filters"),
])
def test_filters_that_match_nothing_are_refused(isolated, args, says):
    line = one_line_error(invoke("subscribers", "add", "ada@example.org", *args, ok=False))
    assert says in line, line


def test_real_categories_and_wildcards_are_accepted(isolated):
    invoke("subscribers", "add", "ada@example.org", "--category", "cs.CL", "--category",
           "hep-th", "--category", "q-bio.*", "--category", "cond-mat.str-el")


@pytest.mark.parametrize("content, says", [
    ("[" * 100_000 + "]" * 100_000, "JSON nested more than 20 deep"),
    ('[{"email": "a@example.org", "topics": ["x"], "max_papers": ' + "9" * 5000 + "}]",
     "a number of 5000 digits"),
    ('[{"email": "a@example.org", "topics": ["x"], "max_papers": NaN}]', "NaN is not a value"),
])
def test_hostile_json_imports_are_one_line_and_import_nothing(isolated, tmp_path, content,
                                                               says):
    path = tmp_path / "list.json"
    path.write_text(content)
    line = one_line_error(invoke("subscribers", "import", str(path), ok=False))
    assert says in line, line
    assert json.loads(invoke("subscribers", "list", "--json").output) == []


def test_csv_export_neutralises_formulas_and_the_round_trip_is_exact(isolated, tmp_path,
                                                                      monkeypatch):
    invoke("subscribers", "add", "ada@example.org", "--name", "=HYPERLINK(\"http://x\")",
           "--topic", "+rag", "--topic", "-noise", "--author", "@Ada Lovelace",
           "--author", "'=quoted already")
    invoke("subscribers", "add", "--name", "Bob", "--topic", "rag", "--", "-bob@example.org")
    exported = invoke("subscribers", "export", "--format", "csv").output
    cells = [c for row in csv.reader(io.StringIO(exported.lstrip("\ufeff"))) for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")], cells
    assert "'=HYPERLINK(\"http://x\")" in cells and "'-bob@example.org" in cells
    assert "'+rag|-noise" in cells
    path = tmp_path / "list.csv"
    path.write_text(exported, encoding="utf-8")
    fresh = tmp_path / "fresh.db"
    monkeypatch.setenv("NEWSLETTER_DB", str(fresh))
    invoke("subscribers", "import", str(path))
    assert invoke("subscribers", "export", "--format", "csv").output == exported
    sub = store.get_subscriber(store.open_db(fresh), "ada@example.org")
    assert sub.name == '=HYPERLINK("http://x")'
    assert sub.authors == ("@Ada Lovelace", "'=quoted already")


def test_internationalised_domains_keep_their_meaning(isolated):
    invoke("subscribers", "add", "a@straße.de", "--topic", "x")
    emails = [s["email"] for s in json.loads(invoke("subscribers", "list", "--json").output)]
    assert emails == ["a@xn--strae-oqa.de"]  # IDNA 2008; "strasse.de" is another domain
    one_line_error(invoke("subscribers", "add", "a@strasse.de\nBcc: x@y.org", "--topic", "x",
                          ok=False))


# --- feeds that glue affiliations onto names ---------------------------------------------


def test_affiliations_glued_to_author_names_are_dropped(http_server):
    http_server.serve("/tandf", (HOSTILE / "tandf.rdf").read_bytes(),
                      content_type="application/rss+xml")
    result = feeds.fetch("tandf", {"url": http_server.base + "/tandf"}, {}, Settings())
    assert result.error is None
    [paper] = result.papers
    assert paper.authors == ("Elizabeth Fronk", "Jane Q. Doe", "Pieter van der Berg",
                             "Amal Haddad")


@pytest.mark.parametrize("creator, name", [
    ("Elizabeth Fronk Collection Development Librarian, Kolwyck Library, University of "
     "Tennessee at Chattanooga, Chattanooga, Tennessee, USA", "Elizabeth Fronk"),
    ("Wei Zhang School of Computer Science, Fudan University, Shanghai, China", "Wei Zhang"),
    ("Ada Lovelace", None), ("A. Smith, B. Jones", None), ("Dean Martin", None),
])
def test_strip_affiliation(creator, name):
    assert feeds.strip_affiliation(creator) == name


# --- commands that crashed or disagreed --------------------------------------------------


def test_sources_disable_and_enable_a_journal_feed(isolated):
    invoke("sources", "enable", "nature")
    invoke("sources", "disable", "nature")
    rows = {r["name"]: r for r in json.loads(invoke("sources", "list", "--json").output)}
    assert rows["nature"]["enabled"] in (0, False)
    invoke("sources", "enable", "nature")
    rows = {r["name"]: r for r in json.loads(invoke("sources", "list", "--json").output)}
    assert rows["nature"]["enabled"] in (1, True)


def test_run_only_keeps_the_schedule_and_prints_each_skip_once(isolated, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-11-25T09:00:00+00:00")  # a Wednesday
    invoke("subscribers", "add", "fri@example.org", "--author", "Taiming Lu",
           "--frequency", "weekly", "--weekday", "fri")
    out = invoke("run", "--only", "fri@example.org").output
    assert "not an issue day (weekly)" in out
    assert not (isolated / "outbox").exists() or not list((isolated / "outbox").iterdir())
    invoke("subscribers", "add", "nobody@example.org", "--topic", "zzzqqq")
    out = invoke("run", "--all").output
    assert out.count("nobody@example.org") == 1, out


def test_preview_and_match_after_the_run_show_the_issue_that_was_sent(isolated):
    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu", "--topic",
           "world model")
    sent = invoke("run", "--all").output
    count = int(sent.split("ada@example.org")[1].split("papers")[0])
    assert count > 0
    result = invoke("preview", "ada@example.org", "--format", "text", "--out",
                    str(isolated / "p.txt"))
    assert f"({count} papers)" in result.output or "papers)" in result.output
    text = (isolated / "p.txt").read_text()
    mail, _ = parts(read_outbox(isolated / "outbox")["ada@example.org"])
    titles = [line for line in mail.splitlines() if line[:2].isdigit() and ". " in line]
    assert titles and all(t in text for t in titles)
    day = invoke("preview", "ada@example.org", "--date", "2026-11-22", "--format",
                 "text").output
    assert all(t in day for t in titles)
    explained = invoke("match", "ada@example.org", "--explain").output
    for line in explained.splitlines():
        if line.startswith("not sent:"):
            assert not any(t.split(". ", 1)[1] in line for t in titles), line
