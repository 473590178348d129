"""edit, pause/resume, list filters, history, consent and forget, through the CLI."""

import hashlib
import json
import sqlite3
from email import message_from_bytes, policy

import pytest
from conftest import invoke, parts

from newsletter import store
from newsletter.lists import roster, tokens

SECRET = "test-secret-for-signing"


def db(isolated):
    return store.open_db(isolated / "newsletter.db")


def add_two():
    invoke("subscribers", "add", "ada@example.org", "--name", "Ada", "--author", "Taiming Lu",
           "--topic", "diffusion models")
    invoke("subscribers", "add", "li.wei@example.cn", "--name", "李伟", "--lang", "zh",
           "--topic", "CRISPR", "--timezone", "Asia/Shanghai")


# --- edit ---------------------------------------------------------------------------------


def test_edit_prints_one_line_per_change_and_stores_them(isolated):
    add_two()
    out = invoke("subscribers", "edit", "ADA@example.org", "--add-author", "Yann LeCun",
                 "--remove-topic", "Diffusion  Models", "--add-topic", "world models",
                 "--add-category", "cs.LG", "--add-exclude", "survey", "--name",
                 "Ada Lovelace", "--lang", "zh", "--timezone", "Europe/London",
                 "--send-hour", "6", "--frequency", "weekly", "--weekday", "FRI",
                 "--max-papers", "20").output
    assert out == ("name: Ada -> Ada Lovelace\n"
                   "language: en -> zh\n"
                   "time zone: UTC -> Europe/London\n"
                   "send hour: 7 -> 6\n"
                   "max papers: 10 -> 20\n"
                   "frequency: daily -> weekly (fri)\n"
                   "added author: Yann LeCun\n"
                   "removed topic: diffusion models\n"
                   "added topic: world models\n"
                   "added category: cs.LG\n"
                   "added exclude: survey\n")
    sub = store.get_subscriber(db(isolated), "ada@example.org")
    assert (sub.name, sub.language, sub.timezone, sub.send_hour, sub.max_papers) == \
        ("Ada Lovelace", "zh", "Europe/London", 6, 20)
    assert (sub.frequency, sub.weekday) == ("weekly", "fri")
    assert sub.authors == ("Taiming Lu", "Yann LeCun")
    assert sub.topics == ("world models",)
    assert (sub.categories, sub.exclude) == (("cs.LG",), ("survey",))


def test_edit_removes_filters_and_weekly_to_daily_clears_the_day(isolated):
    add_two()
    invoke("subscribers", "edit", "ada@example.org", "--frequency", "weekly")
    assert store.get_subscriber(db(isolated), "ada@example.org").weekday == "mon"
    out = invoke("subscribers", "edit", "ada@example.org", "--remove-author", "Lu, Taiming",
                 "--frequency", "weekdays").output
    assert out == "frequency: weekly (mon) -> weekdays\nremoved author: Taiming Lu\n"
    sub = store.get_subscriber(db(isolated), "ada@example.org")
    assert (sub.authors, sub.frequency, sub.weekday) == ((), "weekdays", None)


def test_edit_with_nothing_new_says_so(isolated):
    add_two()
    out = invoke("subscribers", "edit", "ada@example.org", "--add-author", "Taiming Lu",
                 "--name", "Ada").output
    assert out == "Nothing changed for ada@example.org\n"
    history = store.subscriber_history(db(isolated), "ada@example.org")
    assert [e["event"] for e in history] == ["added"]


def test_edit_refuses_a_broken_query_with_its_position_and_writes_nothing(isolated):
    add_two()
    result = invoke("subscribers", "edit", "ada@example.org", "--name", "Changed",
                    "--add-topic", "(protein AND", ok=False)
    assert result.exit_code == 1
    assert result.output == "Error: topic '(protein AND': a word is missing at position 13\n"
    sub = store.get_subscriber(db(isolated), "ada@example.org")
    assert (sub.name, sub.topics) == ("Ada", ("diffusion models",))
    assert [e["event"] for e in store.subscriber_history(db(isolated), sub.email)] == ["added"]


