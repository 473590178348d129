"""The morning job end to end, through the CLI, with real transports."""

import re
from pathlib import Path

import pytest
from conftest import invoke, parts, read_outbox

from newsletter import store


def _two_subscribers():
    invoke("subscribers", "add", "ada@example.org", "--name", "Ada",
           "--author", "Taiming Lu")
    invoke("subscribers", "add", "grace@example.edu", "--topic", "CRISPR",
           "--lang", "zh", "--timezone", "Asia/Shanghai")


def _numbered_titles(text: str) -> list[str]:
    return re.findall(r"^\d\d\. (.+)$", text, flags=re.M)


def test_run_sends_each_subscriber_their_own_papers_over_smtp(isolated, smtp_server,
                                                             monkeypatch):
    _two_subscribers()
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", smtp_server.url)
    out = invoke("run", "--all").output
    assert "2 sent" in out

    by_rcpt = {str(m["To"].addresses[0].addr_spec): m for m in smtp_server.messages}
    assert set(by_rcpt) == {"ada@example.org", "grace@example.edu"}
    for msg in by_rcpt.values():
        assert msg.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]

    ada_text, ada_html = parts(by_rcpt["ada@example.org"])
    grace_text, grace_html = parts(by_rcpt["grace@example.edu"])
    ada_titles, grace_titles = _numbered_titles(ada_text), _numbered_titles(grace_text)
    assert ada_titles and grace_titles and not set(ada_titles) & set(grace_titles)
    # every paper Ada got has her author on it; every paper Grace got says CRISPR
    for block in re.split(r"\n(?=\d\d\. )", ada_text)[1:]:
        assert "Taiming Lu" in block
    for block in re.split(r"\n(?=\d\d\. )", grace_text.split("==")[-1])[1:]:
        assert "crispr" in block.lower()
    assert "Generative World Explorer" in ada_html
    assert "交叉领域文献分析简报" in grace_html  # Chinese template strings
    assert "Extractive digest - not written by an LLM" in ada_text


def test_run_writes_outbox_when_no_smtp_and_is_idempotent(isolated):
    _two_subscribers()
    first = invoke("run", "--all").output
    lines = [line for line in first.splitlines() if line.startswith("sent")]
    assert len(lines) == 2
    files = sorted(p.name for p in (isolated / "outbox").iterdir())
    assert files == ["2026-11-22_ada@example.org.eml", "2026-11-22_ada@example.org.html",
                     "2026-11-22_grace@example.edu.eml", "2026-11-22_grace@example.edu.html"]
    msgs = read_outbox(isolated / "outbox")
    assert msgs["ada@example.org"]["Message-ID"].endswith("@localhost>")

    second = invoke("run", "--all").output
    assert "Summary: 0 due, 2 skipped (2 already sent today)" in second
    assert not [line for line in second.splitlines() if line.startswith("sent")]


def test_dry_run_records_and_sends_nothing(isolated, smtp_server, monkeypatch):
    _two_subscribers()
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", smtp_server.url)
    out = invoke("run", "--all", "--dry-run").output
    assert "2 would-send" in out
    assert smtp_server.messages == []
    again = invoke("run", "--all", "--dry-run").output
    assert "Summary: 2 due, 2 would-send" in again
    assert "Transport: smtp://127.0.0.1:" in again and "(dry run: nothing sent)" in again


def test_send_hour_respected_without_all(isolated, monkeypatch):
    invoke("subscribers", "add", "late@example.org", "--author", "Taiming Lu",
           "--send-hour", "23")
    out = invoke("run").output
    assert "skipped    late@example.org" in out and "not due yet" in out
    assert "1 sent" in invoke("run", "--all").output


def test_smtp_refusal_marks_failure_and_exits_non_zero(isolated, smtp_server, monkeypatch):
    _two_subscribers()
    smtp_server.reject["grace@example.edu"] = "550 5.1.1 mailbox unavailable"
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", smtp_server.url)
    result = invoke("run", "--all", ok=False)
    assert result.exit_code == 1
    assert "failed     grace@example.edu" in result.output
    assert "550 5.1.1 mailbox unavailable" in result.output
    assert "Summary: 2 due, 1 sent, 1 failed (1 550 5.1.1 mailbox unavailable)" in result.output
    assert result.output.rstrip().endswith("Error: 1 deliveries did not go out - see above")
    assert [str(m["To"].addresses[0].addr_spec) for m in smtp_server.messages] == \
        ["ada@example.org"]


def test_a_failed_delivery_is_not_retried_until_asked(isolated, smtp_server, monkeypatch):
    _two_subscribers()
    smtp_server.reject["grace@example.edu"] = "550 5.1.1 mailbox unavailable"
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", smtp_server.url)
    assert invoke("run", "--all", ok=False).exit_code == 1
    attempts = len(smtp_server.envelopes)
    again = invoke("run", "--all").output  # later the same day: nothing is tried again
    assert "skipped    grace@example.edu" in again
    assert "failed earlier, not retried (550 5.1.1 mailbox unavailable) - 'newsletter " \
        "deliveries retry' sends it again" in again
    assert len(smtp_server.envelopes) == attempts
    db = store.open_db(isolated / "newsletter.db")
    [row] = store.list_deliveries(db, status="failed")
    assert row["email"] == "grace@example.edu" and row["attempts"] == 1
    out = invoke("deliveries", "retry", "--email", "grace@example.edu").output
    assert out == "1 failed deliveries set back to pending: the next run sends them\n"
    smtp_server.reject.clear()  # the cause was fixed
    out = invoke("run", "--all").output
    assert "sent       grace@example.edu" in out
    sent = {r["email"]: r for r in store.list_deliveries(db, status="sent")}
    assert sent["grace@example.edu"]["attempts"] == 2 and len(sent) == 2
    assert invoke("deliveries", "retry").output.startswith("0 failed deliveries")


