"""What a message in the sender's mailbox says about delivery: bounces and complaints.

Reads, in this order:
- feedback reports (ARF, RFC 5965: ``multipart/report; report-type=feedback-report``): the
  reader marked the mail as spam - a **complaint**;
- delivery status notifications (RFC 3464 ``message/delivery-status`` and RFC 6533
  ``message/global-delivery-status``): per recipient, ``Action: failed`` is a bounce,
  ``delayed`` is only a warning;
- the common non-standard bounces (qmail, Exim, old Postfix/Sendmail, Exchange, Yahoo,
  Lotus, ...): addresses in the notice above the returned copy, with the SMTP codes and
  wording next to them;
- automatic replies (vacation, out of office): not bounces, ignored.

A failure is **hard** (the address does not exist, or its domain does not: RFC 3463 status
5.1.1, 5.1.2, 5.1.3, 5.1.6, 5.1.10, or the same said in words) or **soft** (everything
else that failed: mailbox full, refused as spam or by policy, gave up after retrying).
The mailbox handler bounces an address at once on a hard failure, counts soft ones, and
unsubscribes a complainant at once.

Every byte here comes from outside: only the first ``MAX_TEXT`` characters of a notice are
read, and at most ``MAX_RECIPIENTS`` recipients per message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message
from email.utils import getaddresses, parseaddr

MAX_TEXT = 64_000
MAX_RECIPIENTS = 50

KINDS = ("dsn", "dsn-global", "arf", "non-standard", "auto-reply", "none")


@dataclass(frozen=True)
class Failure:
    address: str
    hard: bool
    status: str  # RFC 3463 code ("5.1.1"), or the SMTP reply code, or ""
    detail: str  # the diagnostic, shortened


@dataclass(frozen=True)
class Report:
    kind: str  # one of KINDS
    failures: tuple[Failure, ...] = ()
    complaints: tuple[str, ...] = ()  # addresses whose reader complained (ARF)
    delayed: tuple[str, ...] = ()  # addresses with only a delay warning: nothing to do
    message_ids: tuple[str, ...] = ()  # Message-IDs of the returned original

    @property
    def outcome(self) -> str:
        """complaint, hard, soft or ignore: what the message means, in one word."""
        if self.complaints or self.kind == "arf":
            return "complaint"
        if any(f.hard for f in self.failures):
            return "hard"
        return "soft" if self.failures else "ignore"


# --- small helpers ------------------------------------------------------------------------

_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_REPLY = re.compile(r"(?<![\d.#-])([45]\d\d)(?:[ -]|$)", re.M)
_ROBOTS = re.compile(r"^(mailer-daemon|mail-daemon|mailerdaemon|postmaster|mdaemon|"
                     r"mail\.?delivery|bounces?|nobody|root|daemon|mailadmin)$", re.I)

# RFC 3463 statuses that say the address (or its domain) is gone.
_HARD_STATUS = {"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.1.0"}

_GONE = re.compile(
    r"user unknown|unknown user|no such (user|mailbox|recipient|address|account|local user)|"
    r"does(n't| not) exist|not exist|unknown (recipient|address|local|mailbox)|"
    r"recipient (unknown|not found|address rejected: (user unknown|undeliverable))|"
    r"(user|mailbox|account|recipient|address) (not found|unavailable|disabled|invalid)|"
    r"invalid (recipient|mailbox|address|user)|not a valid (mailbox|user|recipient)|"
    r"no mailbox here|isn't a known user|is not a known user|not our customer|"
    r"unrouteable address|bad destination mailbox|name is not recognized|unknown recip|"
    r"user (does not|doesn't) have|no account|mailbox is unavailable|account is unavailable|"
    r"addressee unknown|could not be found|no longer (valid|available|active|exists)|"
    r"has (been )?(closed|deactivated|terminated|expired)|"
    r"host unknown|unknown host|host not found|domain not found|domain (does not|doesn't) "
    r"exist|no mx|name or service not known|unrouteable mail domain|nxdomain|"
    r"no such domain|domain is not reachable|recipient address rejected: access denied|"
    r"bad address|mailbox has moved|no valid recipients|"
    r"unknown or illegal alias|not listed in|unknown (user|account)|undeliverable address",
    re.I)

_SOFT = re.compile(
    r"mailbox (is )?full|over ?quota|quota (exceeded|exceed)|exceed(s|ed)? (the )?(storage|"
    r"quota|size|mailbox)|insufficient (storage|space)|disk full|out of (disk|storage)|"
    r"too many|try again later|temporar|spam|blocked|blacklist|block ?list|policy|"
    r"rejected for policy|message (is )?too (big|large)|size limit|virus|content|"
    r"suspended|suspend|greylist|rate limit|throttl|connection (timed out|refused)|"
    r"timed out|timeout|expired|too long|not accept|refused to talk|authentication|"
    r"dmarc|spf|dkim|reputation|relay(ing)? (denied|not permitted|access denied)|"
    r"mail loop|loops back|hop count",
    re.I)

_FULL = re.compile(r"mailbox (is )?full|over ?quota|quota exceeded|exceeded (the )?(storage|"
                   r"quota)|insufficient (storage|space)|sender (address )?rejected|"
                   r"sender verif|not authori[sz]ed to send|your (ip|domain|server)", re.I)

_DELAY = re.compile(r"\b(delayed|delay|still (trying|being retried)|will (be )?(re)?tr(y|ied)|"
                    r"not yet been delivered|warning: message|transient|"
                    r"has not been delivered yet|retry)\b", re.I)
_PERMANENT = re.compile(r"permanent|fatal|error (while )?delivering|delivery error|"
                        r"(could not|couldn't|not able to|cannot) deliver|送信できません|"
                        r"届きませんでした|giving up|gave up|given up|could not be delivered|"
                        r"couldn't be delivered|undeliverable|not be delivered|failed|"
                        r"unable to deliver|delivery (has )?failed|did not reach|"
                        r"was not delivered|wasn't able to deliver|returned to sender|"
                        r"rejected|not delivered|undelivered", re.I)

_BOUNCE_SUBJECT = re.compile(
    r"undeliver|deliver(y|ed)? (status|failure|failed|problem|report|notification)|returned|"
    r"failure|failed|bounce|could not (be )?deliver|non-?deliver|rejected|mail system error|"
    r"not delivered|delivery|unable to deliver|warning: could not|mail error|nicht zustellbar|"
    r"unzustellbar|error|problem|エラー|不達", re.I)
_AUTO_SUBJECT = re.compile(r"out of (the )?office|auto(matic)?[ -]?(reply|response|antwort)|"
                           r"^auto:|vacation|away from|abwesenheit|absence|on leave|"
                           r"autoreply|autoresponder|respuesta autom", re.I)

# Where the notice ends and the returned copy of the original begins.
_COPY = re.compile(
    r"^\s*(-{2,}.{0,40}(original message|copy of the message|returned message|below this line|"
    r"unsent message|message follows|original mail|headers of|message text follows|"
    r"message header follows|returned mail|undelivered message).*|"
    r"-{3,}\s*(original message|message removed).*|original message follows.*|"
    r"-+ ?The (header|text) of the (original )?message.*|Original message headers:.*|"
    r"\s*Received: from .*|\s*Return-Path: .*)$",
    re.I | re.M)


def _lower(address: str) -> str:
    address = address.strip().strip("<>'\"`").strip().rstrip(".").lower()
    return re.sub(r"^(smtp|rfc822|x400|mailto)[=:]", "", address)


def _subject(msg: Message) -> str:
    """The Subject, RFC 2047 encoded-words decoded (a Japanese or German notice says what
    it is only there)."""
    from email.header import decode_header, make_header

    raw = str(msg.get("Subject") or "")[:2000]
    try:
        raw = str(make_header(decode_header(raw)))
    except (LookupError, ValueError, UnicodeDecodeError):
        pass
    return _decode(raw.encode("utf-8", "surrogateescape"), "utf-8")


def _decode(data: bytes, charset: str) -> str:
    """Bytes as text: the declared charset if it fits, else UTF-8 (often sent mislabelled),
    else Latin-1 (never fails)."""
    for name in (charset, "utf-8"):
        if not name:
            continue
        try:
            return data.decode(name)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("latin-1")


def _clean(text: str, limit: int = 300) -> str:
    """One line for the operator: control characters and runs of space removed, capped."""
    text = "".join(c if c.isprintable() else " " for c in text[:4 * limit])
    return " ".join(text.split())[:limit]


def _text_of(part: Message) -> str:
    """A text part's decoded text, capped; "" when it cannot be decoded."""
    try:
        payload = part.get_payload(decode=True)
    except (LookupError, ValueError, AssertionError):
        return ""
    if not isinstance(payload, bytes):
        return ""
    text = _decode(payload[:MAX_TEXT], part.get_content_charset() or "")
    if part.get_content_subtype() == "html":
        text = re.sub(r"<br\s*/?>|</p>|</div>|</tr>", "\n", text, flags=re.I)
        text = re.sub(r"<[^>]{0,2000}>", " ", text)
    return text


