"""Deliver messages: to the outbox folder by default, over SMTP when a URL is set."""

from __future__ import annotations

import queue
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from newsletter.config import Settings
from newsletter.errors import ConfigError, SendFailed
from newsletter.lists.addresses import is_loopback
from newsletter.mail.headers import envelope_sender, from_domain, to_bytes
from newsletter.mail.signing import DkimKey, key_from_settings
from newsletter.safety.deadline import Watchdog


def safe_name(name: str) -> str:
    """An address as it appears in outbox file names."""
    return re.sub(r"[^A-Za-z0-9@._+-]", "_", name)


class Outbox:
    """Writes ``<date>_<address>.eml`` and ``.html`` side by side."""

    def __init__(self, folder: str | Path, dkim: DkimKey | None = None):
        self.folder = Path(folder)
        self.dkim = dkim

    def __enter__(self) -> Outbox:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def send(self, msg: EmailMessage | bytes, email: str, issue_date: str, html: str) -> str:
        stem = f"{issue_date}_{safe_name(email)}"
        eml = self.folder / f"{stem}.eml"
        tmp = self.folder / f".{stem}.eml.tmp"
        (self.folder / f"{stem}.html").write_text(html, encoding="utf-8")
        tmp.write_bytes(to_bytes(msg, self.dkim))
        tmp.replace(eml)  # atomic: a crash never leaves half a message
        return str(eml)


class Pacer:
    """What a run's connections share: at most ``rate`` messages per second over all of
    them, and a timeout met by any one (then the others stop trying too)."""

    def __init__(self, rate: float = 0.0):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self.timed_out = ""

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