def test_unreachable_smtp_server_is_a_clear_failure(isolated, monkeypatch):
    _two_subscribers()
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", "smtp://127.0.0.1:9")
    result = invoke("run", "--all", ok=False)
    assert result.exit_code == 1
    assert "cannot reach SMTP server 127.0.0.1:9" in result.output


def test_password_never_sent_in_clear_to_remote_host(isolated, monkeypatch):
    _two_subscribers()
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", "smtp://me:hunter2@mail.example.org:25")
    monkeypatch.setenv("NEWSLETTER_FROM_ADDR", "news@academichub.example")
    monkeypatch.setenv("NEWSLETTER_SECRET", "s" * 32)
    result = invoke("run", "--all", ok=False)
    assert result.exit_code == 1
    assert "refusing to send the SMTP password to mail.example.org unencrypted" in \
        result.output
    assert "hunter2" not in result.output


@pytest.mark.parametrize("env, refusal", [
    ({}, "refusing to send through mail.example.org from 'AcademicHub <newsletter@localhost>'"
         " - set NEWSLETTER_FROM_ADDR"),
    ({"NEWSLETTER_FROM_ADDR": "news@academichub.example"},
     "refusing to send through mail.example.org without NEWSLETTER_SECRET"),
])
def test_run_refuses_a_real_server_from_localhost_or_without_secret(isolated, monkeypatch, env,
                                                                   refusal):
    _two_subscribers()
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", "smtps://me:hunter2@mail.example.org:465")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = invoke("run", "--all", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith("Error: " + refusal), result.output
    assert "hunter2" not in result.output
    db = store.open_db(isolated / "newsletter.db")
    assert store.list_deliveries(db) == []  # refused before anything was planned or sent
    # a dry run sends nothing, so it is allowed
    assert "would-send" in invoke("run", "--all", "--dry-run").output


def test_fetch_reports_counts_and_is_idempotent(isolated):
    out = invoke("fetch").output
    assert out.endswith("43 new papers (0 updated) from 1 of 1 sources, 0 requests\n")
    assert invoke("fetch").output.endswith(
        "0 new papers (0 updated) from 1 of 1 sources, 0 requests\n")


def test_fetch_fails_only_when_every_source_fails(isolated, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SOURCES", "sample,nonesuch")
    out = invoke("fetch").output
    assert "nonesuch: FAILED - unknown source 'nonesuch'" in out
    monkeypatch.setenv("NEWSLETTER_SOURCES", "nonesuch")
    result = invoke("fetch", ok=False)
    assert result.exit_code == 1
    assert result.output.endswith("Error: every source failed - see the reasons above\n")


def test_demo_command_fills_the_outbox(isolated, tmp_path):
    out = invoke("demo", "--outbox", str(tmp_path / "demo-out"),
                 "--db", str(tmp_path / "demo.db")).output
    assert out.startswith("Fetched 43 sample papers\n")
    emls = list((tmp_path / "demo-out").glob("*.eml"))
    htmls = list((tmp_path / "demo-out").glob("*.html"))
    assert len(emls) == len(htmls) == 4
    for line in out.splitlines()[1:]:
        address, count, _, eml, html = line.split()
        assert int(count) > 0
        assert eml.endswith(f"_{address}.eml") and html == eml.removesuffix(".eml") + ".html"
        assert f"<{address}>".encode() in Path(eml).read_bytes()  # the To: header
        assert Path(html).read_text().startswith("<!doctype html>")


def test_a_long_list_of_skipped_subscribers_is_cut_short_unless_verbose(isolated, tmp_path):
    """An hourly run of a big list skips most of it: the log lists the first 50 by name
    and counts the rest; -v lists every one; the summary counts them all either way."""
    people = [f"r{i:02d}@example.org" for i in range(53)]
    (tmp_path / "list.csv").write_text("email,send_hour,authors\n" + "".join(
        f"{p},23,Taiming Lu\n" for p in people), encoding="utf-8")
    invoke("subscribers", "import", str(tmp_path / "list.csv"))
    out = invoke("run", "--no-fetch").output.splitlines()
    named = [line for line in out if line.startswith("skipped    r")]
    assert [line.split()[1] for line in named] == people[:50]
    assert "skipped    ... and 3 more (-v lists every one, --json has them all)" in out
    assert "Summary: 0 due, 53 skipped (53 not due yet (sends at 23:00 UTC))" in out
    every = invoke("run", "--no-fetch", "-v").output.splitlines()
    assert [line.split()[1] for line in every if line.startswith("skipped    r")] == people
    assert not [line for line in every if "more (-v" in line]