def _raw_of(part: Message) -> str:
    """A message/* part's content as text (the email package parses some of them)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return "\n".join(_flat(m) for m in payload if isinstance(m, Message))[:MAX_TEXT]
    if isinstance(payload, Message):
        return _flat(payload)[:MAX_TEXT]
    if isinstance(payload, str):
        decoded = part.get_payload(decode=True)
        if isinstance(decoded, bytes):
            return decoded[:MAX_TEXT].decode("utf-8", errors="replace")
        return payload[:MAX_TEXT]
    return ""


def _flat(msg: Message) -> str:
    """A header block (and body) back as text, without the email package's folding; raw
    UTF-8 (RFC 6533, kept by the parser as surrogate escapes) decoded."""
    lines = [f"{k}: {v}" for k, v in msg.items()]
    text = ("\n".join(lines) + "\n\n").encode("utf-8", "surrogateescape")
    if not msg.is_multipart():
        body = msg.get_payload(decode=True)  # raw bytes, 8-bit kept
        if isinstance(body, bytes):
            text += body[:MAX_TEXT]
    return text.decode("utf-8", "replace")


def _fields(text: str) -> list[dict[str, str]]:
    """``Name: value`` blocks separated by blank lines (continuation lines joined)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, ""
            continue
        if line[:1] in (" ", "\t") and last:
            current[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", name.strip()):
            last = name.strip().lower()
            current[last] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def _typed_address(value: str) -> str:
    """``rfc822; ada@example.org`` -> ``ada@example.org`` (and RFC 6533's ``utf-8;``
    addresses, which may hold any Unicode)."""
    address = (value.split(";", 1)[-1] if ";" in value else value).strip().strip("<>")
    if re.fullmatch(r"[^\s@<>]{1,64}@[^\s@<>]+\.[^\s@<>]+", address):
        return _lower(address)
    found = _ADDRESS.search(address)
    return _lower(found.group(0)) if found else ""


def _status_code(text: str) -> str:
    found = _STATUS.search(text)
    if found:
        return ".".join(found.groups())
    reply = _REPLY.search(text)
    return reply.group(1) if reply else ""


def _is_hard(status: str, text: str) -> bool:
    """Whether a failure says the address (or its domain) is gone for good."""
    if status.startswith(("4", "2")) or _FULL.search(text) or status == "5.2.2":
        return False
    if status in _HARD_STATUS:
        return not _SOFT.search(text) or bool(_GONE.search(text))
    return bool(_GONE.search(text)) and not _SOFT.search(text)


def _original_headers(msg: Message) -> list[dict[str, str]]:
    """The header block of each returned original (message/rfc822 or a headers part)."""
    heads = []
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global", "text/rfc822-headers",
                     "message/rfc822-headers", "message/global-headers"):
            text = _raw_of(part) if ctype.startswith("message/") else _text_of(part)
            heads += _fields(text)[:1]
    return heads


