"""Deliver messages: to the outbox folder by default, over SMTP when a URL is set."""

from __future__ import annotations

import re
import smtplib
import ssl
import time
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
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


class SMTPSender:
    """One connection reused across messages; reconnects when the server drops it."""

    def __init__(self, url: str, password: str = "", timeout: float = 60.0, rate: float = 0.0,
                 dkim: DkimKey | None = None):
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
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._last_send = 0.0
        self.dkim = dkim
        self.conn: smtplib.SMTP | None = None
        self.timed_out = ""  # after one timeout the rest of the run's messages wait

    def _connect(self, dog: Watchdog) -> smtplib.SMTP:
        try:
            conn: smtplib.SMTP
            if self.scheme == "smtps":
                conn = smtplib.SMTP_SSL(timeout=self.timeout,
                                        context=ssl.create_default_context())
            else:
                conn = smtplib.SMTP(timeout=self.timeout)
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
        if self.conn is not None:
            try:
                self.conn.quit()
            except (OSError, smtplib.SMTPException):
                pass
            self.conn = None

    def _pace(self) -> None:
        if self.interval:
            wait = self._last_send + self.interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last_send = time.monotonic()

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
        if self.timed_out:
            raise SendFailed(f"not tried: the SMTP server timed out earlier in this run "
                             f"({self.timed_out})", temporary=True)
        with Watchdog(self.timeout) as dog:
            try:
                return self._send(msg, raw, email, retries, backoff, dog)
            except (OSError, smtplib.SMTPException, SendFailed) as e:
                if not dog.expired:
                    raise
                self.conn = None
                self.timed_out = (f"no answer within {self.timeout:g} s from "
                                  f"{self.host}:{self.port}")
                raise SendFailed(f"SMTP timed out: {self.timed_out} (NEWSLETTER_SMTP_TIMEOUT)",
                                 temporary=True) from e

    def _send(self, msg: EmailMessage | bytes, raw: bytes, email: str, retries: int,
              backoff: float, dog: Watchdog) -> str:
        for attempt in range(retries + 1):
            if self.conn is None:
                self.conn = self._connect(dog)
            dog.add(self.conn)
            if dog.expired:  # a reply cut short by the watchdog can parse as a good one
                raise TimeoutError("deadline passed")
            self._pace()
            try:
                self.conn.sendmail(envelope_sender(msg), [email], raw)
                return f"smtp://{self.host}:{self.port}"
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
           dkim: DkimKey | None = None, timeout: float = 60.0) -> Outbox | SMTPSender:
    """SMTP when a URL is set (``timeout``: total seconds for one message), else the
    outbox folder."""
    return (SMTPSender(smtp_url, smtp_password, timeout=timeout, rate=rate, dkim=dkim)
            if smtp_url else Outbox(outbox, dkim=dkim))


def transport_for(settings: Settings) -> Outbox | SMTPSender:
    """The transport the settings ask for, DKIM-signing when a key is set. (Callers that
    send for real call refuse_unready first.)"""
    return sender(settings.smtp_url, settings.smtp_password, settings.outbox,
                  settings.smtp_rate, key_from_settings(settings), settings.smtp_timeout)