def _dot_stuffed(data: bytes) -> bytes:
    """A dot that starts a line doubled (RFC 5321 4.5.2), as smtplib does it."""
    stuffed = data.replace(b"\n.", b"\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


class _Client(smtplib.SMTP):
    """smtplib's client, whose DATA dot-stuffs bytes with ``bytes.replace`` instead of
    smtplib's regular expression over every byte of every message (a quarter of a
    millisecond for a 50 KB issue: a tenth of a run's own CPU). The same bytes go out: a
    dot that starts a line is doubled. Anything but bytes goes to smtplib's own DATA."""

    def data(self, msg: Any) -> tuple[int, bytes]:
        if not isinstance(msg, bytes):
            return super().data(msg)
        self.putcmd("data")
        code, reply = self.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        stuffed = _dot_stuffed(msg)
        self.send(stuffed + (b"" if stuffed.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        return self.getreply()


class _ClientSSL(_Client, smtplib.SMTP_SSL):
    pass


class SMTPSender:
    """One connection reused across messages; reconnects when the server drops it, and
    after ``per_connection`` messages when that is set (a provider's per-session limit)."""

    def __init__(self, url: str, password: str = "", timeout: float = 60.0, rate: float = 0.0,
                 dkim: DkimKey | None = None, pacer: Pacer | None = None,
                 per_connection: int = 0):
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ConfigError("NEWSLETTER_SMTP_URL has a port that is not a number - e.g. "
                              "smtp+starttls://user@host:587") from None
        if parts.scheme not in ("smtp", "smtps", "smtp+starttls") or not parts.hostname:
            raise ConfigError(
                "NEWSLETTER_SMTP_URL must look like smtp+starttls://user@host:587, "
                "smtps://user@host:465 or smtp://host:25 (a local relay)"
            )
        self.host = parts.hostname
        self.scheme = parts.scheme
        if parts.scheme == "smtp" and parts.port == 587:
            self.scheme = "smtp+starttls"
        self.port = parts.port or {"smtps": 465, "smtp+starttls": 587}.get(self.scheme, 25)
        self.user = unquote(parts.username) if parts.username else ""
        self.password = unquote(parts.password) if parts.password else password
        if self.user and self.scheme == "smtp" and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to send the SMTP password to {self.host} unencrypted - use "
                "smtps:// or smtp+starttls:// in NEWSLETTER_SMTP_URL"
            )
        self.timeout = timeout
        self.pacer = pacer or Pacer(rate)
        self.per_connection = per_connection
        self._on_this_connection = 0
        self.where = f"smtp://{self.host}:{self.port}"
        self.dkim = dkim
        self.conn: smtplib.SMTP | None = None

    def _connect(self, dog: Watchdog) -> smtplib.SMTP:
        try:
            conn: smtplib.SMTP
            if self.scheme == "smtps":
                conn = _ClientSSL(timeout=self.timeout, context=ssl.create_default_context())
            else:
                conn = _Client(timeout=self.timeout)
            dog.add(conn)  # its socket, once connect() made it: the greeting is read inside
            conn.connect(self.host, self.port)
            if self.scheme == "smtp+starttls":
                conn.starttls(context=ssl.create_default_context())
            if self.user:
                conn.login(self.user, self.password)
            return conn
        except (OSError, smtplib.SMTPException) as e:
            if dog.expired:
                raise
            permanent = isinstance(e, smtplib.SMTPAuthenticationError)
            raise SendFailed(f"cannot reach SMTP server {self.host}:{self.port} ({e}) - "
                             "check NEWSLETTER_SMTP_URL", temporary=not permanent) from e

    def __enter__(self) -> SMTPSender:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._quit()

    def _quit(self) -> None:
        if self.conn is not None:
            try:
                self.conn.quit()
            except (OSError, smtplib.SMTPException):
                pass
            self.conn = None
        self._on_this_connection = 0

    def _reset(self) -> None:
        try:
            if self.conn is not None:
                self.conn.rset()
        except (OSError, smtplib.SMTPException):
            self.conn = None

    def send(self, msg: EmailMessage | bytes, email: str, issue_date: str, html: str,
             retries: int = 2, backoff: float = 0.5) -> str:
        """Send one message. A dropped connection is reopened; a 4xx answer is retried with
        backoff and then reported as temporary; a 5xx answer is a permanent failure."""
        raw = to_bytes(msg, self.dkim)
        if self.pacer.timed_out:  # after one timeout the rest of the run's messages wait
            raise SendFailed(f"not tried: the SMTP server timed out earlier in this run "
                             f"({self.pacer.timed_out})", temporary=True)
        with Watchdog(self.timeout) as dog:
            try:
                return self._send(msg, raw, email, retries, backoff, dog)
            except (OSError, smtplib.SMTPException, SendFailed) as e:
                if not dog.expired:
                    raise
                self.conn = None
                self.pacer.timed_out = (f"no answer within {self.timeout:g} s from "
                                        f"{self.host}:{self.port}")
                raise SendFailed(f"SMTP timed out: {self.pacer.timed_out} "
                                 "(NEWSLETTER_SMTP_TIMEOUT)",
                                 temporary=True) from e

    def _ready(self, dog: Watchdog) -> smtplib.SMTP:
        """The connection for the next message: a new one after ``per_connection``
        messages (a provider's per-session limit) or when the last one dropped."""
        if self.conn is not None and self.per_connection and \
                self._on_this_connection >= self.per_connection:
            dog.add(self.conn)
            self._quit()
        if self.conn is None:
            self.conn = self._connect(dog)
            self._on_this_connection = 0
        dog.add(self.conn)
        if dog.expired:  # a reply cut short by the watchdog can parse as a good one
            raise TimeoutError("deadline passed")
        return self.conn

    def _send(self, msg: EmailMessage | bytes, raw: bytes, email: str, retries: int,
              backoff: float, dog: Watchdog) -> str:
        for attempt in range(retries + 1):
            conn = self._ready(dog)
            self.pacer.wait()
            self._on_this_connection += 1
            try:
                conn.sendmail(envelope_sender(msg), [email], raw)
                return self.where
            except (TimeoutError, smtplib.SMTPServerDisconnected, ConnectionError) as e:
                self.conn = None  # dropped: reconnect and try again
                if attempt == retries or dog.expired:
                    raise SendFailed(f"SMTP server hung up ({e or 'connection closed'})",
                                     temporary=True) from e
            except smtplib.SMTPRecipientsRefused as e:
                code, reason = next(iter(e.recipients.values()))
                text = reason.decode(errors="replace") if isinstance(reason, bytes) else reason
                if 400 <= code < 500 and attempt < retries:
                    self._reset()
                    time.sleep(backoff * 2 ** attempt)
                    continue
                raise SendFailed(f"{code} {text}", temporary=400 <= code < 500) from e
            except smtplib.SMTPResponseException as e:
                err = e.smtp_error
                text = err.decode(errors="replace") if isinstance(err, bytes) else str(err)
                if e.smtp_code == 421:  # the server is closing the connection
                    self.conn = None
                elif 400 <= e.smtp_code < 500:
                    self._reset()
                if 400 <= e.smtp_code < 500 and attempt < retries:
                    time.sleep(backoff * 2 ** attempt)
                    continue
                raise SendFailed(f"{e.smtp_code} {text}",
                                 temporary=400 <= e.smtp_code < 500) from e
        raise SendFailed("unreachable")  # pragma: no cover


def refuse_unready(settings: Settings) -> None:
    """Mail over a real (non-loopback) SMTP server must come from a real domain and carry
    signed unsubscribe tokens: refuse to send otherwise."""
    if not settings.smtp_url:
        return
    host = urlsplit(settings.smtp_url).hostname or ""
    if is_loopback(host):
        return
    if from_domain(settings) in ("localhost", "localhost.localdomain") or \
            from_domain(settings).endswith(".localhost"):
        raise ConfigError(f"refusing to send through {host} from {settings.from_addr!r} - set "
                          "NEWSLETTER_FROM_ADDR to an address at your domain")
    if not settings.secret:
        raise ConfigError(f"refusing to send through {host} without NEWSLETTER_SECRET: readers' "
                          "unsubscribe requests could not be verified - set it (any long "
                          "random string, kept the same)")


def sender(smtp_url: str, smtp_password: str, outbox: str, rate: float = 0.0,
           dkim: DkimKey | None = None, timeout: float = 60.0, pacer: Pacer | None = None,
           per_connection: int = 0) -> Outbox | SMTPSender:
    """SMTP when a URL is set (``timeout``: total seconds for one message; connections that
    share ``pacer`` share its rate), else the outbox folder."""
    return (SMTPSender(smtp_url, smtp_password, timeout=timeout, rate=rate, dkim=dkim,
                       pacer=pacer, per_connection=per_connection)
            if smtp_url else Outbox(outbox, dkim=dkim))


def transport_for(settings: Settings, pacer: Pacer | None = None) -> Outbox | SMTPSender:
    """The transport the settings ask for, DKIM-signing when a key is set; connections
    that share ``pacer`` share the rate limit. (Callers that send for real call
    refuse_unready first.)"""
    return sender(settings.smtp_url, settings.smtp_password, settings.outbox,
                  settings.smtp_rate, key_from_settings(settings), settings.smtp_timeout,
                  pacer, settings.smtp_per_connection)


# --- several connections at once -----------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """One message on its way (``data``: the message's bytes, CRLF, not yet signed; the
    transport signs); ``key`` is the caller's (e.g. its delivery row)."""

    key: Any
    email: str
    issue_date: str
    data: bytes
    html: str


class Dispatcher:
    """Sends over ``connections`` transports at once, one thread each, taking messages in
    the order they are put. ``before(item)`` runs in the sending thread just before the
    transport gets the message, ``after(item, where, error)`` just after; an exception in
    either stops every thread and is raised from ``put`` or the ``with`` block's end."""

    def __init__(self, open_transport: Callable[[], Outbox | SMTPSender], connections: int,
                 before: Callable[[Outgoing], None],
                 after: Callable[[Outgoing, str | None, SendFailed | None], None],
                 depth: int = 64):
        self.open_transport = open_transport
        self.before, self.after = before, after
        self.queue: queue.Queue[Outgoing | None] = queue.Queue(maxsize=max(depth, connections))
        self.threads = [threading.Thread(target=self._work, name=f"smtp-{n}", daemon=True)
                        for n in range(max(1, connections))]
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def __enter__(self) -> Dispatcher:
        for t in self.threads:
            t.start()
        return self

    def _work(self) -> None:
        try:
            with self.open_transport() as transport:
                while not self.stop.is_set():
                    item = self.queue.get()
                    if item is None:
                        return
                    self.before(item)
                    try:
                        where = transport.send(item.data, item.email, item.issue_date,
                                               item.html)
                    except SendFailed as e:
                        self.after(item, None, e)
                    else:
                        self.after(item, where, None)
        except BaseException as e:  # noqa: BLE001  (handed to the caller's thread)
            self.error = self.error or e
            self.stop.set()
            while True:  # unblock a producer waiting on a full queue
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, item: Outgoing) -> None:
        while True:
            self._check()
            if self.stop.is_set():
                raise SendFailed("sending stopped", temporary=True)
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:
            self.stop.set()
        for t in self.threads:
            while t.is_alive():
                try:
                    self.queue.put(None, timeout=0.2)
                    break
                except queue.Full:
                    continue
        for t in self.threads:
            t.join()
        if exc is None:
            self._check()
