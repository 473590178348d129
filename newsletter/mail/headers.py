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

import binascii
import functools
import hashlib
import re
import secrets
from collections.abc import Sequence
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


@functools.lru_cache(maxsize=64)
def address(value: str) -> str:
    """The address in a header value ("Name <a@b>" -> "a@b"); the settings' From and
    Reply-To are asked for once per message."""
    return parseaddr(value)[1]


def from_domain(settings: Settings) -> str:
    """The domain of the From address ("localhost" when there is none)."""
    return address(settings.from_addr).rpartition("@")[2].lower() or "localhost"


def brand_name(settings: Settings) -> str:
    return settings.brand.split(" · ")[0].strip() or "Newsletter"


def unsubscribe_links(settings: Settings, email: str) -> tuple[str, str | None]:
    """(mailto link, https link or None) for List-Unsubscribe and the footer. The mailto's
    subject names the address its token was made for, so a forwarded request acts for that
    address and nobody else's (lists/mailbox.py checks the two agree)."""
    sender = address(settings.from_addr)
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


def _fields(settings: Settings, env: Envelope) -> list[tuple[str, str, bool]]:
    """Every header as (name, value, structured): structured values are parsed, encoded
    and folded by the email package; the others are fixed ASCII, written exactly as the
    RFCs spell them."""
    if env.kind not in KINDS:
        raise ValueError(f"unknown message kind {env.kind!r}")
    out = [("From", settings.from_addr, True),
           ("To", formataddr((env.to_name, env.to_email)) if env.to_name else env.to_email,
            True),
           ("Reply-To", settings.reply_to or settings.from_addr, True),
           ("Subject", env.subject, True),
           ("Date", format_datetime(env.date), False),
           ("Message-ID", env.message_id, False),
           ("MIME-Version", "1.0", False)]
    if env.kind == "confirm":  # a one-off request, not list mail: no list headers
        out.append(("Auto-Submitted", "auto-generated", False))
    else:
        out.append(("List-Id", list_id(settings), False))
        mailto, web = unsubscribe_links(settings, env.to_email)
        out.append(("List-Unsubscribe", list_unsubscribe([mailto] + ([web] if web else [])),
                    False))
        if web:  # RFC 8058 one-click: only with an https endpoint that takes a POST
            out.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click", False))
    if settings.feedback_id:  # Gmail's feedback loop: campaign:kind:sender
        out.append(("Feedback-ID", f"{env.date:%Y%m%d}:{env.kind}:{settings.feedback_id}",
                    False))
    return out


def new_message(settings: Settings, env: Envelope) -> EmailMessage:
    """An EmailMessage with every header set; the caller adds the body parts."""
    msg = EmailMessage(policy=MAIL_POLICY)
    for name, value, structured in _fields(settings, env):
        if structured:
            msg[name] = value
        else:
            msg.set_raw(name, value)
    return msg


HTML_BUDGET = 100_000  # bytes of HTML; Gmail clips an HTML part larger than 102 KB
LINE_LIMIT = 998  # octets per line before CRLF (RFC 5322 2.1.1)


def text_body(content: str, subtype: str = "plain") -> tuple[str, str]:
    """(Content-Transfer-Encoding, payload) for a text part, encoded once: 7bit when it is
    short-lined ASCII; an HTML part also when :func:`html_7bit` can write it so; else
    quoted-printable by binascii (the email package's own encoder is ten times slower)."""
    if not content.endswith("\n"):
        content += "\n"
    if subtype == "html":
        seven = html_7bit(content)
        if seven is not None:
            return "7bit", seven
    if content.isascii() and max(map(len, content.splitlines()), default=0) <= 78:
        return "7bit", content
    return "quoted-printable", binascii.b2a_qp(content.encode(), istext=True).decode("ascii")


@functools.lru_cache(maxsize=8)  # render measures the part, then the message carries it
def html_7bit(html: str) -> str | None:
    """The HTML as a 7bit body, or None when it cannot be one within :data:`HTML_BUDGET`.

    Every non-ASCII character becomes a numeric character reference (``&#8230;``), and a
    line longer than :data:`LINE_LIMIT` is broken at a space that HTML treats as any other
    white space: in text, or between two attributes of a tag (never inside a quoted value).
    The page a client shows is the same. Against quoted-printable, the part has about a
    seventh of the lines and no ``=3D`` for every ``=`` in the markup, which a receiving
    server reads line by line; a reference costs 7-8 bytes where quoted-printable's UTF-8
    costs 6-9. None (quoted-printable then) when a line has nowhere to break, or when the
    references would take the part past the budget (Gmail counts the HTML as sent)."""
    if not html.isascii():
        html = html.encode("ascii", "xmlcharrefreplace").decode("ascii")
        if len(html) > HTML_BUDGET:
            return None
    if "\r" in html:
        return None
    lines = html.split("\n")
    out = []
    for line in lines:
        if len(line) > LINE_LIMIT:
            broken = _break_html_line(line)
            if broken is None:
                return None
            out.extend(broken)
        else:
            out.append(line)
    return "\n".join(out)


