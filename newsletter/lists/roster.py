"""Subscriber operations behind the CLI: validate, then hand to the store.

Everything a list manager does with a person: add (with or without double opt-in), edit,
pause and resume, list and find, import and export, confirm, and forget. Every change is
recorded in the subscriber's history with its origin (cli, import, unsubscribe, bounce,
reply, web); the unsubscribe/bounce/reply handlers call ``set_status``, ``confirm`` and
``store.record_event``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlite_utils import Database

from newsletter import match, store
from newsletter.config import Settings
from newsletter.errors import InvalidFilter, NewsletterError, SendFailed
from newsletter.lists import listio
from newsletter.lists.addresses import normalize_email
from newsletter.lists.tokens import confirm_token
from newsletter.models import FREQUENCIES, STATUSES, WEEKDAYS, Subscriber
from newsletter.safety.untrusted import clean_text
from newsletter.text import display_width


def languages() -> list[str]:
    """The languages an issue can be written in: one strings file each in templates/i18n."""
    from newsletter.render import languages as available

    return available()
FILTER_KEYS = ("authors", "topics", "categories", "exclude")
_SINGULAR = {"authors": "author", "topics": "topic", "categories": "category",
             "exclude": "exclude", "likes": "seed paper"}
RANKINGS = ("auto", "filters", "reorder", "like")  # see newsletter.relevance.learned
MAX_LIKE_CAP = 20


class StatusError(NewsletterError):
    """The subscriber's status does not allow this (e.g. resuming someone who unsubscribed)."""


class ConfirmationError(NewsletterError):
    """A confirmation cannot be sent or accepted (no secret, wrong token, nothing pending)."""


class ImportRejected(NewsletterError):
    """An import file had rejected rows, so nothing was imported (see ImportReport.error)."""


_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _weekday(value: str | None, frequency: str) -> str | None:
    if not value:
        return "mon" if frequency == "weekly" else None
    day = value.strip().lower()
    if day not in WEEKDAYS and day not in _DAY_NAMES:
        raise InvalidFilter(f"weekday {value!r} is not a day - use one of: "
                            + ", ".join(WEEKDAYS))
    if frequency != "weekly":
        raise InvalidFilter(f"weekday {value!r} applies only to weekly issues - set the "
                            "frequency to weekly")
    return day[:3]


def build(email: str, *, name: str = "", authors: Iterable[str] = (),
          topics: Iterable[str] = (), categories: Iterable[str] = (),
          exclude: Iterable[str] = (), language: str = "en", timezone: str = "UTC",
          send_hour: int = 7, max_papers: int = 10, frequency: str = "daily",
          weekday: str | None = None, status: str = "active", likes: Iterable[str] = (),
          ranking: str = "auto", like_cap: int = 3) -> Subscriber:
    """A validated Subscriber; raises InvalidAddress or InvalidFilter with the fix."""
    available = languages()
    if language not in available:
        raise InvalidFilter(f"language {language!r} is not available - use one of: "
                            + ", ".join(available))
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise InvalidFilter(f"unknown time zone {timezone!r} - use an IANA name such as "
                            "Europe/Berlin or Asia/Shanghai") from e
    if frequency not in FREQUENCIES:
        raise InvalidFilter(f"frequency {frequency!r} is not available - use one of: "
                            + ", ".join(FREQUENCIES))
    if not 0 <= send_hour <= 23:
        raise InvalidFilter(f"send hour {send_hour} is not an hour - use 0 to 23")
    if not 1 <= max_papers <= 100:
        raise InvalidFilter(f"max papers {max_papers} is out of range - use 1 to 100")
    if status not in STATUSES:
        raise InvalidFilter(f"status {status!r} is not one of: " + ", ".join(STATUSES))
    if ranking not in RANKINGS:
        raise InvalidFilter(f"ranking {ranking!r} is not one of: " + ", ".join(RANKINGS))
    if not 0 <= like_cap <= MAX_LIKE_CAP:
        raise InvalidFilter(f"like cap {like_cap} is out of range - use 0 to {MAX_LIKE_CAP}")
    filters = {key: _filter_values(key, values) for key, values in
               (("authors", authors), ("topics", topics), ("categories", categories),
                ("exclude", exclude))}
    if not (filters["authors"] or filters["topics"] or filters["categories"]):
        raise InvalidFilter("no filters - give at least one --author, --topic or --category, "
                            "or the subscriber would never receive a paper")
    for category in filters["categories"]:
        check_category(category)
    sub = Subscriber(
        email=normalize_email(email), name=clean_text(name, multiline=False),
        language=language, timezone=timezone, send_hour=send_hour, frequency=frequency,
        max_papers=max_papers, authors=filters["authors"], topics=filters["topics"],
        categories=filters["categories"], exclude=filters["exclude"],
        weekday=_weekday(weekday, frequency), status=status, likes=_clean(likes),
        ranking=ranking, like_cap=like_cap,
    )
    match.validate_filters(sub)
    return sub


