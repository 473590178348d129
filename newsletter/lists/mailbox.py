"""Reading the sender's mailbox: unsubscribe requests, hard bounces and confirmation
replies, applied before the morning's sending (`newsletter unsubscribes sync`).

Works where there is no web server (a GitHub Actions set-up): List-Unsubscribe carries a
mailto whose subject holds a signed token; a reader's mail client sends it, and this module
reads it over IMAP. A token is an HMAC of the address with NEWSLETTER_SECRET, so a token
for one address cannot unsubscribe another.
"""

from __future__ import annotations

import hmac
import imaplib
import re
import ssl
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.utils import parseaddr
from urllib.parse import unquote, urlsplit

from sqlite_utils import Database

from newsletter import store
from newsletter.config import Settings
from newsletter.errors import ConfigError, NewsletterError
from newsletter.lists.addresses import is_loopback, normalize_email
from newsletter.lists.tokens import unsubscribe_token

_TOKEN = re.compile(r"\b([0-9a-f]{32})\b")


@dataclass
class SyncReport:
    unsubscribed: list[str] = field(default_factory=list)
    bounced: list[tuple[str, str]] = field(default_factory=list)  # (address, status text)
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


def is_report(msg: Message) -> bool:
    """A delivery status notification (RFC 3464)."""
    return (msg.get_content_type() == "multipart/report"
            and msg.get_param("report-type") == "delivery-status")


def hard_bounces(msg: Message) -> list[tuple[str, str]]:
    """(address, status) for every permanently failed recipient in a delivery status
    notification; delays and other 4.x.x reports are not bounces."""
    if not is_report(msg):
        return []
    found = []
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        blocks: list[Message] = [b for b in payload if isinstance(b, Message)] \
            if isinstance(payload, list) else [part]
        for block in blocks:
            recipient = str(block.get("Final-Recipient") or block.get("Original-Recipient") or "")
            action = str(block.get("Action") or "").strip().lower()
            status = str(block.get("Status") or "").strip()
            address = recipient.split(";", 1)[-1].strip()
            if address and action == "failed" and status.startswith("5"):
                diagnostic = str(block.get("Diagnostic-Code") or "").split(";", 1)[-1].strip()
                found.append((address, f"{status} {diagnostic}".strip()))
    return found


def _owner(db: Database, secret: str, token: str, sender: str) -> str | None:
    """The subscriber a token belongs to: the sender (one HMAC), else whoever it was
    forwarded from (one HMAC per address, no filters loaded)."""
    if sender and _known(db, sender) and \
            hmac.compare_digest(unsubscribe_token(secret, sender), token):
        return sender
    for address in store.subscriber_emails(db):
        if hmac.compare_digest(unsubscribe_token(secret, address), token):
            return address
    return None


def _known(db: Database, address: str) -> bool:
    try:
        store.get_subscriber(db, address)
        return True
    except NewsletterError:
        return False


def classify(db: Database, settings: Settings, msg: Message, report: SyncReport,
             now: datetime) -> bool:
    """Apply one message; True if it was ours to handle (it is then marked read)."""
    from newsletter.lists import roster

    if is_report(msg):  # a delivery status notification: act on hard bounces only
        for address, status in hard_bounces(msg):
            if _known(db, address):
                roster.set_status(db, address, "bounced", origin="bounce", detail=status,
                                       now=now)
                report.bounced.append((address, status))
        return True
    subject = str(msg.get("Subject") or "")
    words = (subject + "\n" + _text(msg)[:500]).lower()
    try:
        sender = normalize_email(parseaddr(str(msg.get("From") or ""))[1])
    except NewsletterError:
        sender = ""
    match = _TOKEN.search(subject) or _TOKEN.search(_text(msg)[:2000])
    token = match.group(1) if match else ""
    if "unsubscribe" in words:
        if settings.secret:
            owner = _owner(db, settings.secret, token, sender) if token else None
        else:  # no signing key: the From address is the only proof there is
            owner = sender if sender and _known(db, sender) else None
        if owner is None:
            report.rejected.append(f"unsubscribe request from {sender or 'unknown'}: "
                                   "no valid token")
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
            _, fetched = conn.uid("FETCH", uid, "(BODY.PEEK[])")
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
