"""When each subscriber is due, and arXiv's announcement calendar.

arXiv announces new papers Sunday to Thursday at 20:00 US Eastern time, and nothing on
Friday and Saturday evenings (plus a few holiday breaks it publishes each year, which can be
listed in the ``arxiv_holidays`` setting). Each issue covers everything first seen since the
subscriber's last delivered issue, so weekends, holidays, failed runs and weekly frequencies
leave no gap and no repeat; this module only decides *whether* someone is due now.
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from newsletter.models import WEEKDAYS, Subscriber


def local(sub: Subscriber, now: datetime) -> datetime:
    return now.astimezone(ZoneInfo(sub.timezone))


def issue_date(sub: Subscriber, now: datetime) -> date:
    return local(sub, now).date()


def sends_on(sub: Subscriber, day: date) -> bool:
    """Whether the subscriber's frequency has an issue on this local day."""
    if sub.frequency == "weekdays":
        return day.weekday() < 5
    if sub.frequency == "weekly":
        wanted = getattr(sub, "weekday", None) or "mon"
        return WEEKDAYS[day.weekday()] == str(wanted)[:3].lower()
    return True  # daily


def due(sub: Subscriber, now: datetime, last_issue: date | None = None) -> tuple[bool, str]:
    """(is an issue due now, the reason when it is not)."""
    here = local(sub, now)
    if last_issue is not None and last_issue >= here.date():
        return False, "already sent today"
    if not sends_on(sub, here.date()):
        return False, f"not an issue day ({sub.frequency})"
    if here.hour < sub.send_hour:
        return False, f"not due yet (sends at {sub.send_hour:02d}:00 {sub.timezone})"
    return True, ""


def arxiv_announces(day: date, holidays: frozenset[date] = frozenset()) -> bool:
    """Whether arXiv publishes an announcement on the evening (US Eastern) of ``day``."""
    return day.weekday() in (6, 0, 1, 2, 3) and day not in holidays


def parse_holidays(text: str) -> frozenset[date]:
    return frozenset(date.fromisoformat(d.strip()) for d in text.split(",") if d.strip())