def _break_html_line(line: str) -> list[str] | None:
    """``line`` as lines of at most LINE_LIMIT characters, each break made at a space that
    is markup white space (see html_7bit); None when some stretch has no such space."""
    out = []
    start = 0
    while len(line) - start > LINE_LIMIT:
        at = line.rfind(" ", start + 1, start + LINE_LIMIT + 1)
        while at > start:
            lt, gt = line.rfind("<", start, at), line.rfind(">", start, at)
            if lt < 0 and gt < 0:  # nothing to go by since the last break: look further back
                lt, gt = line.rfind("<", 0, at), line.rfind(">", 0, at)
            if gt >= lt or line.count('"', lt, at) % 2 == 0:
                break  # in text (no tag so far, or after one), or between attributes
            # inside a quoted value: go on from before the quote that opens it
            at = line.rfind(" ", start + 1, line.rfind('"', lt, at))
        if at <= start:
            return None
        out.append(line[start:at])
        start = at + 1
    out.append(line[start:])
    return out


@functools.lru_cache(maxsize=512)
def _folded(name: str, value: str) -> str:
    """One structured header line as the email package writes it (cached: the From,
    Reply-To and most subjects repeat across a run's messages)."""
    line: str = MAIL_POLICY.header_factory(name, value).fold(policy=MAIL_POLICY)
    return line


# "Ada Lovelace <ada@example.org>" or "ada@example.org": what the email package writes as
# it is (ASCII words, one space between, an address without quoting, short enough not to
# fold). The To line differs in every message, so it is not worth a parse.
_PLAIN_ADDRESS = re.compile(r"(?:[A-Za-z0-9]+(?: [A-Za-z0-9]+)* <[A-Za-z0-9._+-]+@"
                            r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+>|[A-Za-z0-9._+-]+@"
                            r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")


def _plain_address(value: str) -> bool:
    return len(value) <= 70 and _PLAIN_ADDRESS.fullmatch(value) is not None


def _crlf(text: str) -> str:
    return "\r\n".join(text.splitlines()) + "\r\n"


def message_bytes(settings: Settings, env: Envelope, parts: Sequence[tuple[str, str]]
                  ) -> bytes:
    """The message ``new_message`` with ``parts`` ((subtype, text) as a
    multipart/alternative) would serialise to, written here directly: the same headers,
    encodings and MIME structure, a few times faster than the email package's generator
    (a run writes one message per reader; tests/test_message_bytes.py compares the two)."""
    head = [(f"{name}: {value}\r\n" if name == "To" and _plain_address(value)
             else _folded(name, value)) if structured else f"{name}: {_crlf(value)}"
            for name, value, structured in _fields(settings, env)]
    bodies = []
    for subtype, content in parts:
        cte, payload = text_body(content, subtype)
        bodies.append(f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
                      f"Content-Transfer-Encoding: {cte}\r\n\r\n{_crlf(payload)}")
    boundary = _boundary(bodies)
    head.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n')
    out = "".join(head) + f"\r\n--{boundary}\r\n"
    out += f"\r\n--{boundary}\r\n".join(bodies) + f"\r\n--{boundary}--\r\n"
    return out.encode("ascii")


def _boundary(bodies: list[str]) -> str:
    """A multipart boundary found in none of the parts (quoted-printable text cannot hold
    one: it writes "=" as "=3D"; a 7bit part is checked)."""
    while True:
        boundary = "=" * 15 + f"{secrets.randbelow(10 ** 19):019d}" + "=="
        if not any(boundary in b for b in bodies):
            return boundary


def to_bytes(msg: EmailMessage | bytes, dkim: DkimKey | None = None) -> bytes:
    """The bytes that go out (CRLF line ends), DKIM-signed when a key is given. Bytes in
    (a message serialised elsewhere, e.g. by a worker process) are signed as they are."""
    raw = msg if isinstance(msg, bytes) else msg.as_bytes(policy=MAIL_POLICY)
    return sign(raw, dkim) if dkim is not None else raw


_FROM_LINE = re.compile(rb"^From:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def envelope_sender(msg: EmailMessage | bytes) -> str:
    """The SMTP MAIL FROM address: the From address (of serialised bytes, read from their
    header block without parsing the rest: a sending thread asks this once per message)."""
    if isinstance(msg, bytes):
        header_block = msg.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        found = _FROM_LINE.search(header_block)
        value = found.group(1).decode("ascii", "replace") if found else ""
        value = " ".join(value.split())  # unfolded
    else:
        value = str(msg["From"] or "")
    return address(value)