@pytest.mark.parametrize("args, message", [
    (["--remove-topic", "quantum"],
     "ada@example.org has no topic 'quantum' - see \"newsletter subscribers show "
     "ada@example.org\""),
    (["--weekday", "tue"],
     "weekday 'tue' applies only to weekly issues - set the frequency to weekly"),
    (["--add-author", "Lu"], "author 'Lu': give a full name such as \"Taiming Lu\""),
    (["--lang", "fr"], "language 'fr' is not available - use one of: en, zh"),
    (["--timezone", "Mars/Base"], "unknown time zone 'Mars/Base' - use an IANA name such as "
     "Europe/Berlin or Asia/Shanghai"),
])
def test_edit_errors_are_one_line(isolated, args, message):
    add_two()
    result = invoke("subscribers", "edit", "ada@example.org", *args, ok=False)
    assert (result.exit_code, result.output) == (1, f"Error: {message}\n")
    assert store.get_subscriber(db(isolated), "ada@example.org").topics == ("diffusion models",)


def test_edit_unknown_subscriber(isolated):
    result = invoke("subscribers", "edit", "nobody@example.org", "--name", "X", ok=False)
    assert result.output == ('Error: no subscriber nobody@example.org - see "newsletter '
                             'subscribers list"\n')


# --- pause and resume ----------------------------------------------------------------------


def test_paused_subscriber_gets_nothing_until_resumed(isolated):
    add_two()
    assert invoke("subscribers", "pause", "LI.WEI@example.cn").output == \
        "Paused li.wei@example.cn\n"
    assert invoke("subscribers", "pause", "li.wei@example.cn").output == \
        "li.wei@example.cn is already paused\n"
    out = invoke("run", "--all").output
    assert "ada@example.org" in out and "li.wei@example.cn" not in out
    sent = sorted(p.name for p in (isolated / "outbox").glob("*.eml"))
    assert sent == ["2026-11-22_ada@example.org.eml"]
    sub = store.get_subscriber(db(isolated), "li.wei@example.cn")
    assert (sub.status, sub.topics, sub.name) == ("paused", ("CRISPR",), "李伟")

    assert invoke("subscribers", "resume", "li.wei@example.cn").output == \
        "Resumed li.wei@example.cn\n"
    assert invoke("subscribers", "resume", "li.wei@example.cn").output == \
        "li.wei@example.cn is already active\n"
    out = invoke("run", "--all").output
    assert "sent       li.wei@example.cn" in out
    assert (isolated / "outbox" / "2026-11-22_li.wei@example.cn.eml").exists()
    history = store.subscriber_history(db(isolated), "li.wei@example.cn")
    assert [(e["event"], e["origin"]) for e in history] == \
        [("added", "cli"), ("paused", "cli"), ("resumed", "cli")]


def test_pause_and_resume_refuse_other_statuses(isolated):
    add_two()
    roster.set_status(db(isolated), "ada@example.org", "unsubscribed", "unsubscribe")
    result = invoke("subscribers", "pause", "ada@example.org", ok=False)
    assert result.output == ("Error: ada@example.org is unsubscribed - only active "
                             "subscribers can be paused\n")
    result = invoke("subscribers", "resume", "ada@example.org", ok=False)
    assert result.output == ('Error: ada@example.org unsubscribed - only they can opt in '
                             'again: "newsletter subscribers confirm ada@example.org --resend" '
                             'asks them\n')
    roster.set_status(db(isolated), "li.wei@example.cn", "bounced", "bounce", "550 no mailbox")
    assert invoke("subscribers", "resume", "li.wei@example.cn").output == \
        "Resumed li.wei@example.cn\n"
    history = store.subscriber_history(db(isolated), "li.wei@example.cn")
    assert [(e["event"], e["origin"], e["detail"]) for e in history][1:] == \
        [("bounced", "bounce", "550 no mailbox"), ("reactivated", "cli", "")]