def _clean(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(" ".join(clean_text(v).split()) for v in values if v.strip()))


def _filter_values(key: str, values: Iterable[str]) -> tuple[str, ...]:
    """Filters stripped of control and invisible characters; an empty one is refused (it
    would match nothing, or everything), as is an "author:" exclude without a name."""
    out: list[str] = []
    for raw in values:
        value = " ".join(clean_text(str(raw)).split())
        if not value:
            raise InvalidFilter(f"empty {_SINGULAR[key]} filter - give a value or leave the "
                                "option out")
        if key == "exclude" and value.lower().startswith("author:") \
                and not value[7:].strip():
            raise InvalidFilter("exclude 'author:' names nobody - write "
                                "--exclude 'author:Family Name'")
        if value not in out:
            out.append(value)
    return tuple(out)


@lru_cache(maxsize=1)
def _taxonomy() -> frozenset[str]:
    text = resources.files("newsletter").joinpath("data/arxiv_categories.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines()
                     if line.strip() and not line.startswith("#"))


def check_category(category: str) -> None:
    """Refuse a category arXiv does not have: ``cs.CL``, ``q-bio.NC``, ``hep-th`` and the
    wildcard ``cs.*`` pass; ``cs.XX`` does not (it would fail every run)."""
    known = _taxonomy()
    if category in known:
        return
    if category.endswith(".*") and any(k.startswith(category[:-1]) for k in known):
        return
    lower = {k.lower(): k for k in known}
    hint = f" - did you mean {lower[category.lower()]}?" if category.lower() in lower else (
        " - see https://arxiv.org/category_taxonomy (e.g. cs.CL, math.PR, hep-th, cs.*)")
    raise InvalidFilter(f"{category!r} is not an arXiv category{hint}")


def load_filter_file(path: str) -> dict[str, list[str]]:
    """Filters for people with long lists: a TOML or YAML file with the keys
    authors, topics, categories and exclude, each a list of strings."""
    import tomllib

    text = Path(path).read_text(encoding="utf-8")
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as e:
        raise InvalidFilter(f"{path} could not be read ({str(e).splitlines()[0]}) - "
                            "write TOML or YAML with lists named "
                            + ", ".join(FILTER_KEYS)) from e
    if not isinstance(data, dict):
        raise InvalidFilter(f"{path}: expected keys {', '.join(FILTER_KEYS)}")
    unknown = set(data) - set(FILTER_KEYS)
    if unknown:
        raise InvalidFilter(f"{path}: unknown key {sorted(unknown)[0]!r} - use "
                            + ", ".join(FILTER_KEYS))
    out: dict[str, list[str]] = {}
    for key in FILTER_KEYS:
        values = data.get(key) or []
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidFilter(f"{path}: {key} must be a list of strings")
        out[key] = values
    return out


def add(db: Database, email: str, *, origin: str = "cli", now: datetime | None = None,
        **fields: Any) -> Subscriber:
    """Validate and add a subscriber (``status="pending"`` for double opt-in)."""
    sub = build(email, **fields)
    detail = "pending confirmation" if sub.status == "pending" else ""
    return store.add_subscriber(db, sub, origin=origin, detail=detail, now=now)


# --- showing -----------------------------------------------------------------------------


def describe(sub: Subscriber) -> str:
    parts = [f"{len(sub.authors)} authors", f"{len(sub.topics)} topics",
             f"{len(sub.categories)} categories", sub.language]
    return ", ".join(parts)


def frequency_label(sub: Subscriber) -> str:
    return f"weekly ({sub.weekday or 'mon'})" if sub.frequency == "weekly" else sub.frequency


def _pad(text: str, width: int) -> str:
    return text + " " * (width - display_width(text))


def status_counts(subs: Sequence[Subscriber]) -> str:
    """``3 active, 1 paused, 1 pending``, in the order of STATUSES."""
    counts = {s: sum(1 for x in subs if x.status == s) for s in STATUSES}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n)


def table_lines(subs: list[Subscriber], filtered: bool = False) -> list[str]:
    if not subs:
        return ["No subscribers match" if filtered else
                "No subscribers yet - add one with \"newsletter subscribers add EMAIL\""]
    widths = [max(display_width(x) for x in [head, *col]) for head, col in (
        ("email", [s.email for s in subs]), ("name", [s.name for s in subs]),
        ("status", [s.status for s in subs]), ("frequency", [frequency_label(s) for s in subs]))]
    lines = ["  ".join([_pad("email", widths[0]), _pad("name", widths[1]), "lang",
                        _pad("status", widths[2]), _pad("frequency", widths[3]), "filters"])]
    for s in subs:
        filters = "; ".join([*(f"author: {a}" for a in s.authors),
                             *(f"topic: {t}" for t in s.topics),
                             *(f"category: {c}" for c in s.categories),
                             *(f"exclude: {x}" for x in s.exclude)])
        lines.append("  ".join([_pad(s.email, widths[0]), _pad(s.name, widths[1]),
                                _pad(s.language, 4), _pad(s.status, widths[2]),
                                _pad(frequency_label(s), widths[3]), filters]).rstrip())
    noun = "subscriber" if len(subs) == 1 else "subscribers"
    lines.append(f"{len(subs)} {noun}: {status_counts(subs)}")
    return lines


