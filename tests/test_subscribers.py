"""The library functions the CLI and the mailbox sync call, and the list file format."""

from datetime import UTC, datetime, timedelta

import pytest

from newsletter import store
from newsletter.config import Settings
from newsletter.errors import InvalidFilter, SubscriberNotFound
from newsletter.lists import listio, roster

NOW = datetime(2026, 11, 22, 9, tzinfo=UTC)


@pytest.fixture
def db():
    return store.open_db(":memory:")


def test_build_validates_schedule_fields():
    sub = roster.build("a@example.org", topics=["x"], frequency="weekly", weekday="Friday")
    assert (sub.frequency, sub.weekday) == ("weekly", "fri")
    assert roster.build("a@example.org", topics=["x"], frequency="weekly").weekday == "mon"
    for kwargs, message in [
        ({"frequency": "monthly"}, "frequency 'monthly' is not available - use one of: daily, "
         "weekdays, weekly"),
        ({"frequency": "weekly", "weekday": "someday"}, "weekday 'someday' is not a day - use "
         "one of: mon, tue, wed, thu, fri, sat, sun"),
        ({"send_hour": 24}, "send hour 24 is not an hour - use 0 to 23"),
        ({"max_papers": 0}, "max papers 0 is out of range - use 1 to 100"),
        ({"status": "gone"}, "status 'gone' is not one of: active, paused, pending, "
         "unsubscribed, bounced"),
    ]:
        with pytest.raises(InvalidFilter) as e:
            roster.build("a@example.org", topics=["x"], **kwargs)
        assert str(e.value) == message


def test_record_event_and_history(db):
    roster.add(db, "ada@example.org", topics=["RAG"], now=NOW)
    store.record_event(db, "ADA@example.org", "bounced", "bounce", "550 5.1.1", now=NOW)
    assert store.subscriber_history(db, "ada@example.org") == [
        {"created": "2026-11-22T09:00:00+00:00", "event": "added", "origin": "cli",
         "detail": ""},
        {"created": "2026-11-22T09:00:00+00:00", "event": "bounced", "origin": "bounce",
         "detail": "550 5.1.1"}]
    with pytest.raises(SubscriberNotFound):
        store.record_event(db, "nobody@example.org", "bounced", "bounce")


def test_set_status_records_the_event_named_by_the_change(db):
    roster.add(db, "ada@example.org", topics=["RAG"], now=NOW)
    for status, origin in [("unsubscribed", "unsubscribe"), ("unsubscribed", "unsubscribe"),
                           ("pending", "cli"), ("active", "web"), ("paused", "cli"),
                           ("active", "cli"), ("bounced", "bounce")]:
        sub = roster.set_status(db, "ada@example.org", status, origin, now=NOW)
        assert sub.status == status
    events = [(e["event"], e["origin"]) for e in store.subscriber_history(db, "ada@example.org")]
    assert events == [("added", "cli"), ("unsubscribed", "unsubscribe"), ("pending", "cli"),
                      ("confirmed", "web"), ("paused", "cli"), ("resumed", "cli"),
                      ("bounced", "bounce")]
    assert [s.email for s in store.list_subscribers(db, status="active")] == []


def test_expire_pending_after_the_given_days(db):
    roster.add(db, "old@example.org", topics=["x"], status="pending", now=NOW - timedelta(days=8))
    roster.add(db, "new@example.org", topics=["x"], status="pending", now=NOW - timedelta(days=2))
    roster.add(db, "ok@example.org", topics=["x"], now=NOW - timedelta(days=30))
    assert roster.expire_pending(db, NOW) == ["old@example.org"]
    assert roster.expire_pending(db, NOW, days=1) == ["new@example.org"]
    assert [s.email for s in store.list_subscribers(db)] == ["ok@example.org"]
    assert store.find_text(db, "old@example.org") == []


def test_confirm_refuses_what_is_not_pending(db):
    roster.add(db, "u@example.org", topics=["x"], status="unsubscribed", now=NOW)
    with pytest.raises(roster.ConfirmationError) as e:
        roster.confirm(db, "u@example.org", "x" * 32, origin="reply")
    assert str(e.value) == "u@example.org is unsubscribed, not waiting for confirmation"
    roster.add(db, "p@example.org", topics=["x"], status="pending", now=NOW)
    with pytest.raises(roster.ConfirmationError) as e:
        roster.confirm(db, "p@example.org", "x" * 32, origin="reply")
    assert str(e.value) == ('no confirmation email was sent to p@example.org - send one with '
                            '"newsletter subscribers confirm p@example.org --resend"')


def test_request_confirmation_reopens_an_unsubscribed_person(db, tmp_path):
    settings = Settings(secret="k", outbox=str(tmp_path))
    roster.add(db, "u@example.org", topics=["x"], status="unsubscribed", now=NOW)
    where = roster.request_confirmation(db, settings, "u@example.org", now=NOW)
    assert where == str(tmp_path / "confirm-20261122_u@example.org.eml")
    assert store.get_subscriber(db, "u@example.org").status == "pending"
    token = roster.confirm_token("k", "u@example.org")
    assert roster.confirm(db, "u@example.org", token, origin="reply").status == "active"


def test_confirm_token_differs_from_the_unsubscribe_token():
    from newsletter.lists.tokens import unsubscribe_token

    token = roster.confirm_token("k", "Ada@Example.org")
    assert token == roster.confirm_token("k", "ada@example.org") and len(token) == 32
    assert token != unsubscribe_token("k", "ada@example.org")
    assert token != roster.confirm_token("other", "ada@example.org")


def test_find_text_names_table_and_column(db):
    roster.add(db, "ada@example.org", topics=["x"], name="Ada", now=NOW)
    assert store.find_text(db, "ADA@example.org") == ["subscribers.email"]


@pytest.mark.parametrize("header, delimiter", [
    ("email,name,topics", ","), ("email;name;topics", ";"), ("email\tname\ttopics", "\t"),
    ("email", ","), ('"email";"name, quoted"', ";")])
def test_delimiter_is_sniffed_from_the_header(header, delimiter):
    assert listio.sniff_delimiter(header) == delimiter


def test_csv_rows_are_numbered_like_a_spreadsheet():
    rows = listio.parse_csv("email,topics\r\n\r\na@example.org, x | y |\r\n"
                            '"b@example.org","multi\nline"\r\nc@example.org,a,b\r\n')
    assert [(r.number, r.values, r.error) for r in rows] == [
        (3, {"email": "a@example.org", "topics": ["x", "y"]}, None),
        (4, {"email": "b@example.org", "topics": ["multi\nline"]}, None),
        (5, {}, "3 cells but 2 columns - quote cells that contain the delimiter")]


def test_decode_handles_boms_and_names_the_bad_byte():
    assert listio.decode(b"\xef\xbb\xbfemail", "f") == "email"
    assert listio.decode("email".encode("utf-16"), "f") == "email"
    with pytest.raises(listio.ListFileError) as e:
        listio.decode(b"email\nJos\xe9\n", "f.csv")
    assert str(e.value).startswith("f.csv is not UTF-8 (byte 0xe9 on line 2)")
    with pytest.raises(listio.ListFileError) as e:
        listio.decode(b"\xff\xfe\xfd", "f.csv", "utf-8")
    assert str(e.value) == ("f.csv is not utf-8 (byte 0xff on line 1) - pass the encoding "
                            "it was saved in with --encoding")
