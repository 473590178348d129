from datetime import UTC, date, datetime

import pytest
from conftest import invoke, read_outbox

from newsletter.models import Subscriber
from newsletter.ops import schedule

MON_0900_UTC = datetime(2026, 11, 23, 9, tzinfo=UTC)


@pytest.mark.parametrize("tz, hour, due", [
    ("UTC", 7, True),                  # 09:00 in London-ish UTC, sends from 07:00
    ("UTC", 10, False),                # not yet
    ("Asia/Shanghai", 7, True),        # 17:00 there
    ("America/New_York", 7, False),    # 04:00 there
])
def test_send_hour_in_the_subscribers_time_zone(tz, hour, due):
    sub = Subscriber("a@example.org", timezone=tz, send_hour=hour)
    assert schedule.due(sub, MON_0900_UTC)[0] is due


def test_frequencies():
    saturday = datetime(2026, 11, 21, 9, tzinfo=UTC)
    weekdays = Subscriber("a@example.org", frequency="weekdays")
    assert schedule.due(weekdays, MON_0900_UTC) == (True, "")
    assert schedule.due(weekdays, saturday) == (False, "not an issue day (weekdays)")
    weekly = Subscriber("a@example.org", frequency="weekly", weekday="mon")
    assert schedule.due(weekly, MON_0900_UTC)[0]
    assert not schedule.due(weekly, datetime(2026, 11, 24, 9, tzinfo=UTC))[0]
    assert schedule.due(Subscriber("a@example.org"), MON_0900_UTC,
                        last_issue=date(2026, 11, 23)) == (False, "already sent today")


def test_arxiv_calendar():
    # announcements Sunday to Thursday evenings, US Eastern; none Friday and Saturday
    assert [schedule.arxiv_announces(date(2026, 11, d)) for d in range(22, 29)] == \
        [True, True, True, True, True, False, False]  # Sun 22 .. Sat 28
    holiday = frozenset({date(2026, 11, 26)})
    assert not schedule.arxiv_announces(date(2026, 11, 26), holiday)


def test_each_issue_covers_everything_since_the_last_one(isolated, monkeypatch):
    """A missed day (a failed run, a weekend) leaves no gap and no repeat."""
    from newsletter import store
    from newsletter.sources.sample import load_papers

    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu")
    invoke("run", "--all")
    db = store.open_db(isolated / "newsletter.db")
    # two days later (a day was missed), two new papers arrive on different days
    from dataclasses import replace
    base = load_papers()[0]
    store.upsert_papers(db, [replace(base, id="2611.00001", title="Day one paper",
                                     authors=("Taiming Lu",))],
                        datetime(2026, 11, 23, 6, tzinfo=UTC))
    store.upsert_papers(db, [replace(base, id="2611.00002", title="Day two paper",
                                     authors=("Taiming Lu",))],
                        datetime(2026, 11, 24, 6, tzinfo=UTC))
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-11-24T09:00:00+00:00")
    out = invoke("run", "--all", "--no-fetch").output
    assert "sent       ada@example.org                    2 papers" in out
    msg = read_outbox(isolated / "outbox")["ada@example.org"]  # the newest file
    text = msg.get_body(("plain",)).get_content()
    assert "Day one paper" in text and "Day two paper" in text
    assert "Generative World Explorer" not in text  # sent on the 22nd: no repeat


def test_nothing_new_sends_nothing_unless_asked(isolated, monkeypatch):
    invoke("subscribers", "add", "ada@example.org", "--topic", "ornithology")
    out = invoke("run", "--all").output
    assert "skipped    ada@example.org                    0 papers  no new papers" in out
    assert not (isolated / "outbox").exists() or not list((isolated / "outbox").glob("*.eml"))
    monkeypatch.setenv("NEWSLETTER_SEND_EMPTY", "true")
    out = invoke("run", "--all").output
    assert "sent       ada@example.org" in out
    msg = read_outbox(isolated / "outbox")["ada@example.org"]
    assert "No new papers matched your filters today." in msg.get_body(("plain",)).get_content()