def follows_author(sub: Subscriber, name: str) -> bool:
    """Whether SUB follows NAME, compared as papers are matched ("Lu, Taiming" finds
    "Taiming Lu"); a single word matches the family name."""
    want = match.name_key(name)
    if not want:
        return False
    for followed in sub.authors:
        key = match.name_key(followed.split(";")[0])
        if len(want) == 1 and key and key[-1] == want[0]:
            return True
        if len(want) > 1 and (match.same_author(key, want) or match.same_author(want, key)):
            return True
    return False


def find(db: Database, status: str | None = None, author: str | None = None,
         topic: str | None = None) -> list[Subscriber]:
    """Subscribers with this status, following this author, with a topic containing this
    text (case-insensitive); each criterion optional."""
    subs = store.list_subscribers(db, status=status)
    if author:
        subs = [s for s in subs if follows_author(s, author)]
    if topic:
        needle = topic.casefold()
        subs = [s for s in subs if any(needle in t.casefold() for t in s.topics)]
    return subs


def show_lines(sub: Subscriber, history: list[dict[str, Any]] | None = None) -> list[str]:
    lines = []
    for key, value in listio.record(sub).items():
        shown = ", ".join(value) if isinstance(value, list) else "" if value is None else value
        lines.append(f"{key + ':':<14}{shown}".rstrip())
    if history is not None:
        lines.append("history:")
        for e in history:
            detail = f"  {e['detail']}" if e["detail"] else ""
            lines.append(f"  {e['created']}  {e['event']} ({e['origin']}){detail}")
    return lines


# --- editing -----------------------------------------------------------------------------


def _same_filter(key: str, a: str, b: str) -> bool:
    if " ".join(a.split()).casefold() == " ".join(b.split()).casefold():
        return True
    if key == "authors" and ";" not in a + b:
        return match.name_key(a) == match.name_key(b)
    return False


def changes(old: Subscriber, new: Subscriber) -> list[str]:
    """What differs, one line each: ``name: Ada -> Ada Lovelace``, ``added topic: RAG``."""
    out = []
    for label, attr in (("name", "name"), ("language", "language"), ("time zone", "timezone"),
                        ("send hour", "send_hour"), ("max papers", "max_papers")):
        before, after = getattr(old, attr), getattr(new, attr)
        if before != after:
            out.append(f"{label}: {before if before != '' else '(none)'} -> "
                       f"{after if after != '' else '(none)'}")
    if frequency_label(old) != frequency_label(new):
        out.append(f"frequency: {frequency_label(old)} -> {frequency_label(new)}")
    for label, attr in (("ranking", "ranking"), ("like cap", "like_cap")):
        if getattr(old, attr) != getattr(new, attr):
            out.append(f"{label}: {getattr(old, attr)} -> {getattr(new, attr)}")
    for key in (*FILTER_KEYS, "likes"):
        before, after = getattr(old, key), getattr(new, key)
        out += [f"removed {_SINGULAR[key]}: {v}" for v in before if v not in after]
        out += [f"added {_SINGULAR[key]}: {v}" for v in after if v not in before]
    return out


def edit(db: Database, email: str, *, add_author: Sequence[str] = (),
         remove_author: Sequence[str] = (), add_topic: Sequence[str] = (),
         remove_topic: Sequence[str] = (), add_category: Sequence[str] = (),
         remove_category: Sequence[str] = (), add_exclude: Sequence[str] = (),
         remove_exclude: Sequence[str] = (), add_like: Sequence[str] = (),
         remove_like: Sequence[str] = (), ranking: str | None = None,
         like_cap: int | None = None, name: str | None = None,
         language: str | None = None, timezone: str | None = None,
         send_hour: int | None = None, frequency: str | None = None,
         weekday: str | None = None, max_papers: int | None = None, origin: str = "cli",
         now: datetime | None = None) -> list[str]:
    """Change EMAIL's filters and settings; returns what changed, one line each (empty
    when nothing did). New filters are validated like ``add``; on any error nothing is
    written. Removing a filter they do not have is an error (a typo, most likely)."""
    old = store.get_subscriber(db, email)
    edits = {"authors": (add_author, remove_author), "topics": (add_topic, remove_topic),
             "categories": (add_category, remove_category),
             "exclude": (add_exclude, remove_exclude), "likes": (add_like, remove_like)}
    lists: dict[str, list[str]] = {}
    for key, (adding, removing) in edits.items():
        values = list(getattr(old, key))
        for value in removing:
            hit = next((v for v in values if _same_filter(key, v, value)), None)
            if hit is None:
                raise InvalidFilter(f"{old.email} has no {_SINGULAR[key]} {value!r} - see "
                                    f"\"newsletter subscribers show {old.email}\"")
            values.remove(hit)
        values += [v for v in adding if not any(_same_filter(key, x, v) for x in values)]
        lists[key] = values
    freq = frequency or old.frequency
    new = build(old.email, name=old.name if name is None else name,
                language=language or old.language, timezone=timezone or old.timezone,
                send_hour=old.send_hour if send_hour is None else send_hour,
                max_papers=max_papers or old.max_papers, frequency=freq,
                weekday=weekday or (old.weekday if freq == "weekly" else None),
                status=old.status, ranking=ranking or old.ranking,
                like_cap=old.like_cap if like_cap is None else like_cap, **lists)
    new = replace(new, email=old.email)
    done = changes(old, new)
    if done:
        store.update_subscriber(db, old, new, origin=origin, detail="; ".join(done), now=now)
    return done