# --- list ----------------------------------------------------------------------------------


def test_list_filters_and_counts_per_status(isolated):
    add_two()
    invoke("subscribers", "add", "j@example.org", "--author", "Jürgen Schmidhuber",
           "--topic", '"Graph Neural" OR GNN')
    invoke("subscribers", "pause", "j@example.org")
    out = invoke("subscribers", "list").output
    lines = out.splitlines()
    assert lines[0].split() == ["email", "name", "lang", "status", "frequency", "filters"]
    assert lines[-1] == "3 subscribers: 2 active, 1 paused"
    assert any(line.startswith("li.wei@example.cn  李伟") for line in lines)

    def emails(*args):
        return [s["email"] for s in json.loads(invoke("subscribers", "list", *args,
                                                      "--json").output)]

    assert emails("--status", "paused") == ["j@example.org"]
    assert emails("--author", "LU Taiming") == ["ada@example.org"]
    assert emails("--author", "Lu, Taiming") == ["ada@example.org"]
    assert emails("--author", "Jurgen Schmidhuber") == ["j@example.org"]
    assert emails("--author", "schmidhuber") == ["j@example.org"]
    assert emails("--author", "Taiming Luo") == []
    assert emails("--topic", "graph neural") == ["j@example.org"]
    assert emails("--topic", "crispr", "--status", "active") == ["li.wei@example.cn"]
    out = invoke("subscribers", "list", "--status", "active", "--topic", "o").output
    assert out.splitlines()[-1] == "1 subscriber: 1 active"
    assert invoke("subscribers", "list", "--status", "bounced").output == \
        "No subscribers match\n"


def test_list_json_has_every_field(isolated):
    add_two()
    row = json.loads(invoke("subscribers", "list", "--json").output)[1]
    assert row == {"email": "li.wei@example.cn", "name": "李伟", "language": "zh",
                   "timezone": "Asia/Shanghai", "send_hour": 7, "frequency": "daily",
                   "weekday": None, "max_papers": 10, "status": "active",
                   "confirmed_at": None, "authors": [], "topics": ["CRISPR"],
                   "categories": [], "exclude": [], "likes": [], "ranking": "auto",
                   "like_cap": 3}


def test_list_rejects_an_unknown_status(isolated):
    result = invoke("subscribers", "list", "--status", "gone", ok=False)
    assert result.exit_code == 2
    assert "'gone' is not one of 'active', 'paused', 'pending', 'unsubscribed', " \
        "'bounced'" in result.output


# --- history -------------------------------------------------------------------------------


def test_history_records_every_change_with_time_and_origin(isolated):
    add_two()
    invoke("subscribers", "edit", "ada@example.org", "--add-topic", "RAG")
    invoke("subscribers", "pause", "ada@example.org")
    invoke("subscribers", "resume", "ada@example.org")
    store.record_event(db(isolated), "ada@example.org", "bounced", "bounce", "452 full")
    roster.set_status(db(isolated), "ada@example.org", "unsubscribed", "unsubscribe")
    out = invoke("subscribers", "show", "ada@example.org", "--history").output
    assert out.split("history:\n")[1] == (
        "  2026-11-22T09:00:00+00:00  added (cli)\n"
        "  2026-11-22T09:00:00+00:00  edited (cli)  added topic: RAG\n"
        "  2026-11-22T09:00:00+00:00  paused (cli)\n"
        "  2026-11-22T09:00:00+00:00  resumed (cli)\n"
        f"  {store.subscriber_history(db(isolated), 'ada@example.org')[4]['created']}"
        "  bounced (bounce)  452 full\n"
        f"  {store.subscriber_history(db(isolated), 'ada@example.org')[5]['created']}"
        "  unsubscribed (unsubscribe)\n")
    shown = json.loads(invoke("subscribers", "show", "ada@example.org", "--history",
                              "--json").output)
    assert shown["status"] == "unsubscribed"
    assert [e["event"] for e in shown["history"]] == \
        ["added", "edited", "paused", "resumed", "bounced", "unsubscribed"]
    assert "history" not in json.loads(invoke("subscribers", "show", "ada@example.org",
                                              "--json").output)


