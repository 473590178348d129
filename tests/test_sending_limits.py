"""Sending at a provider's pace: several connections under one rate limit, a limit per
connection, a daily quota whose remainder waits for the next day; and the morning run
streams (emails leave while later subscribers are still being planned)."""

import time

from conftest import invoke
from test_exactly_once import Recorder, controller

from newsletter import pipeline, store
from newsletter.config import Settings

PEOPLE = [f"reader{i:02d}@example.org" for i in range(12)]


def add_people(people=PEOPLE):
    for address in people:
        invoke("subscribers", "add", address, "--author", "Taiming Lu")


class Sessions(Recorder):
    """Also counts SMTP sessions and which session carried each message."""

    def __init__(self):
        super().__init__()
        self.sessions = 0
        self.per_session: dict[int, int] = {}

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.sessions += 1
        session.number = self.sessions
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server, session, envelope):
        self.per_session[session.number] = self.per_session.get(session.number, 0) + 1
        return await super().handle_DATA(server, session, envelope)


def test_connections_share_the_rate_limit_and_sessions_are_renewed(isolated, monkeypatch):
    add_people()
    rec = Sessions()
    c, url = controller(rec)
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", url)
    monkeypatch.setenv("NEWSLETTER_SMTP_CONNECTIONS", "3")
    monkeypatch.setenv("NEWSLETTER_SMTP_RATE", "20")
    monkeypatch.setenv("NEWSLETTER_SMTP_PER_CONNECTION", "2")
    try:
        started = time.monotonic()
        out = invoke("run", "--all").output
        took = time.monotonic() - started
    finally:
        c.stop()
    assert "Summary: 12 due, 12 sent" in out
    assert len(rec.accepted) == 12
    assert took >= 11 / 20  # 20 per second over all three connections together
    assert max(rec.per_session.values()) <= 2  # a session carries at most two messages
    assert rec.sessions >= 6


def test_daily_limit_defers_the_rest_to_the_next_day(isolated, monkeypatch, smtp_server):
    add_people()
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", smtp_server.url)
    monkeypatch.setenv("NEWSLETTER_SMTP_DAILY_LIMIT", "5")
    monkeypatch.setenv("NEWSLETTER_SMTP_CONNECTIONS", "2")
    first = invoke("run", "--all").output
    assert "12 due, 5 sent, 7 skipped (7 daily sending limit of 5 reached - goes out with " \
           "the next run after midnight UTC)" in first
    assert len(smtp_server.messages) == 5
    later = invoke("run", "--all").output  # an hour later, same UTC day: still nothing
    assert "7 daily sending limit of 5 reached" in later and "5 already sent today" in later
    assert len(smtp_server.messages) == 5
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-11-23T09:00:00+00:00")
    invoke("run", "--all", "--no-fetch")  # the next day: the quota starts again
    assert len(smtp_server.messages) == 10
    waited = {str(m["To"]) for m in smtp_server.messages[5:]}
    assert waited <= set(PEOPLE) - {str(m["To"]) for m in smtp_server.messages[:5]}


def test_bad_limits_are_one_line_errors(isolated, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SMTP_CONNECTIONS", "0")
    result = invoke("run", "--all", ok=False)
    assert result.exit_code != 0
    assert "NEWSLETTER_SMTP_CONNECTIONS must be at least 1" in result.output
    assert "Traceback" not in result.output


def test_first_emails_leave_while_later_subscribers_are_planned(isolated, monkeypatch,
                                                                smtp_server):
    """Batches of 3: the last batch is not planned until an email has gone out - a run that
    planned everyone before sending (as it used to) would wait here in vain."""
    add_people()
    invoke("fetch")
    monkeypatch.setattr(pipeline, "BATCH", 3)
    monkeypatch.setattr(pipeline, "FIRST_BATCH", 3)
    events = []
    begin = store.begin_deliveries

    def recording_begin(db, planned, now=None):  # watches the order; the database is real
        if sum(1 for e in events if e[0] == "planned") == 3:
            deadline = time.monotonic() + 30
            while not any(e[0] == "sent" for e in events) and time.monotonic() < deadline:
                time.sleep(0.01)
        events.append(("planned", len(planned)))
        return begin(db, planned, now)

    monkeypatch.setattr(store, "begin_deliveries", recording_begin)
    settings = Settings(db=str(isolated / "newsletter.db"), smtp_url=smtp_server.url,
                        sources="sample", render_workers=2)
    db = store.open_db(settings.db)
    report = pipeline.run(db, settings, pipeline_now(), send_all=True, do_fetch=False,
                          sent=lambda line: events.append(("sent", line.email)))
    assert len([x for x in report.lines if x.status == "sent"]) == 12
    first_sent = next(i for i, e in enumerate(events) if e[0] == "sent")
    last_planned = max(i for i, e in enumerate(events) if e[0] == "planned")
    assert first_sent < last_planned, events


def pipeline_now():
    from datetime import datetime

    return datetime.fromisoformat("2026-11-22T09:00:00+00:00")


def test_data_arrives_byte_for_byte_with_or_without_lines_that_start_with_a_dot(
        smtp_server):
    """The client dot-stuffs with bytes.replace, not smtplib's regular expression: the
    server gets each message as it was (SMTP's dot-stuffing undone), dots at the start of
    the message, of lines, alone on a line, or none, one message after another; and the
    stuffing is smtplib's, byte for byte, on 20,000 random strings of dots and line ends."""
    import random
    import smtplib
    from datetime import date

    from newsletter import send

    head = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: x\r\n\r\n"
    bodies = [b"plain\r\nlines\r\n", b".a line that starts with a dot\r\n..two\r\n.\r\n",
              b"no end of line", b"middle\r\n.dot\r\nend\r\n", (b"x" * 900 + b"\r\n") * 80]
    with send.SMTPSender(f"smtp://127.0.0.1:{smtp_server.port}") as sender:
        for body in bodies:
            sender.send(head + body, "b@example.org", date(2026, 11, 30).isoformat(), "")
    got = [e.original_content for e in smtp_server.envelopes]
    assert got == [head + b + (b"" if b.endswith(b"\r\n") else b"\r\n") for b in bodies]
    rng = random.Random(16)
    for _ in range(20_000):
        b = bytes(rng.choice(b".\r\nab") for _ in range(rng.randint(0, 30)))
        assert send._dot_stuffed(b) == smtplib._quote_periods(b), b  # type: ignore[attr-defined]