# --- status ------------------------------------------------------------------------------


def _status_event(before: str, after: str) -> str:
    if after == "active":
        return {"paused": "resumed", "pending": "confirmed"}.get(before, "reactivated")
    return after  # paused, pending, unsubscribed, bounced


def set_status(db: Database, email: str, status: str, origin: str, detail: str = "",
               now: datetime | None = None) -> Subscriber:
    """Set EMAIL's status (active, paused, pending, unsubscribed, bounced) and record why:
    for the unsubscribe and bounce handlers, e.g.
    ``set_status(db, addr, "unsubscribed", "unsubscribe")``. Setting the status it already
    has changes and records nothing. Only "active" subscribers receive issues."""
    if status not in STATUSES:
        raise StatusError(f"unknown status {status!r} - use one of: " + ", ".join(STATUSES))
    sub = store.get_subscriber(db, email)
    if sub.status == status:
        return sub
    return store.set_subscriber_status(db, sub.email, status, now=now, origin=origin,
                                       event=_status_event(sub.status, status), detail=detail)


def pause(db: Database, email: str, origin: str = "cli", now: datetime | None = None
          ) -> tuple[Subscriber, bool]:
    """Stop sending to an active subscriber, keeping their filters and history.
    Returns (the subscriber, whether anything changed)."""
    sub = store.get_subscriber(db, email)
    if sub.status == "paused":
        return sub, False
    if sub.status != "active":
        raise StatusError(f"{sub.email} is {sub.status} - only active subscribers can be "
                          "paused")
    return set_status(db, sub.email, "paused", origin, now=now), True


def resume(db: Database, email: str, origin: str = "cli", now: datetime | None = None
           ) -> tuple[Subscriber, bool]:
    """Send again to a paused (or bounced, once their mailbox is fixed) subscriber."""
    sub = store.get_subscriber(db, email)
    if sub.status == "active":
        return sub, False
    if sub.status == "pending":
        raise StatusError(f"{sub.email} has not confirmed yet - if they did another way, run "
                          f"\"newsletter subscribers confirm {sub.email}\"")
    if sub.status == "unsubscribed":
        raise StatusError(f"{sub.email} unsubscribed - only they can opt in again: "
                          f"\"newsletter subscribers confirm {sub.email} --resend\" asks them")
    return set_status(db, sub.email, "active", origin, now=now), True


# --- consent -----------------------------------------------------------------------------

_CONFIRM_TEXT = {
    "en": {
        "subject": "Please confirm your {brand} subscription [confirm {token}]",
        "body": "Hello{name},\n\n{email} was signed up for {brand}: each morning, the new "
                "papers from the authors and topics you follow.\n\nTo confirm, reply to this "
                "email (keep the subject line: it carries your confirmation code).{link}\n\n"
                "Confirmation code: {token}\n\nUntil you confirm you will receive nothing. If "
                "you did not ask for this, ignore this email.\n",
        "link": "\nOr open this link:\n{url}",
    },
    "zh": {
        "subject": "请确认订阅 {brand} [confirm {token}]",
        "body": "您好{name}：\n\n{email} 刚刚订阅了 {brand}：每天早上为您送上"
                "所关注作者和主题的新论文。\n\n请直接回复本邮件以确认订阅"
                "（请保留邮件主题，其中含有确认码）。{link}\n\n确认码：{token}\n\n"
                "确认之前您不会收到任何邮件。如果这不是您本人的操作，请忽略本邮件。\n",
        "link": "\n或打开以下链接：\n{url}",
    },
}


def confirm_url(settings: Settings, email: str, token: str) -> str | None:
    from urllib.parse import urlencode

    if not settings.unsubscribe_url:
        return None
    query = urlencode({"email": email, "token": token})
    return f"{settings.unsubscribe_url.rstrip('/')}/confirm?{query}"