def test_set_status_refuses_an_unknown_status(isolated):
    add_two()
    with pytest.raises(roster.StatusError, match="unknown status 'gone'"):
        roster.set_status(db(isolated), "ada@example.org", "gone", "cli")
    assert store.get_subscriber(db(isolated), "ada@example.org").status == "active"


# --- consent -------------------------------------------------------------------------------


def read(path):
    return message_from_bytes(path.read_bytes().replace(b"\r\n", b"\n"), policy=policy.default)


def test_add_confirm_needs_a_secret_and_writes_nothing(isolated):
    result = invoke("subscribers", "add", "ada@example.org", "--topic", "x", "--confirm",
                    ok=False)
    assert result.output == ("Error: confirmation emails need NEWSLETTER_SECRET to sign "
                             "their token - set it in the environment\n")
    assert store.list_subscribers(db(isolated)) == []
    assert not (isolated / "outbox").exists()


def test_add_confirm_sends_a_signed_request_and_keeps_them_pending(isolated, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("NEWSLETTER_UNSUBSCRIBE_URL", "https://news.example.org/nl")
    out = invoke("subscribers", "add", "Ada@Example.org", "--name", "Ada", "--topic",
                 "diffusion models", "--confirm").output
    eml = isolated / "outbox" / "confirm-20261122_Ada@example.org.eml"
    assert out == ("Added Ada@example.org (0 authors, 1 topics, 0 categories, en)\n"
                   f"Pending until they confirm: confirmation email sent ({eml})\n")
    token = roster.confirm_token(SECRET, "ada@example.org")
    msg = read(eml)
    assert msg["To"] == "Ada <Ada@example.org>"
    assert msg["Subject"] == f"Please confirm your AcademicHub subscription [confirm {token}]"
    text = msg.get_body(("plain",)).get_content()
    assert "reply to this email" in text
    assert ("https://news.example.org/nl/confirm?email=Ada%40example.org&token="
            f"{token}\n") in text
    html = parts(msg)[1]
    assert f'href="https://news.example.org/nl/confirm?email=Ada%40example.org&amp;token=' \
        f'{token}"' in html
    assert store.get_subscriber(db(isolated), "ada@example.org").status == "pending"

    out = invoke("run", "--all").output
    assert "Ada@example.org" not in out
    assert sorted(p.name for p in (isolated / "outbox").glob("*.eml")) == [eml.name]


def test_confirm_with_a_wrong_then_the_right_token(isolated, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    invoke("subscribers", "add", "ada@example.org", "--topic", "diffusion models",
           "--confirm")
    result = invoke("subscribers", "confirm", "ada@example.org", "--token", "0" * 32,
                    ok=False)
    assert result.output == ("Error: wrong confirmation token for ada@example.org - it must "
                             "be the code from their confirmation email\n")
    assert store.get_subscriber(db(isolated), "ada@example.org").status == "pending"
    token = roster.confirm_token(SECRET, "ada@example.org")
    assert invoke("subscribers", "confirm", "ada@example.org", "--token", token.upper()
                  ).output == "Confirmed ada@example.org: they now receive issues\n"
    sub = store.get_subscriber(db(isolated), "ada@example.org")
    assert sub.status == "active" and sub.confirmed_at.isoformat() == "2026-11-22T09:00:00+00:00"
    assert "sent       ada@example.org" in invoke("run", "--all").output
    history = store.subscriber_history(db(isolated), "ada@example.org")
    assert [(e["event"], e["origin"]) for e in history] == [
        ("added", "cli"), ("confirmation sent", "cli"), ("confirmed", "cli")]


def test_confirm_by_reply_through_the_library(isolated, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    invoke("subscribers", "add", "ada@example.org", "--topic", "x", "--confirm")
    database = db(isolated)
    with pytest.raises(roster.ConfirmationError, match="wrong confirmation token"):
        roster.confirm(database, "ada@example.org", "f" * 32, origin="reply")
    with pytest.raises(roster.ConfirmationError, match="needs the token"):
        roster.confirm(database, "ada@example.org", None, origin="reply")
    sub = roster.confirm(database, "ada@example.org",
                       roster.confirm_token(SECRET, "ADA@example.org"), origin="reply")
    assert sub.status == "active"
    assert store.subscriber_history(database, sub.email)[-1]["origin"] == "reply"
    again = roster.confirm(database, "ada@example.org", "anything", origin="reply")
    assert again.status == "active"  # a second reply changes nothing
    assert len(store.subscriber_history(database, sub.email)) == 3


def test_operator_confirms_by_hand_and_resends(isolated, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    invoke("subscribers", "add", "ada@example.org", "--topic", "x", "--confirm")
    out = invoke("subscribers", "confirm", "ada@example.org", "--resend").output
    assert out.startswith("Confirmation email sent to ada@example.org (")
    assert invoke("subscribers", "confirm", "ada@example.org").output == \
        "Confirmed ada@example.org: they now receive issues\n"
    result = invoke("subscribers", "confirm", "ada@example.org", "--resend", ok=False)
    assert result.output == "Error: ada@example.org is active - there is nothing to confirm\n"


def test_confirmation_goes_over_smtp_when_configured(isolated, monkeypatch, smtp_server):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", smtp_server.url)
    out = invoke("subscribers", "add", "li@example.cn", "--name", "李伟", "--lang", "zh",
                 "--topic", "CRISPR", "--confirm").output
    assert out.endswith(f"confirmation email sent ({smtp_server.url})\n")
    [msg] = smtp_server.messages
    token = roster.confirm_token(SECRET, "li@example.cn")
    assert msg["Subject"] == f"请确认订阅 AcademicHub [confirm {token}]"
    assert "请直接回复本邮件以确认订阅" in msg.get_body(("plain",)).get_content()
    assert smtp_server.envelopes[0].rcpt_tos == ["li@example.cn"]


def test_expire_forgets_the_unconfirmed(isolated, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    invoke("subscribers", "add", "old@example.org", "--topic", "x", "--confirm")
    invoke("subscribers", "add", "ok@example.org", "--topic", "x")
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-11-28T09:00:00+00:00")
    assert invoke("subscribers", "expire", "-y").output == "0 unconfirmed subscribers forgotten\n"
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-11-29T09:00:01+00:00")
    assert invoke("subscribers", "expire", "--yes").output == \
        "Expired old@example.org\n1 unconfirmed subscribers forgotten\n"
    assert [s.email for s in store.list_subscribers(db(isolated))] == ["ok@example.org"]
    assert [e["event"] for e in store.anonymous_events(db(isolated))] == ["expired"]
    assert list((isolated / "outbox").glob("*old@example.org*")) == []


# --- forget --------------------------------------------------------------------------------

EMAIL = "Zhao.Xiaoming.7@Example.org"
STORED = "Zhao.Xiaoming.7@example.org"
NAME = "赵晓明"


def every_value(path):
    """(table, column, text) for every cell of every table, FTS and history included."""
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")]
    for table in tables:
        columns = [r[1] for r in conn.execute(f'pragma table_info("{table}")')]
        for row in conn.execute(f'select * from "{table}"'):
            for column, value in zip(columns, row, strict=True):
                if isinstance(value, bytes):
                    value = value.decode("utf-8", "replace")
                yield table, column, str(value)


def test_forget_leaves_no_trace_in_any_table(isolated, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    invoke("subscribers", "add", EMAIL, "--name", "Xiaoming", "--lang", "zh",
           "--topic", "CRISPR", "--author", "Jennifer A. Doudna", "--confirm")
    invoke("subscribers", "confirm", EMAIL, "--token", roster.confirm_token(SECRET, STORED))
    invoke("subscribers", "edit", EMAIL, "--name", NAME, "--add-topic", "single-cell")
    invoke("subscribers", "add", "other@example.org", "--topic", "CRISPR")
    assert "sent       Zhao.Xiaoming.7@example.org" in invoke("run", "--all").output
    invoke("subscribers", "pause", EMAIL)
    assert len(list((isolated / "outbox").glob("*Zhao*"))) == 4  # issue + confirmation

    out = invoke("subscribers", "forget", EMAIL.lower(), "--yes").output
    assert out == ("Forgot Zhao.Xiaoming.7@example.org: 3 filters, 5 history events, "
                   "1 deliveries (kept as anonymous counts), 4 outbox files\n")

    digest = hashlib.sha256(f"{STORED.lower()}|2026-11-22".encode()).hexdigest()[:20]
    needles = [STORED.lower(), "zhao.xiaoming.7", NAME, "xiaoming", digest,
               tokens.unsubscribe_token(SECRET, STORED), roster.confirm_token(SECRET, STORED),
               hashlib.sha256(roster.confirm_token(SECRET, STORED).encode()).hexdigest()]
    path = isolated / "newsletter.db"
    found = [(t, c) for t, c, v in every_value(path) for n in needles if n in v.lower()]
    assert found == []
    for suffix in ("", "-wal"):  # nor in the file's free pages or write-ahead log
        if (isolated / f"newsletter.db{suffix}").exists():
            raw = (isolated / f"newsletter.db{suffix}").read_bytes().lower()
            assert not [n for n in needles if n.lower().encode() in raw], suffix
    assert list((isolated / "outbox").glob("*Zhao*")) == []
    assert (isolated / "outbox" / "2026-11-22_other@example.org.eml").exists()

    database = db(isolated)
    assert database.execute("select issue_date, status, count from forgotten_deliveries"
                            ).fetchall() == [("2026-11-22", "sent", 1)]
    assert store.anonymous_events(database) == [
        {"created": "2026-11-22T09:00:00+00:00", "event": "forgotten", "origin": "cli",
         "detail": ""}]
    assert [s.email for s in store.list_subscribers(database)] == ["other@example.org"]
    result = invoke("subscribers", "show", EMAIL, "--history", ok=False)
    assert result.output == (f'Error: no subscriber {EMAIL} - see "newsletter subscribers '
                             'list"\n')


def test_forget_adds_counts_to_earlier_forgotten_ones(isolated):
    for email in ("a@example.org", "b@example.org"):
        invoke("subscribers", "add", email, "--topic", "CRISPR")
    invoke("run", "--all")
    invoke("subscribers", "forget", "a@example.org", "--yes")
    invoke("subscribers", "forget", "b@example.org", "--yes")
    assert db(isolated).execute("select issue_date, status, count from forgotten_deliveries"
                                ).fetchall() == [("2026-11-22", "sent", 2)]


def test_forget_unknown_subscriber(isolated):
    result = invoke("subscribers", "forget", "nobody@example.org", ok=False)
    assert (result.exit_code, result.output) == \
        (1, 'Error: no subscriber nobody@example.org - see "newsletter subscribers list"\n')


def test_remove_leaves_an_anonymous_event(isolated):
    add_two()
    invoke("subscribers", "remove", "ada@example.org", "--yes")
    database = db(isolated)
    assert [e["event"] for e in store.anonymous_events(database)] == ["removed"]
    assert database.execute("select count(*) from subscriber_events where subscriber_id "
                            "is not null").fetchone() == (1,)