def _original_recipients(msg: Message) -> list[str]:
    """The To: of the returned original: an attached one, else one pasted as text below the
    notice."""
    heads = _original_headers(msg)
    if not heads:
        heads = _fields(_notice_and_copy(msg)[1].lstrip("\r\n"))[:1]
    found = []
    for head in heads:
        found += [_lower(a) for _, a in getaddresses([head.get("to", "")]) if "@" in a]
    return found[:MAX_RECIPIENTS]


def _original_ids(msg: Message) -> tuple[str, ...]:
    """Message-IDs of the returned original (message/rfc822 or text/rfc822-headers part)."""
    ids = [head.get("message-id", "").strip() for head in _original_headers(msg)]
    return tuple(dict.fromkeys(i for i in ids if i))


# --- the kinds -----------------------------------------------------------------------------


def _report_part(msg: Message, subtypes: tuple[str, ...]) -> Message | None:
    for part in msg.walk():
        if part.get_content_maintype() == "message" and part.get_content_subtype() in subtypes:
            return part
    return None


def _arf(msg: Message, part: Message) -> Report:
    fields: dict[str, str] = {}
    for block in _fields(_raw_of(part)):
        fields.update(block)
    complainants = []
    if fields.get("original-rcpt-to"):
        complainants.append(_typed_address(fields["original-rcpt-to"]))
    if not complainants:  # the reported message's own To: (often redacted)
        complainants = _original_recipients(msg)
    return Report("arf", complaints=tuple(dict.fromkeys(a for a in complainants if a)),
                  message_ids=_original_ids(msg))