def radar_link(db: Database, settings: Settings, email: str, now: datetime, *,
               days: int | None = None, feed: bool = False, revoke: bool = False) -> str:
    """EMAIL's signed research radar page (or Atom feed) URL; ``revoke`` first invalidates
    every link handed out to them so far."""
    from newsletter.web import links

    if not settings.web_url:
        raise ConfirmationError("set NEWSLETTER_WEB_URL to the public address of "
                                "'newsletter serve' first (see README > The research radar)")
    if not settings.secret:
        raise ConfirmationError("page links are signed: set NEWSLETTER_SECRET in the "
                                "environment first")
    sub = store.get_subscriber(db, email)
    generation = (store.revoke_links(db, sub.email, "cli", now) if revoke
                  else sub.link_generation)
    url = links.page_url(settings, sub.email, generation, now,
                         path=links.FEED if feed else links.RADAR, days=days)
    assert url is not None  # web_url and secret are set
    return url


def require_secret(settings: Settings) -> None:
    if not settings.secret:
        raise ConfirmationError("confirmation emails need NEWSLETTER_SECRET to sign their "
                                "token - set it in the environment")


def confirmation_message(sub: Subscriber, settings: Settings, token: str, now: datetime
                         ) -> tuple[Any, str]:
    """(the EmailMessage asking SUB to confirm, its HTML part)."""
    from html import escape

    from newsletter.mail import headers

    t = _CONFIRM_TEXT.get(sub.language, _CONFIRM_TEXT["en"])
    brand = headers.brand_name(settings)
    url = confirm_url(settings, sub.email, token)
    link = t["link"].format(url=url) if url else ""
    greeting = (f" {sub.name}" if sub.language == "en" else sub.name) if sub.name else ""
    text = t["body"].format(name=greeting, email=sub.email, brand=brand, token=token,
                            link=link)
    msg = headers.new_message(settings, headers.Envelope(
        to_email=sub.email, to_name=sub.name,
        subject=t["subject"].format(brand=brand, token=token), date=now,
        message_id=headers.message_id(f"confirm|{sub.email}|{now.isoformat()}", settings),
        kind="confirm"))
    msg.set_content(text)
    paragraphs = "".join(f"<p>{escape(p).replace(chr(10), '<br>')}</p>"
                         for p in text.split("\n\n"))
    if url:
        paragraphs = paragraphs.replace(escape(url), f'<a href="{escape(url)}">{escape(url)}</a>')
    html = f'<!doctype html><html lang="{sub.language}"><body>{paragraphs}</body></html>'
    msg.add_alternative(html, subtype="html")
    return msg, html


def _digest(token: str) -> str:
    return hashlib.sha256(token.strip().lower().encode()).hexdigest()


def request_confirmation(db: Database, settings: Settings, email: str, *,
                         origin: str = "cli", now: datetime | None = None,
                         transport: Any = None) -> str:
    """Email EMAIL a signed confirmation request (reply, or open the link); returns where it
    went. Someone who unsubscribed or bounced is set back to pending first."""
    from newsletter import send

    require_secret(settings)
    now = now or store.utcnow()
    sub = store.get_subscriber(db, email)
    if sub.status in ("unsubscribed", "bounced"):
        sub = set_status(db, sub.email, "pending", origin, "asked to opt in again", now)
    elif sub.status != "pending":
        raise ConfirmationError(f"{sub.email} is {sub.status} - there is nothing to confirm")
    token = confirm_token(settings.secret, sub.email)
    msg, html = confirmation_message(sub, settings, token, now)
    try:
        if transport is not None:
            where = transport.send(msg, sub.email, f"confirm-{now:%Y%m%d}", html)
        else:
            send.refuse_unready(settings)
            with send.transport_for(settings) as box:
                where = box.send(msg, sub.email, f"confirm-{now:%Y%m%d}", html)
    except SendFailed as e:
        raise ConfirmationError(
            f"{sub.email} is pending, but the confirmation email did not go out ({e}) - send "
            f"it again with \"newsletter subscribers confirm {sub.email} --resend\"") from e
    store.set_confirm_hash(db, sub.email, _digest(token), origin=origin, now=now)
    return str(where)


def confirm(db: Database, email: str, token: str | None, origin: str = "reply",
            now: datetime | None = None) -> Subscriber:
    """Make a pending subscriber active, once they prove they own the address: TOKEN is the
    one their confirmation email carried (the reply handler passes ``origin="reply"``, a web
    endpoint ``"web"``). ``token=None`` is the operator confirming by hand, and is allowed
    only with ``origin="cli"``. Confirming someone already active changes nothing.
    Raises ConfirmationError on a wrong token."""
    sub = store.get_subscriber(db, email)
    if sub.status == "active":
        return sub
    if sub.status != "pending":
        raise ConfirmationError(f"{sub.email} is {sub.status}, not waiting for confirmation")
    if token is None:
        if origin != "cli":
            raise ConfirmationError(f"confirming {sub.email} needs the token from the "
                                    "confirmation email")
    else:
        expected = store.get_confirm_hash(db, sub.email)
        if not expected:
            raise ConfirmationError(
                f"no confirmation email was sent to {sub.email} - send one with "
                f"\"newsletter subscribers confirm {sub.email} --resend\"")
        if not hmac.compare_digest(_digest(token), expected):
            raise ConfirmationError(f"wrong confirmation token for {sub.email} - it must be "
                                    "the code from their confirmation email")
    detail = "by hand" if token is None else "with the emailed token"
    return set_status(db, sub.email, "active", origin, detail, now)


