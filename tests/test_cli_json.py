"""--json: one document on standard output, in the shape documented in docs/json/ (and the
README), human lines on standard error, the same exit codes; and the GitHub Actions run
page (job summary and annotations) written by `run` when GITHUB_ACTIONS is set.

conftest.invoke checks every --json output of every test against its schema; the tests
here make sure each documented command is exercised with real content, on success and on
failure."""

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import DATA, ROOT, invoke
from jsonshape import SCHEMAS, check, problems, schema_for

from newsletter.cli import cli
from newsletter.ops.report import FetchLine, RunLine, RunReport, step_summary, workflow_commands


def json_commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> set[str]:
    found = set()
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            found |= json_commands(cmd, (*path, name))
        elif any("--json" in p.opts for p in cmd.params if isinstance(p, click.Option)):
            found.add("-".join((*path, name)))
    return found


def test_every_json_command_has_a_documented_shape_and_no_shape_is_orphaned():
    documented = {p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json")}
    assert json_commands() == documented
    assert {"run", "fetch", "sources-check", "unsubscribes-sync", "deliveries-list",
            "subscribers-import"} <= documented
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in documented:
        assert f"docs/json/{name}.schema.json" in readme


def test_the_checker_finds_what_is_wrong():
    schema = schema_for("fetch")
    good = {"started": "2026-11-22T09:00:00+00:00", "seconds": 0.1, "ok": True,
            "counts": {"sources": 1, "failed": 0, "partial": 0, "new": 3, "updated": 0,
                       "requests": 1},
            "sources": [{"source": "nature", "status": "ok", "new": 3, "updated": 0,
                         "requests": 1, "reason": None, "note": None, "seconds": 0.1}]}
    assert problems(good, schema) == []
    bad = json.loads(json.dumps(good))
    bad["counts"]["new"] = "3"
    del bad["ok"]
    bad["extra"] = 1
    bad["sources"][0]["status"] = "fine"
    bad["sources"][0]["requests"] = True
    assert sorted(problems(bad, schema)) == sorted([
        "$.counts.new: str '3' is not integer", "$: missing 'ok'",
        "$: 'extra' is not documented",
        "$.sources[0].status: 'fine' is not one of ['ok', 'partial', 'failed', 'not-modified']",
        "$.sources[0].requests: bool True is not integer"])
    with pytest.raises(ValueError, match="does not implement"):
        problems({}, {"type": "object", "patternProperties": {}})


def test_run_json_success_and_dry_run(isolated):
    invoke("subscribers", "import", str(ROOT / "subscribers" / "example.csv"))
    result = invoke("run", "--all", "--dry-run", "--json")
    doc = json.loads(result.stdout)
    assert doc["dry_run"] is True and doc["ok"] is True
    assert doc["counts"]["due"] == 4 and doc["counts"]["would_send"] == 4
    assert {d["status"] for d in doc["deliveries"]} == {"would-send"}
    assert doc["sources"][0]["source"] == "sample" and doc["sources"][0]["new"] == 43
    assert "Summary: 4 due, 4 would-send" in result.stderr  # people's lines on stderr
    doc = json.loads(invoke("run", "--all", "--json", "--no-fetch").stdout)
    assert doc["counts"]["sent"] == 4 and doc["sources"] == []
    assert all(d["reason"] is None and d["detail"].endswith(".eml")
               for d in doc["deliveries"])
    again = json.loads(invoke("run", "--json").stdout)
    assert again["counts"]["skipped"] == 4 and again["counts"]["sent"] == 0
    assert {d["reason"] for d in again["deliveries"]} == {"already sent today"}


def a_broken_source_and_two_refused_addresses(smtp_server, http_server, monkeypatch):
    """The source "broken" (served at /broken) next to the sample; three subscribers, of
    whom the SMTP stand-in refuses ada for good (550) and bob for now (452)."""
    invoke("sources", "add", "broken", http_server.base + "/broken")
    monkeypatch.setenv("NEWSLETTER_SOURCES", "sample,broken")
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", smtp_server.url)
    smtp_server.reject["ada@example.org"] = "550 5.1.1 no such user"
    smtp_server.reject["bob@example.org"] = "452 4.2.2 mailbox full"
    for who in ("ada@example.org", "bob@example.org", "cy@example.org"):
        invoke("subscribers", "add", who, "--author", "Taiming Lu")


def test_run_json_failures_keep_exit_code_1_and_stdout_one_document(
        isolated, smtp_server, http_server, monkeypatch):
    http_server.serve("/broken", (DATA / "feeds" / "not-a-feed.html").read_bytes(),
                      content_type="text/html")
    a_broken_source_and_two_refused_addresses(smtp_server, http_server, monkeypatch)
    result = invoke("run", "--all", "--json", ok=False)
    assert result.exit_code == 1
    doc = check(cli, ["run"], result.stdout)
    assert doc["ok"] is False
    c = doc["counts"]
    assert (c["due"], c["sent"], c["failed"], c["deferred"]) == (3, 1, 1, 1)
    by = {d["email"]: d for d in doc["deliveries"]}
    assert "550" in by["ada@example.org"]["reason"] and "452" in by["bob@example.org"]["reason"]
    assert by["cy@example.org"]["reason"] is None
    broken = next(s for s in doc["sources"] if s["source"] == "broken")
    assert broken["status"] == "failed" and broken["reason"].startswith("not a feed")
    assert "Error: 2 deliveries did not go out" in result.stderr


def test_fetch_json_and_its_exit_code_when_every_source_fails(isolated, http_server,
                                                             monkeypatch):
    doc = json.loads(invoke("fetch", "--json").stdout)
    assert doc["counts"]["new"] == 43 and doc["sources"][0]["status"] == "ok"
    http_server.serve("/broken", "<html>Sign in</html>", content_type="text/html")
    invoke("sources", "add", "broken", http_server.base + "/broken")
    monkeypatch.setenv("NEWSLETTER_SOURCES", "broken")
    result = invoke("fetch", "--json", ok=False)
    assert result.exit_code == 1
    doc = check(cli, ["fetch"], result.stdout)
    assert doc["ok"] is False and doc["counts"]["failed"] == 1
    assert doc["sources"][0]["reason"].startswith("not a feed")


def test_sources_check_json_on_success_and_failure(isolated, http_server):
    http_server.serve("/nature.rss", (DATA / "feeds" / "nature.rss").read_bytes(),
                      content_type="application/rss+xml")
    invoke("sources", "add", "nature", http_server.base + "/nature.rss")
    doc = json.loads(invoke("sources", "check", "nature", "--json").stdout)
    assert doc["status"] == "ok" and doc["count"] == 3 == len(doc["papers"])
    http_server.serve("/broken", "<html>Sign in</html>", content_type="text/html")
    invoke("sources", "add", "broken", http_server.base + "/broken")
    result = invoke("sources", "check", "broken", "--json", ok=False)
    assert result.exit_code == 1
    doc = check(cli, ["sources", "check"], result.stdout)
    assert doc["status"] == "failed" and doc["papers"] == []


def test_import_json_reports_every_row_and_keeps_the_exit_code(isolated, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("email,name,topics\nada@example.org,Ada,rag\nnot-an-address,X,rag\n",
                   encoding="utf-8")
    result = invoke("subscribers", "import", str(bad), "--json", ok=False)
    assert result.exit_code == 1
    doc = check(cli, ["subscribers", "import"], result.stdout)
    assert doc["written"] is False and doc["counts"] == {
        "added": 1, "updated": 0, "unchanged": 0, "rejected": 1}
    assert doc["rows"][1]["row"] == 3 and doc["rows"][1]["status"] == "rejected"
    assert doc["rows"][1]["reason"] and "nothing imported" in doc["error"]
    doc = json.loads(invoke("subscribers", "import", str(bad), "--skip-invalid",
                            "--json").stdout)
    assert doc["written"] is True and doc["counts"]["added"] == 1


def test_expire_and_forget_json(isolated, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", "k")
    invoke("subscribers", "add", "late@example.org", "--topic", "x", "--confirm")
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-12-22T09:00:00+00:00")
    doc = json.loads(invoke("subscribers", "expire", "--yes", "--json").stdout)
    assert doc == {"days": 7, "count": 1, "expired": ["late@example.org"]}
    invoke("subscribers", "add", "ada@example.org", "--topic", "x")
    doc = json.loads(invoke("subscribers", "forget", "ada@example.org", "--yes",
                            "--json").stdout)
    assert doc["email"] == "ada@example.org" and doc["residue"] == []


def test_listing_commands_after_a_run(isolated):
    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu")
    invoke("run", "--all")
    [row] = json.loads(invoke("deliveries", "list", "--json").stdout)
    assert row["status"] == "sent" and row["paper_ids"]
    for args in (("subscribers", "--json"), ("subscribers", "show", "ada@example.org",
                 "--history", "--json"), ("sources", "list", "--json"),
                 ("papers", "list", "--limit", "2", "--json"),
                 ("papers", "show", "2411.11844", "--json"), ("briefs", "--json"),
                 ("briefs", "stats", "--json"), ("match", "ada@example.org", "--json")):
        assert json.loads(invoke(*args).stdout) is not None  # checked by invoke


# --- GitHub Actions -------------------------------------------------------------------------


def test_actions_summary_and_annotations(isolated, smtp_server, http_server, monkeypatch):
    http_server.serve("/broken", "<html>Sign in</html>", content_type="text/html")
    a_broken_source_and_two_refused_addresses(smtp_server, http_server, monkeypatch)
    summary = Path(isolated / "step-summary.md")
    summary.write_text("## an earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = CliRunner().invoke(cli, ["run", "--all"])
    assert result.exit_code == 1
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("## an earlier step\n## Morning run\n")  # appended
    assert "| 3 | 1 | 0 | 1 | 1 |" in text  # due, sent, skipped, deferred, failed
    assert "| ada@example.org | failed | 550 5.1.1 no such user |" in text
    assert "| bob@example.org | deferred | 452 4.2.2 mailbox full |" in text
    assert "| broken | failed | not a feed" in text
    assert "Brief fallbacks" not in text and "LLM: 0 calls, $0.0000" in text
    lines = result.stdout.splitlines()
    assert "::error title=Delivery failed::ada@example.org: 550 5.1.1 no such user" in lines
    assert "::warning title=Delivery deferred::bob@example.org: 452 4.2.2 mailbox full" in lines
    assert any(x.startswith("::error title=Source failed::broken: not a feed") for x in lines)
    # with --json the annotations go to stderr, so stdout stays one document
    summary.write_text("", encoding="utf-8")
    smtp_server.reject.clear()
    result = CliRunner().invoke(cli, ["run", "--all", "--json"])
    by = {d["email"]: d["status"] for d in json.loads(result.stdout)["deliveries"]}
    assert by["bob@example.org"] == "sent"  # the deferred one went out this time
    assert "::error title=Source failed::broken" in result.stderr
    assert "| broken | failed |" in summary.read_text(encoding="utf-8")


def test_actions_output_escapes_outside_text_and_caps_annotations():
    report = RunReport(due=13, lines=[
        RunLine(f"p{n}@example.org", "failed", 1, "550 bad|<b>x</b>\n::error::fake %0A")
        for n in range(13)],
        fetched=[FetchLine("feed", error="oops\r\n`code` [link](http://x)")],
        brief_notes=["the model failed: *timeout*"], llm_calls=2, llm_cost_usd=0.0123,
        operator_errors=["no API key for openai/gpt-4o-mini"])
    md = step_summary(report)
    assert "550 bad\\|&lt;b&gt;x&lt;/b&gt; ::error::fake %0A" in md
    assert "oops  \\`code\\` \\[link\\](http://x)" in md
    assert "- the model failed: \\*timeout\\*" in md and "LLM: 2 calls, $0.0123" in md
    commands = workflow_commands(report)
    assert "- no API key for openai/gpt\\-4o\\-mini" not in md  # '-' is not markup
    assert "### The brief could not use the model (fix the settings)" in md
    assert "- no API key for openai/gpt-4o-mini" in md
    assert commands[-1] == ("::error title=Brief::the brief could not use the model: "
                            "no API key for openai/gpt-4o-mini")
    commands = commands[:-1]
    assert len(commands) == 12  # ten deliveries, "and 3 more", the source
    assert commands[0] == ("::error title=Delivery failed::p0@example.org: "
                           "550 bad|<b>x</b>%0A::error::fake %250A")
    assert commands[10] == "::error title=Delivery failed::and 3 more (see the job summary)"
    assert commands[11] == ("::error title=Source failed::feed: oops%0D%0A`code` "
                            "[link](http://x)")
    assert all("\n" not in c and "\r" not in c for c in commands)


def test_no_actions_output_without_github_actions(isolated, monkeypatch):
    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu")
    summary = isolated / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out = invoke("run", "--all").output
    assert not summary.exists() and "::" not in out


def test_config_json_masks_secrets(isolated, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", "smtp://me:hunter2@mail.example.org:25")
    monkeypatch.setenv("NEWSLETTER_SECRET", "sign-with-this")
    result = invoke("config", "--json")
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["smtp_url"] == {"name": "smtp_url", "value": "smtp://me:***@mail.example.org:25",
                                "secret": True, "origin": "NEWSLETTER_SMTP_URL"}
    assert rows["secret"]["value"] == "***" and rows["llm_concurrency"]["value"] == 4
    assert rows["send_empty"]["value"] is False and rows["db"]["origin"] == "NEWSLETTER_DB"
    assert "hunter2" not in result.output and "sign-with-this" not in result.output


def test_unsubscribes_sync_json_over_a_real_mailbox(isolated, imap_server, monkeypatch):
    from test_unsubscribe import SECRET, bounce, mail

    from newsletter.lists.tokens import unsubscribe_token

    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("NEWSLETTER_IMAP_URL", imap_server.url)
    for who in ("ada@example.org", "cy@example.org"):
        invoke("subscribers", "add", who, "--author", "Taiming Lu")
    imap_server.deliver(mail("ada@example.org",
                             f"unsubscribe {unsubscribe_token(SECRET, 'ada@example.org')}"))
    imap_server.deliver(mail("cy@example.org", "unsubscribe 0123456789abcdef0123456789abcdef"))
    imap_server.deliver(bounce("cy@example.org"))
    imap_server.deliver(mail("colleague@example.org", "Great issue today!", "thanks"))
    result = invoke("unsubscribes", "sync", "--json")
    doc = json.loads(result.stdout)
    assert doc["counts"] == {"unsubscribed": 1, "bounced": 1, "soft_bounces": 0,
                             "complained": 0, "paused": 0, "confirmed": 0, "rejected": 1,
                             "ignored": 1}
    by = {(r["status"], r["email"]): r["reason"] for r in doc["records"]}
    assert by[("unsubscribed", "ada@example.org")] is None
    assert by[("bounced", "cy@example.org")].startswith("5.1.1")
    assert "no valid token" in by[("rejected", None)]
    assert "1 unsubscribed, 1 bounced" in result.stderr