def _dsn(msg: Message, part: Message, kind: str) -> Report:
    failures, delayed, seen = _dsn_blocks(_fields(_raw_of(part)), _notice(msg))
    if not seen:  # a report without recipient blocks: read the words
        loose = _non_standard(msg)
        failures, delayed = loose.failures, loose.delayed
    return Report(kind, failures, (), delayed, _original_ids(msg))


def _dsn_blocks(blocks: list[dict[str, str]], notice: str = ""
                ) -> tuple[tuple[Failure, ...], tuple[str, ...], bool]:
    """Per-recipient blocks -> (failures, delayed addresses, whether any recipient was
    reported at all: "delivered" and "relayed" ones are neither). Without a
    Diagnostic-Code, the NOTICE's words say what happened."""
    failures: list[Failure] = []
    delayed: list[str] = []
    seen = False
    for block in blocks:
        # what we sent to (Original-Recipient), else where it ended up
        address = (_typed_address(block.get("original-recipient", ""))
                   or _typed_address(block.get("final-recipient", "")))
        action = block.get("action", "").strip().lower().split()[0:1]
        status = _status_code(block.get("status", ""))
        diagnostic = block.get("diagnostic-code", "").split(";", 1)[-1].strip()
        if not address:
            continue
        seen = True
        act = action[0] if action else ""
        if act == "delayed" or (not act and status.startswith("4")):
            delayed.append(address)
        elif act.startswith("fail") or act == "expired" or (not act and status.startswith("5")):
            said = _STATUS.search(diagnostic)  # often more precise than a generic 5.0.0
            code = ".".join(said.groups()) if said and (not status or status.endswith(
                ".0.0")) else status or _status_code(diagnostic)
            failures.append(Failure(address, _is_hard(code, diagnostic or notice), code,
                                    _clean(f"{status} {diagnostic}")))
        if len(failures) + len(delayed) >= MAX_RECIPIENTS:
            break
    return tuple(failures), tuple(delayed), seen


def _notice(msg: Message) -> str:
    """The words of the notice (not the returned copy): text parts outside any attached
    message, cut where a copy of the original begins."""
    return _notice_and_copy(msg)[0]


def _notice_and_copy(msg: Message) -> tuple[str, str]:
    """(the notice, the copy of the original pasted below it as text, or "")."""
    texts: list[str] = []
    stack: list[Message] = [msg]
    while stack:
        part = stack.pop(0)
        if part.is_multipart():
            payload = part.get_payload()
            if part.get_content_maintype() == "message":
                continue  # an attached original
            stack[:0] = [p for p in payload if isinstance(p, Message)] \
                if isinstance(payload, list) else []
            continue
        broken = part.get_content_maintype() == "multipart"  # its boundary never came
        text_part = part.get_content_maintype() == "text" and \
            not part.get_content_subtype().startswith("rfc822")  # not the returned headers
        if (broken or text_part) and not texts:
            texts.append(_text_of(part))
    text = texts[0] if texts else ""
    cut = _COPY.search(text)
    # a copy marker at the very top is not a copy (some notices begin with a rule)
    if cut and cut.start() > 40:
        return text[:cut.start()], text[cut.end():]
    return text, ""


def _own_addresses(msg: Message) -> set[str]:
    """The notice's own sender and recipient (us), which are never the failed recipient."""
    own: set[str] = set()
    for name in ("From", "To", "Sender", "Return-Path", "Reply-To", "Errors-To"):
        for value in msg.get_all(name) or []:
            own.update(_lower(a) for _, a in getaddresses([str(value)]) if "@" in a)
    return own


def _loose_dsn(msg: Message) -> Report | None:
    """A DSN whose MIME structure is broken (a wrong boundary, a missing part header): its
    per-recipient fields still stand in the text."""
    stack = [p for p in msg.walk() if not p.is_multipart()]
    for part in stack:
        text = _text_of(part)
        if re.search(r"^(Final|Original)-Recipient:", text, re.M | re.I) and \
                re.search(r"^(Action|Status):", text, re.M | re.I):
            start = re.search(r"^Reporting-MTA:|^(Final|Original)-Recipient:", text,
                              re.M | re.I)
            failures, delayed, _ = _dsn_blocks(_fields(text[start.start() if start else 0:]))
            if failures or delayed:
                return Report("dsn", failures, (), delayed, _original_ids(msg))
    return None