def expire_pending(db: Database, now: datetime, days: int = 7, origin: str = "cli",
                   outbox: str | None = None) -> list[str]:
    """Forget everyone still unconfirmed ``days`` after they were added (they never agreed,
    so nothing of them is kept); returns their addresses."""
    gone = store.pending_before(db, now - timedelta(days=days))
    for email in gone:
        forget(db, email, origin=origin, now=now, outbox=outbox, event="expired",
               compact=False)
    if gone:
        store.compact(db)
    return gone


# --- forgetting --------------------------------------------------------------------------


@dataclass
class Forgotten:
    email: str
    filters: int
    deliveries: int
    events: int
    files: list[str] = field(default_factory=list)
    residue: list[str] = field(default_factory=list)  # table.column still holding the address
    compact_error: str | None = None


def _outbox_files(email: str, outbox: str | None, recorded: Iterable[str]) -> list[Path]:
    """The .eml/.html copies of this person's emails in the outbox (issues and
    confirmations), by the names send.Outbox gives them."""
    from newsletter.send import safe_name

    safe = re.escape(safe_name(email))
    pattern = re.compile(rf"(\d{{4}}-\d{{2}}-\d{{2}}|confirm-\d{{8}})_{safe}\.(eml|html)",
                         re.IGNORECASE)
    candidates = [Path(p) for p in recorded]
    candidates += [p.with_suffix(".html") for p in candidates]
    if outbox and Path(outbox).is_dir():
        candidates += list(Path(outbox).iterdir())
    return sorted({p for p in candidates if pattern.fullmatch(p.name) and p.is_file()})


def forget(db: Database, email: str, *, origin: str = "cli", now: datetime | None = None,
           outbox: str | None = None, event: str = "forgotten",
           compact: bool = True) -> Forgotten:
    """Erase a person: their address, name, filters, history and delivery rows (whose
    Message-IDs derive from the address), leaving only anonymous delivery counts per issue
    date and status, and one "forgotten" event with no subscriber. Their emails in the
    outbox folder are deleted, and the database file is compacted so no copy lingers."""
    erased = store.forget_subscriber(db, email, event=event, origin=origin, now=now)
    files = _outbox_files(erased["email"], outbox, erased["paths"])
    for path in files:
        path.unlink()
    return Forgotten(
        email=erased["email"], filters=erased["filters"], deliveries=erased["deliveries"],
        events=erased["subscriber_events"], files=[str(p) for p in files],
        residue=store.find_text(db, erased["email"]),
        compact_error=store.compact(db) if compact else None)


# --- import and export -------------------------------------------------------------------


@dataclass
class ImportLine:
    row: int
    outcome: str  # added, updated, unchanged, rejected
    email: str = ""
    detail: str = ""

    def __str__(self) -> str:
        if self.outcome == "rejected":
            who = f" {self.email}" if self.email else ""
            return f"row {self.row}: rejected{who}: {self.detail}"
        detail = f" ({self.detail})" if self.detail else ""
        return f"row {self.row}: {self.outcome} {self.email}{detail}"


@dataclass
class ImportReport:
    lines: list[ImportLine] = field(default_factory=list)
    written: bool = False
    error: str | None = None  # why nothing was imported, if rows were rejected
    added: list[Subscriber] = field(default_factory=list)
    updated: list[tuple[Subscriber, Subscriber, str]] = field(default_factory=list)
    feedback: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def count(self, outcome: str) -> int:
        return sum(1 for line in self.lines if line.outcome == outcome)

    def summary(self) -> str:
        return ", ".join(f"{self.count(o)} {o}"
                         for o in ("added", "updated", "unchanged", "rejected"))


def _int(values: dict[str, Any], key: str, current: int) -> int:
    value = values.get(key, "")
    if value == "":
        return current
    try:
        return int(value)
    except ValueError:
        raise InvalidFilter(f"{key} {value!r} is not a whole number") from None


