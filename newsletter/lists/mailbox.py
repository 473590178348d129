"""Reading the sender's mailbox: unsubscribe requests, bounces, complaints and
confirmation replies, applied before the morning's sending (`newsletter unsubscribes sync`).

Works where there is no web server (a GitHub Actions set-up): List-Unsubscribe carries a
mailto whose subject names the address and holds a signed token; a reader's mail client
sends it, and this module reads it over IMAP. A token is an HMAC of the address with
NEWSLETTER_SECRET and acts only for that address, whoever sends it: the address named in
the subject (else the sender's) must be the one the token was made for. Bounce and
complaint reports are read by lists/bounces.py and applied by ``apply_report``.
"""

from __future__ import annotations

import hmac
import imaplib
import re
import ssl
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.utils import parseaddr
from urllib.parse import unquote, urlsplit

from sqlite_utils import Database

from newsletter import store
from newsletter.config import Settings
from newsletter.errors import ConfigError, NewsletterError
from newsletter.lists import bounces
from newsletter.lists.addresses import is_loopback, normalize_email
from newsletter.lists.tokens import unsubscribe_token

MAX_FETCH = 1_000_000
SOFT_WINDOW = timedelta(days=30)  # soft bounces older than this are not counted
_TOKEN = re.compile(r"\b([0-9a-f]{32})\b")
_ADDRESS = re.compile(r"[^\s<>@]+@[^\s<>@]+\.[^\s<>@]+")


@dataclass
class SyncReport:
    unsubscribed: list[str] = field(default_factory=list)
    bounced: list[tuple[str, str]] = field(default_factory=list)  # (address, status text)
    soft: list[tuple[str, int]] = field(default_factory=list)  # (address, soft bounces in a row)
    paused: list[str] = field(default_factory=list)  # paused after too many soft bounces
    complained: list[str] = field(default_factory=list)  # unsubscribed by a complaint
    confirmed: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # requests we could not verify
    ignored: int = 0  # messages that are none of the above, left unread


def connect(url: str, password: str = "", timeout: float = 30.0
            ) -> tuple[imaplib.IMAP4, str]:
    """Log in to ``imaps://user@host:993/INBOX`` (or imap+starttls://, or imap:// to a
    loopback test server) and return the connection and the mailbox name."""
    parts = urlsplit(url)
    if parts.scheme not in ("imap", "imaps", "imap+starttls") or not parts.hostname:
        raise ConfigError("NEWSLETTER_IMAP_URL must look like imaps://user@host:993/INBOX")
    user = unquote(parts.username or "")
    secret = unquote(parts.password) if parts.password else password
    host = parts.hostname
    if parts.scheme == "imap" and not is_loopback(host):
        raise ConfigError(f"refusing to send the IMAP password to {host} unencrypted - use "
                          "imaps:// or imap+starttls:// in NEWSLETTER_IMAP_URL")
    try:
        conn: imaplib.IMAP4
        if parts.scheme == "imaps":
            conn = imaplib.IMAP4_SSL(host, parts.port or 993, timeout=timeout,
                                     ssl_context=ssl.create_default_context())
        else:
            conn = imaplib.IMAP4(host, parts.port or 143, timeout=timeout)
            if parts.scheme == "imap+starttls":
                conn.starttls(ssl.create_default_context())
        conn.login(user, secret)
    except (OSError, imaplib.IMAP4.error) as e:
        raise NewsletterError(f"cannot read the mailbox at {host} ({e}) - check "
                              "NEWSLETTER_IMAP_URL and NEWSLETTER_IMAP_PASSWORD") from e
    return conn, unquote(parts.path.lstrip("/")) or "INBOX"


def _text(msg: Message) -> str:
    body = msg.get_body(("plain",)) if isinstance(msg, EmailMessage) else None
    try:
        return body.get_content() if body is not None else ""
    except (LookupError, ValueError):
        return ""


def _owner(db: Database, secret: str, token: str, address: str) -> str | None:
    """ADDRESS when TOKEN was made for it (and it is a subscriber): a token acts only for
    the address it was made for, whoever sends it."""
    if address and _known(db, address) and \
            hmac.compare_digest(unsubscribe_token(secret, address), token):
        return address
    return None


def _known(db: Database, address: str) -> bool:
    try:
        store.get_subscriber(db, address)
        return True
    except NewsletterError:
        return False


def _subscriber_for(db: Database, address: str, message_ids: tuple[str, ...]) -> str | None:
    """Who a bounce or complaint is about: the subscriber an issue with one of these
    Message-IDs went to (the surest), else the address the report names."""
    for mid in message_ids:
        owner = store.delivery_recipient(db, mid)
        if owner:
            return owner
    return address if address and _known(db, address) else None


