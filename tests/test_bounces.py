"""Bounces and complaints: the parser on messages written for these tests (imitations of
each format, tests/data/bounces/README.md), the mailbox acting on them over a real IMAP
server (dovecot), and - where it exists - agreement with the real corpus in
../shared/eval/bounces/ (read in place; see scripts/eval_bounces.py and `make eval`).

In CI the corpus is absent: its tests are then not collected (nothing skips); the
imitations below cover every kind."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import ROOT, invoke

from newsletter import store
from newsletter.lists import bounces

HERE = Path(__file__).resolve().parent / "data" / "bounces"
EXPECTED = json.loads((HERE / "expected.json").read_text(encoding="utf-8"))
sys.path.insert(0, str(ROOT / "scripts"))
import eval_bounces  # noqa: E402

CORPUS = eval_bounces.corpus_dir()
HAVE_CORPUS = (CORPUS / "MANIFEST.json").exists()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parse_imitations(name):
    want = EXPECTED[name]
    got = bounces.parse_bytes((HERE / name).read_bytes())
    assert got.kind == want["kind"]
    assert got.outcome == want["outcome"]
    assert {f.address: "hard" if f.hard else "soft" for f in got.failures} == want["failed"]
    assert list(got.complaints) == want.get("complaints", [])
    assert list(got.delayed) == want.get("delayed", [])
    if "message_ids" in want:
        assert list(got.message_ids) == want["message_ids"]


def test_every_imitation_is_listed():
    assert sorted(p.name for p in HERE.glob("*.eml")) == sorted(EXPECTED)


def test_hostile_input_is_capped():
    many = "".join(f"<user{i}@example.org>: 550 5.1.1 user unknown\n" for i in range(500))
    raw = (f"From: MAILER-DAEMON@x.example\nSubject: failure notice\n\n"
           f"This is a permanent error.\n{many}").encode()
    got = bounces.parse_bytes(raw)
    assert len(got.failures) == bounces.MAX_RECIPIENTS
    huge = b"From: MAILER-DAEMON@x.example\nSubject: failure notice\n\n" + b"x" * 5_000_000
    assert bounces.parse_bytes(huge).failures == ()
    garbage = bytes(range(256)) * 50
    assert bounces.parse_bytes(garbage).outcome == "ignore"


# --- the mailbox acting on them ------------------------------------------------------------

SECRET = "test-signing-key"


@pytest.fixture
def mailbox(isolated, imap_server, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("NEWSLETTER_IMAP_URL", imap_server.url)
    monkeypatch.setenv("NEWSLETTER_FROM_ADDR", "AcademicHub <daily@academichub.example>")
    for address in ("ada@example.org", "bo@example.org", "cy@example.org", "dee@example.org"):
        invoke("subscribers", "add", address, "--author", "Taiming Lu")
    return imap_server


def statuses(path: Path) -> dict[str, str]:
    db = store.open_db(path / "newsletter.db")
    return {s.email: s.status for s in store.list_subscribers(db)}


def test_complaint_unsubscribes_at_once_and_hard_bounce_bounces(mailbox, isolated):
    mailbox.deliver((HERE / "arf.eml").read_bytes())
    mailbox.deliver((HERE / "dsn-global.eml").read_bytes())  # 李娜 is nobody here
    mailbox.deliver((HERE / "dsn-delayed.eml").read_bytes())
    mailbox.deliver((HERE / "autoreply.eml").read_bytes())
    mailbox.deliver((HERE / "dsn-hard.eml").read_bytes().replace(b"ada@", b"dee@"))
    out = invoke("unsubscribes", "sync").output
    assert "complained   ada@example.org (unsubscribed)" in out
    assert "bounced      dee@example.org (5.1.1 550 5.1.1 <dee@example.org>: Recipient " \
        "address rejected: User unknown in virtual mailbox table)" in out
    assert "soft bounce  bo@example.org (1 in 30 days)" in out
    assert out.rstrip().endswith("0 unsubscribed, 1 bounced, 1 soft bounces, 1 complaints, "
                                 "0 confirmed, 0 rejected, 1 other messages left unread")
    assert statuses(isolated) == {"ada@example.org": "unsubscribed", "bo@example.org": "active",
                                  "cy@example.org": "active", "dee@example.org": "bounced"}
    db = store.open_db(isolated / "newsletter.db")
    assert store.subscriber_history(db, "ada@example.org")[-1]["origin"] == "complaint"
    assert mailbox.unseen() == 1  # the out-of-office reply is left for a person


def test_soft_bounces_pause_at_the_limit(mailbox, isolated, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SOFT_BOUNCE_LIMIT", "2")
    mailbox.deliver((HERE / "dsn-soft.eml").read_bytes())
    out = invoke("unsubscribes", "sync").output
    assert "soft bounce  cy@example.org (1 in 30 days)" in out
    assert statuses(isolated)["cy@example.org"] == "active"
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-11-24T09:00:00+00:00")
    mailbox.deliver((HERE / "dsn-soft.eml").read_bytes())
    out = invoke("unsubscribes", "sync").output
    assert "paused       cy@example.org (too many soft bounces)" in out
    assert statuses(isolated)["cy@example.org"] == "paused"
    # resuming (later that day) starts the count again
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-11-24T12:00:00+00:00")
    invoke("subscribers", "resume", "cy@example.org")
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-11-25T09:00:00+00:00")
    mailbox.deliver((HERE / "dsn-soft.eml").read_bytes())
    assert "soft bounce  cy@example.org (1 in 30 days)" in invoke("unsubscribes", "sync").output
    assert statuses(isolated)["cy@example.org"] == "active"


def test_a_redacted_complaint_is_traced_by_its_message_id(mailbox, isolated, monkeypatch):
    """The report names nobody; the Message-ID of the issue says who it went to."""
    invoke("run", "--all")
    db = store.open_db(isolated / "newsletter.db")
    delivery = store.get_delivery(db, "bo@example.org",
                                  __import__("datetime").date(2026, 11, 22))
    assert delivery is not None
    raw = (HERE / "arf-redacted.eml").read_bytes().replace(
        b"<20261123.bbbbbbbbbbbbbbbbbbbb@academichub.example>",
        delivery["message_id"].encode())
    mailbox.deliver(raw)
    assert "complained   bo@example.org (unsubscribed)" in invoke("unsubscribes", "sync").output
    assert statuses(isolated)["bo@example.org"] == "unsubscribed"
    assert statuses(isolated)["ada@example.org"] == "active"


def test_a_huge_report_is_read_from_its_first_megabyte(mailbox, isolated):
    raw = (HERE / "dsn-hard.eml").read_bytes().replace(b"ada@", b"dee@")
    mailbox.deliver(raw + b"x" * 3_000_000 + b"\r\n")  # an epilogue no one needs
    assert "bounced      dee@example.org" in invoke("unsubscribes", "sync").output
    assert statuses(isolated)["dee@example.org"] == "bounced"


def test_qmail_and_exim_bounces(mailbox, isolated):
    mailbox.deliver((HERE / "qmail.eml").read_bytes())
    mailbox.deliver((HERE / "exim.eml").read_bytes())
    out = invoke("unsubscribes", "sync").output
    assert "bounced      cy@example.org" in out and "soft bounce  bo@example.org" in out
    assert statuses(isolated)["cy@example.org"] == "bounced"
    assert statuses(isolated)["bo@example.org"] == "active"


# --- the real corpus, where it exists ----------------------------------------------------

FLOORS = eval_bounces.FLOORS  # agreement per kind, as measured, rounded down

if HAVE_CORPUS:
    ROWS = eval_bounces.evaluate(CORPUS)

    @pytest.mark.parametrize("group", sorted(FLOORS))
    def test_corpus_agreement(group):
        rows = [r for r in ROWS if r["group"] == group and r["agree"] is not None]
        assert rows
        share = sum(r["agree"] for r in rows) / len(rows)
        assert share >= FLOORS[group], (group, share)

    def test_corpus_never_calls_a_complaint_or_auto_reply_a_hard_bounce():
        for r in ROWS:
            if r["expected"] in ("complaint", "ignore"):
                assert r["outcome"] != "hard", r
            if r["kind"] == "arf":
                assert r["outcome"] == "complaint", r

    def test_corpus_is_read_in_place_not_copied():
        names = {p.name for p in CORPUS.rglob("*") if p.is_file() and p.suffix in (".eml",
                                                                                 ".txt")}
        mine = {p.name for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts
                and "node_modules" not in p.parts and p.suffix in (".eml", ".txt")}
        assert not names & mine