def _from_row(email: str, values: dict[str, Any], old: Subscriber | None,
              confirm: bool) -> Subscriber:
    """The subscriber a row describes. A missing column or an empty cell keeps the current
    value (or the default); a list column present is the whole list. Status and
    confirmed_at apply only to new subscribers."""
    base = old or Subscriber(email)

    def text(key: str, current: str) -> str:
        value = values.get(key, "")
        return current if value == "" else str(value)

    status = text("status", "active")
    if confirm and status == "active":
        status = "pending"
    frequency = text("frequency", base.frequency)
    sub = build(
        email, name=text("name", base.name), language=text("language", base.language),
        timezone=text("timezone", base.timezone), frequency=frequency,
        weekday=text("weekday", base.weekday or "") if frequency == "weekly" or
        values.get("weekday") else None,
        send_hour=_int(values, "send_hour", base.send_hour),
        max_papers=_int(values, "max_papers", base.max_papers),
        status=base.status if old else status,
        ranking=text("ranking", base.ranking), like_cap=_int(values, "like_cap", base.like_cap),
        **{k: values[k] if k in values else getattr(base, k) for k in (*FILTER_KEYS, "likes")})
    confirmed = text("confirmed_at", "")
    if old is None and confirmed:
        try:
            sub = replace(sub, confirmed_at=datetime.fromisoformat(confirmed))
        except ValueError:
            raise InvalidFilter(f"confirmed_at {confirmed!r} is not an ISO date and "
                                "time") from None
    return replace(sub, email=old.email) if old else sub


def _verdicts(cells: Any) -> list[dict[str, str]]:
    """``paper_id:relevant`` / ``paper_id:not_relevant`` cells as feedback rows."""
    out = []
    for cell in cells if isinstance(cells, list) else [cells]:
        paper_id, _, verdict = str(cell).rpartition(":")
        if not paper_id or verdict not in store.VERDICTS:
            raise InvalidFilter(f"feedback {str(cell)[:60]!r} is not paper_id:relevant or "
                                "paper_id:not_relevant")
        out.append({"paper_id": paper_id, "verdict": verdict, "origin": "import"})
    return out


def _resolve_row_likes(db: Database, rows: list[listio.Row], settings: Settings | None
                       ) -> None:
    """Seed papers in an import file, by arXiv id or DOI, as stored paper ids: papers the
    store has are used; with settings the others are looked up, else the row is rejected."""
    for row in rows:
        values = [str(v) for v in row.values.get("likes") or [] if str(v).strip()]
        if row.error or not values:
            continue
        try:
            if settings is not None:
                row.values["likes"] = resolve_likes(db, settings, values)
            else:
                row.values["likes"] = like_ids(db, values)
                unknown = set(row.values["likes"]) - {p.id for p in store.get_papers(
                    db, row.values["likes"])}
                if unknown:
                    raise InvalidFilter(f"seed papers not stored: {', '.join(sorted(unknown))}")
        except NewsletterError as e:
            row.error = str(e)


def plan_import(db: Database, rows: list[listio.Row], confirm: bool = False,
                tick: Callable[[int], None] | None = None) -> ImportReport:
    """What importing these rows would do, row by row; writes nothing. ``tick`` is told the
    number of rows first, then called with 0 after each row (for a progress bar)."""
    report = ImportReport()
    existing = {s.email.lower(): s for s in store.list_subscribers(db)}
    seen: dict[str, int] = {}
    if tick:
        tick(len(rows))
    for row in rows:
        if tick:
            tick(0)
        if row.error:
            report.lines.append(ImportLine(row.number, "rejected", "", row.error))
            continue
        email = ""
        try:
            email = normalize_email(str(row.values.get("email", "")))
            if email.lower() in seen:
                raise InvalidFilter(f"duplicate of row {seen[email.lower()]}")
            seen[email.lower()] = row.number
            old = existing.get(email.lower())
            new = _from_row(email, row.values, old, confirm)
            if "feedback" in row.values:
                report.feedback[new.email] = _verdicts(row.values["feedback"])
        except NewsletterError as e:
            report.lines.append(ImportLine(row.number, "rejected", email, str(e)))
            continue
        if old is None:
            report.added.append(new)
            report.lines.append(ImportLine(row.number, "added", new.email,
                                           "" if new.status == "active" else new.status))
            continue
        done = changes(old, new)
        wanted = str(row.values.get("status") or old.status)
        note = [f"status stays {old.status}, not {wanted}"] if wanted != old.status else []
        if done:
            report.updated.append((old, new, "; ".join(done)))
        report.lines.append(ImportLine(row.number, "updated" if done else "unchanged",
                                       old.email, "; ".join(done + note)))
    return report