def apply_report(db: Database, settings: Settings, found: bounces.Report, report: SyncReport,
                 now: datetime) -> None:
    """Act on a bounce or complaint: a complaint unsubscribes at once, a hard bounce marks
    the address bounced at once, soft bounces are counted and pause the subscriber at
    NEWSLETTER_SOFT_BOUNCE_LIMIT within 30 days (counted since their status last changed)."""
    from newsletter.lists import roster

    only = found.message_ids if len(found.failures) + len(found.complaints) == 1 else ()
    for address in found.complaints:
        owner = _subscriber_for(db, address, only)
        if owner and store.get_subscriber(db, owner).status not in ("unsubscribed",):
            roster.set_status(db, owner, "unsubscribed", origin="complaint",
                              detail="marked the newsletter as spam", now=now)
            report.complained.append(owner)
    if found.kind == "arf" and not found.complaints and found.message_ids:
        owner = _subscriber_for(db, "", found.message_ids)
        if owner:
            roster.set_status(db, owner, "unsubscribed", origin="complaint",
                              detail="marked the newsletter as spam", now=now)
            report.complained.append(owner)
    for failure in found.failures:
        owner = _subscriber_for(db, failure.address, only)
        if owner is None:
            continue
        sub = store.get_subscriber(db, owner)
        if sub.status in ("bounced", "unsubscribed"):
            continue
        if failure.hard:
            roster.set_status(db, owner, "bounced", origin="bounce", detail=failure.detail,
                              now=now)
            report.bounced.append((owner, failure.detail))
            continue
        store.record_event(db, owner, "soft bounce", "bounce", failure.detail, now=now)
        count = store.soft_bounces(db, owner, since=now - SOFT_WINDOW)
        report.soft.append((owner, count))
        limit = settings.soft_bounce_limit
        if limit and count >= limit and sub.status == "active":
            roster.set_status(db, owner, "paused", origin="bounce",
                              detail=f"{count} soft bounces in a row", now=now)
            report.paused.append(owner)


def classify(db: Database, settings: Settings, msg: Message, report: SyncReport,
             now: datetime) -> bool:
    """Apply one message; True if it was ours to handle (it is then marked read)."""
    from newsletter.lists import roster

    found = bounces.parse(msg)
    if found.kind in ("dsn", "dsn-global", "arf", "non-standard"):
        apply_report(db, settings, found, report, now)
        return True
    if found.kind == "auto-reply":  # "out of office": nothing to do, not a request
        report.ignored += 1
        return False
    subject = str(msg.get("Subject") or "")
    words = (subject + "\n" + _text(msg)[:500]).lower()
    try:
        sender = normalize_email(parseaddr(str(msg.get("From") or ""))[1])
    except NewsletterError:
        sender = ""
    match = _TOKEN.search(subject) or _TOKEN.search(_text(msg)[:2000])
    token = match.group(1) if match else ""
    if "unsubscribe" in words:
        named = _ADDRESS.search(subject)  # "unsubscribe ada@example.org <token>"
        target = sender
        if named:
            try:
                target = normalize_email(named.group(0))
            except NewsletterError:
                target = ""
        if settings.secret:
            owner = _owner(db, settings.secret, token, target) if token else None
        else:  # no signing key: the From address is the only proof there is
            owner = sender if sender and _known(db, sender) else None
        if owner is None:
            report.rejected.append(f"unsubscribe request from {sender or 'unknown'}"
                                   f"{' for ' + target if target != sender else ''}: "
                                   "no valid token for that address")
            return True
        roster.set_status(db, owner, "unsubscribed", origin="unsubscribe", now=now)
        report.unsubscribed.append(owner)
        return True
    if "confirm" in words and token and sender and _known(db, sender):
        try:
            roster.confirm(db, sender, token, origin="reply", now=now)
            report.confirmed.append(sender)
        except NewsletterError as e:
            report.rejected.append(f"confirmation from {sender}: {e}")
        return True
    report.ignored += 1
    return False


def sync(db: Database, settings: Settings, now: datetime) -> SyncReport:
    """Read every unread message once; mark the ones applied as read."""
    if not settings.imap_url:
        raise ConfigError("set NEWSLETTER_IMAP_URL (e.g. imaps://newsletter@mail.example.org"
                          "/INBOX) to read unsubscribe requests and bounces")
    conn, mailbox = connect(settings.imap_url, settings.imap_password)
    report = SyncReport()
    try:
        typ, answer = conn.select(f'"{mailbox}"')
        if typ != "OK":
            why = b" ".join(a for a in answer if isinstance(a, bytes)).decode(errors="replace")
            raise NewsletterError(f"cannot open mailbox {mailbox!r} on the IMAP server ({why})")
        _, data = conn.uid("SEARCH", "UNSEEN")
        for uid in (data[0] or b"").decode().split():
            # at most MAX_FETCH bytes of any message: a report's useful part is at the top
            _, fetched = conn.uid("FETCH", uid, f"(BODY.PEEK[]<0.{MAX_FETCH}>)")
            raw = next((item[1] for item in fetched if isinstance(item, tuple)), b"")
            msg = message_from_bytes(raw, policy=policy.default)
            if classify(db, settings, msg, report, now):
                conn.uid("STORE", uid, "+FLAGS", "(\\Seen)")
    finally:
        try:
            conn.logout()
        except (OSError, imaplib.IMAP4.error):
            pass
    return report