def _non_standard(msg: Message) -> Report:
    loose = _loose_dsn(msg)
    if loose is not None:
        return loose
    text = _notice(msg)
    own = _own_addresses(msg)
    failed_header = [_lower(a) for a in re.split(r"[,\s]+", str(msg.get("X-Failed-Recipients")
                                                                 or "")) if "@" in a]
    delay_only = bool(_DELAY.search(text) or _DELAY.search(_subject(msg))) \
        and not re.search(r"permanent|fatal|gave up|given up|giving up|not going to try",
                          text, re.I)
    found: dict[str, str] = {}
    lines = text.replace("\r\n", "\n").split("\n")
    for i, line in enumerate(lines):
        if re.match(r"\s*(message-id|in-reply-to|references|received|from|to|cc|date|"
                    r"subject|sent|x-[a-z-]+)\s*:", line, re.I):
            continue
        for m in _ADDRESS.finditer(line):
            address = _lower(m.group(0))
            local = address.split("@", 1)[0]
            if address in own or _ROBOTS.match(local) or address in found:
                continue
            if re.search(r"[<\[(]?" + re.escape(m.group(0)) + r"[>\])]?\s*\.\.\.\s*"
                         r"(sent|delivered)", line, re.I):
                continue
            context = "\n".join(lines[i:i + 6])
            found[address] = context
        if len(found) >= MAX_RECIPIENTS:
            break
    for address in failed_header:
        found.setdefault(address, text)
    if not found:  # nothing named in the notice: the returned original's recipient
        found.update((a, text) for a in _original_recipients(msg) if a not in own)
    failures, delayed = [], []
    for address, context in found.items():
        status = _status_code(context) or _status_code(text)
        if status.startswith("4") and delay_only or (delay_only and not status):
            delayed.append(address)
            continue
        hard = _is_hard(status, context) or (not status and _is_hard("", text))
        failures.append(Failure(address, hard, status, _clean(context)))
    return Report("non-standard", tuple(failures), (), tuple(delayed), _original_ids(msg))


def looks_like_bounce(msg: Message) -> bool:
    name, sender = parseaddr(str(msg.get("From") or ""))
    local = sender.split("@", 1)[0] or name.strip()
    subject = _subject(msg)
    if _ROBOTS.match(local) or msg.get("X-Failed-Recipients"):
        return True
    if any(p.get_content_type() in ("text/rfc822-headers", "message/rfc822-headers")
           for p in msg.walk()):
        return True
    if msg.get_content_type() == "multipart/report":
        return True
    failed = bool(_PERMANENT.search(_notice(msg)))
    returned = any(p.get_content_type() in ("message/rfc822", "message/global")
                   for p in msg.walk())
    return failed and (bool(_BOUNCE_SUBJECT.search(subject)) or returned)


def is_auto_reply(msg: Message) -> bool:
    """A vacation / out-of-office reply (RFC 3834 and the common X- headers)."""
    auto = str(msg.get("Auto-Submitted") or "").strip().lower()
    if auto.startswith("auto-replied"):
        return True
    if msg.get("X-Autoreply") or msg.get("X-Autorespond") or msg.get("X-Autoresponder"):
        return True
    if str(msg.get("Precedence") or "").strip().lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.search(_subject(msg)))


def parse(msg: Message) -> Report:
    """What MSG reports (see the module docstring)."""
    part = _report_part(msg, ("feedback-report",))
    if part is not None or str(msg.get_param("report-type") or "").lower() == "feedback-report":
        return _arf(msg, part or msg)
    part = _report_part(msg, ("delivery-status", "global-delivery-status"))
    if part is not None:
        kind = "dsn-global" if part.get_content_subtype().startswith("global") else "dsn"
        return _dsn(msg, part, kind)
    bounce = looks_like_bounce(msg)
    if not bounce and is_auto_reply(msg):
        return Report("auto-reply")
    if not bounce:
        return Report("none")
    report = _non_standard(msg)
    if not report.failures and not report.delayed and is_auto_reply(msg):
        return Report("auto-reply")
    return report


def parse_bytes(raw: bytes) -> Report:
    return parse(message_from_bytes(raw, policy=policy.compat32))