def import_file(db: Database, path: str, *, encoding: str | None = None,
                dry_run: bool = False, skip_invalid: bool = False,
                confirm_with: Settings | None = None, settings: Settings | None = None,
                now: datetime | None = None,
                tick: Callable[[int], None] | None = None) -> ImportReport:
    """Import a CSV or JSON file (see ``newsletter.lists.listio`` for the format) in one
    transaction: each row is added, updated, unchanged or rejected with the reason. A file
    with a rejected row imports nothing (``report.error`` says so) unless ``skip_invalid``.
    ``confirm_with`` (the settings) makes new subscribers pending and emails each a
    confirmation request once the import is written."""
    if confirm_with is not None:
        require_secret(confirm_with)
    rows = listio.read_file(path, encoding)
    _resolve_row_likes(db, rows, settings or confirm_with)
    report = plan_import(db, rows, confirm_with is not None, tick)
    rejected = report.count("rejected")
    if rejected and not skip_invalid:
        report.error = (f"{rejected} row{'s' if rejected > 1 else ''} rejected - nothing "
                        f"imported; fix {'them' if rejected > 1 else 'it'}, or pass "
                        "--skip-invalid to import the other rows")
        return report
    if dry_run or not (report.added or report.updated):
        return report
    store.import_subscribers(db, report.added, report.updated, now)
    for email, verdicts in report.feedback.items():
        store.replace_feedback(db, email, verdicts)
    report.written = True
    if confirm_with is not None:
        _send_confirmations(db, confirm_with, report, now)
    return report


def _send_confirmations(db: Database, settings: Settings, report: ImportReport,
                        now: datetime | None) -> None:
    from newsletter import send

    pending = {s.email for s in report.added if s.status == "pending"}
    try:
        send.refuse_unready(settings)
    except NewsletterError as e:  # the list is imported; the requests wait for a fix
        for line in report.lines:
            if line.outcome == "added" and line.email in pending:
                line.detail = f"pending: confirmation NOT sent - {e}"
        return
    with send.transport_for(settings) as box:
        for line in report.lines:
            if line.outcome != "added" or line.email not in pending:
                continue
            try:
                request_confirmation(db, settings, line.email, origin="import", now=now,
                                     transport=box)
                line.detail = "pending: confirmation sent"
            except ConfirmationError as e:
                line.detail = f"pending: confirmation NOT sent - {e}"


def export(db: Database, fmt: str = "csv",
           tick: Callable[[int], None] | None = None) -> tuple[str, int]:
    """(every subscriber with all their settings and filters as CSV or JSON text that
    ``import_file`` reads back into the same subscribers, how many). ``tick`` as for
    ``plan_import``."""
    subs = store.list_subscribers(db)
    verdicts = store.all_feedback(db)
    counted: Iterable[Subscriber] = subs
    if tick:
        tick(len(subs))
        counted = _ticking(subs, tick)
    return ((listio.to_json(counted, verdicts) if fmt == "json"
             else listio.to_csv(counted, verdicts)), len(subs))


def _ticking(items: list[Subscriber], tick: Callable[[int], None]) -> Iterator[Subscriber]:
    for item in items:
        yield item
        tick(0)


# --- seed papers ("papers like mine") ------------------------------------------------------


def resolve_likes(db: Database, settings: Settings, values: Sequence[str] = (),
                  files: Sequence[str] = ()) -> list[str]:
    """The stored paper ids for seed papers named by arXiv id or DOI, or found in reference
    manager files: papers already stored are used as they are, the others are looked up
    (arXiv API by id; Crossref, then OpenAlex, by DOI) and stored. Raises InvalidFilter,
    naming each paper that could not be found, before anything is written."""
    from newsletter.relevance.seeds import parse_key, read_library

    keys = [parse_key(v) for v in values]
    for path in files:
        found, _ = read_library(path)
        keys += found
    keys = list(dict.fromkeys(keys))
    stored = {p.id for p in store.get_papers(db, [k.split(":", 1)[1] for k in keys])}
    by_doi = {p.doi: p.id for p in store.papers_with_dois(
        db, [k[4:] for k in keys if k.startswith("doi:")])}
    wanted_arxiv = [k[6:] for k in keys if k.startswith("arxiv:") and k[6:] not in stored]
    wanted_doi = [k[4:] for k in keys if k.startswith("doi:")
                  and k[4:] not in stored and k[4:] not in by_doi]
    fetched, missing = [], []
    if wanted_arxiv:
        from newsletter.sources import arxiv

        got, lost = arxiv.lookup(wanted_arxiv, settings)
        fetched += got
        missing += lost
    if wanted_doi:
        from newsletter.sources import doi

        got, lost = doi.lookup(wanted_doi, settings)
        fetched += got
        missing += lost
    if missing:
        raise InvalidFilter("seed papers not found: " + "; ".join(missing[:5])
                            + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
                            + " - check the ids, or leave them out")
    if fetched:
        store.upsert_papers(db, fetched)
    ids = []
    for k in keys:
        raw = k.split(":", 1)[1]
        ids.append(by_doi.get(raw) or store.paper_id_for(db, raw, k.startswith("doi:")))
    return list(dict.fromkeys(ids))


def like_ids(db: Database, values: Sequence[str]) -> list[str]:
    """The stored ids of seed papers named by arXiv id or DOI (for removing them)."""
    from newsletter.relevance.seeds import parse_key

    out = []
    for value in values:
        key = parse_key(value)
        raw = key.split(":", 1)[1]
        dois = store.papers_with_dois(db, [raw]) if key.startswith("doi:") else []
        out.append(dois[0].id if dois else raw)
    return out
