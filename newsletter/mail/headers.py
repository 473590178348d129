"""The one place that writes the headers of every message the tool sends (issues, the
"nothing new" note, confirmation requests), and turns a message into the bytes that go out.

Pure functions: settings and facts in, a message or bytes out, so any sending loop (one
connection or many, one process or several) can use them.

Structured headers are written by hand, not by the ``email`` package's header classes, which
fold long values and RFC 2047-encode them: ``List-Unsubscribe`` (RFC 2369/8058) must stay a
list of ``<URI>`` that providers can read, folded only between the URIs. ``MAIL_POLICY`` keeps
such pre-folded values exactly as written (``refold_source="none"``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from urllib.parse import quote, urlencode

from newsletter.config import Settings
from newsletter.lists.tokens import unsubscribe_token
from newsletter.mail.signing import DkimKey, sign

# CRLF line ends (what SMTP and DKIM want), and raw header values never refolded.
MAIL_POLICY = policy.SMTP.clone(refold_source="none")

KINDS = ("issue", "empty", "confirm")  # an issue, a "nothing new" note, a confirmation


def from_domain(settings: Settings) -> str:
    """The domain of the From address ("localhost" when there is none)."""
    return parseaddr(settings.from_addr)[1].rpartition("@")[2].lower() or "localhost"


def brand_name(settings: Settings) -> str:
    return settings.brand.split(" · ")[0].strip() or "Newsletter"


def unsubscribe_links(settings: Settings, email: str) -> tuple[str, str | None]:
    """(mailto link, https link or None) for List-Unsubscribe and the footer. The mailto's
    subject names the address its token was made for, so a forwarded request acts for that
    address and nobody else's (lists/mailbox.py checks the two agree)."""
    sender = parseaddr(settings.from_addr)[1]
    token = unsubscribe_token(settings.secret, email) if settings.secret else ""
    subject = f"unsubscribe {email} {token}" if token else "unsubscribe"
    mailto = f"mailto:{sender}?subject={quote(subject)}"
    web = None
    if settings.unsubscribe_url and token:
        query = urlencode({"email": email, "token": token})  # ada+news@ stays ada+news@
        web = f"{settings.unsubscribe_url.rstrip('/')}/unsubscribe?{query}"
    return mailto, web


def list_unsubscribe(uris: list[str]) -> str:
    """RFC 2369: ``<uri>, <uri>``, folded between the URIs only (each URI stays whole)."""
    return ",\r\n ".join(f"<{u}>" for u in uris)


def list_id(settings: Settings) -> str:
    """RFC 2919: the brand as a quoted phrase, then ``<daily.example.org>``."""
    name = brand_name(settings)
    if name.isascii():
        phrase = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:  # an encoded-word is allowed in the phrase (never in the <list-id> itself)
        phrase = Header(name, "utf-8").encode()
    return f"{phrase} <daily.{from_domain(settings)}>"


def message_id(seed: str, settings: Settings) -> str:
    """``<tag.hash@from-domain>``: the same seed gives the same id (a retried issue keeps
    its Message-ID)."""
    digest = hashlib.sha256(seed.encode()).hexdigest()[:20]
    tag = seed.split("|", 1)[0]
    return f"<{tag}.{digest}@{from_domain(settings)}>"


@dataclass(frozen=True)
class Envelope:
    """What differs between two messages: who to, what about, when, which kind."""

    to_email: str
    to_name: str
    subject: str
    date: datetime
    message_id: str
    kind: str = "issue"


def new_message(settings: Settings, env: Envelope) -> EmailMessage:
    """An EmailMessage with every header set; the caller adds the body parts."""
    if env.kind not in KINDS:
        raise ValueError(f"unknown message kind {env.kind!r}")
    msg = EmailMessage(policy=MAIL_POLICY)
    msg["From"] = settings.from_addr
    msg["To"] = formataddr((env.to_name, env.to_email)) if env.to_name else env.to_email
    msg["Reply-To"] = settings.reply_to or settings.from_addr
    msg["Subject"] = env.subject
    # set_raw: fixed ASCII values, written exactly as the RFCs spell them
    msg.set_raw("Date", format_datetime(env.date))
    msg.set_raw("Message-ID", env.message_id)
    msg.set_raw("MIME-Version", "1.0")
    if env.kind == "confirm":  # a one-off request, not list mail: no list headers
        msg.set_raw("Auto-Submitted", "auto-generated")
    else:
        msg.set_raw("List-Id", list_id(settings))
        mailto, web = unsubscribe_links(settings, env.to_email)
        msg.set_raw("List-Unsubscribe", list_unsubscribe([mailto] + ([web] if web else [])))
        if web:  # RFC 8058 one-click: only with an https endpoint that takes a POST
            msg.set_raw("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    if settings.feedback_id:  # Gmail's feedback loop: campaign:kind:sender
        msg.set_raw("Feedback-ID", f"{env.date:%Y%m%d}:{env.kind}:{settings.feedback_id}")
    return msg


def to_bytes(msg: EmailMessage | bytes, dkim: DkimKey | None = None) -> bytes:
    """The bytes that go out (CRLF line ends), DKIM-signed when a key is given. Bytes in
    (a message serialised elsewhere, e.g. by a worker process) are signed as they are."""
    raw = msg if isinstance(msg, bytes) else msg.as_bytes(policy=MAIL_POLICY)
    return sign(raw, dkim) if dkim is not None else raw


def envelope_sender(msg: EmailMessage | bytes) -> str:
    """The SMTP MAIL FROM address: the From address."""
    if isinstance(msg, bytes):
        from email.parser import BytesHeaderParser

        value = BytesHeaderParser(policy=MAIL_POLICY).parsebytes(msg).get("From")
    else:
        value = msg["From"]
    return parseaddr(str(value or ""))[1]
