"""`newsletter doctor`: everything that makes mail arrive, checked from here, one line each.

Nothing is sent: SMTP is checked up to the login (then QUIT), IMAP up to opening the
mailbox, the model with one tiny request, the unsubscribe endpoint with one GET, and the
From domain's SPF, DKIM and DMARC records in DNS (NEWSLETTER_DNS_SERVER, or the system's
resolver). Every network step has a deadline.
"""

from __future__ import annotations

import base64
import re
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parseaddr
from urllib.parse import urlsplit

from newsletter.config import Settings
from newsletter.errors import ConfigError, NewsletterError
from newsletter.lists.addresses import is_loopback
from newsletter.mail.headers import from_domain
from newsletter.send import SMTPSender

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
TIMEOUT = 10.0
_PLACEHOLDER = re.compile(r"(^|\.)(localhost|localdomain|local|invalid|test|example|"
                          r"example\.(com|org|net))$")


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # ok, warn (works, could be better), FAIL (mail will not arrive), skip
    message: str  # what was found, and what to do

    @property
    def line(self) -> str:
        return f"{self.state:<4}  {self.name:<12} {self.message}"


def _check_from(s: Settings) -> Check:
    address = parseaddr(s.from_addr)[1]
    domain = from_domain(s)
    if "@" not in address:
        return Check("from", FAIL, f"{s.from_addr!r} has no address - set NEWSLETTER_FROM_ADDR "
                     "to e.g. 'AcademicHub <daily@your-domain.org>'")
    if _PLACEHOLDER.search(domain):
        return Check("from", FAIL, f"{address} is not at a real domain - set "
                     "NEWSLETTER_FROM_ADDR to an address at your own domain")
    return Check("from", OK, address)


def _check_secret(s: Settings) -> Check:
    if not s.secret:
        return Check("secret", FAIL, "NEWSLETTER_SECRET is not set: unsubscribe links cannot be "
                     "signed - set it to a long random string and keep it")
    if len(s.secret) < 16:
        return Check("secret", FAIL, f"NEWSLETTER_SECRET is {len(s.secret)} characters - use at "
                     "least 16 random ones")
    return Check("secret", OK, "set")


def _smtp_tls(conn: smtplib.SMTP, sender: SMTPSender, where: str) -> Check:
    if sender.scheme == "smtps":
        return Check("smtp-tls", OK, "TLS (smtps), certificate valid")
    if sender.scheme == "smtp+starttls":
        conn.ehlo()
        if not conn.has_extn("starttls"):
            return Check("smtp-tls", FAIL, f"{where} does not offer STARTTLS - use smtps:// "
                         "or the provider's submission port")
        try:
            conn.starttls(context=ssl.create_default_context())
        except (ssl.SSLError, ssl.CertificateError) as e:
            return Check("smtp-tls", FAIL, f"STARTTLS with {where} failed "
                         f"({getattr(e, 'reason', None) or e}) - check the host name matches "
                         "the server's certificate")
        return Check("smtp-tls", OK, "STARTTLS, certificate valid")
    if is_loopback(sender.host):
        return Check("smtp-tls", OK, "no TLS, to a relay on this machine")
    return Check("smtp-tls", FAIL, f"plain smtp:// to {sender.host}: mail and password "
                 "travel unencrypted - use smtps:// or smtp+starttls://")


def _smtp_login(conn: smtplib.SMTP, sender: SMTPSender) -> Check:
    if not sender.user:
        return Check("smtp-login", OK if is_loopback(sender.host) else WARN,
                     "no user in NEWSLETTER_SMTP_URL: sending without logging in")
    try:
        conn.login(sender.user, sender.password)
    except smtplib.SMTPException as e:
        return Check("smtp-login", FAIL, f"{sender.user} was refused ({e}) - check the user "
                     "and NEWSLETTER_SMTP_PASSWORD")
    return Check("smtp-login", OK, f"{sender.user} logged in (nothing sent)")


def _check_smtp(s: Settings, timeout: float) -> list[Check]:
    """Connect, TLS, log in, QUIT: three lines (reachable, TLS, login); nothing is sent."""
    if not s.smtp_url:
        return [Check("smtp", FAIL, "NEWSLETTER_SMTP_URL is not set: mail only goes to the "
                      "outbox folder - set it to your provider's submission server")]
    try:
        sender = SMTPSender(s.smtp_url, s.smtp_password, timeout=timeout)
    except ConfigError as e:
        return [Check("smtp", FAIL, str(e))]
    where = f"{sender.host}:{sender.port}"
    try:
        conn: smtplib.SMTP
        if sender.scheme == "smtps":
            conn = smtplib.SMTP_SSL(sender.host, sender.port, timeout=timeout,
                                    context=ssl.create_default_context())
        else:
            conn = smtplib.SMTP(sender.host, sender.port, timeout=timeout)
    except ssl.SSLError as e:
        return [Check("smtp", OK, f"{where} answers"),
                Check("smtp-tls", FAIL, f"TLS with {where} failed ({e.reason or e}) - check "
                      "the host name and port (465 for smtps://)")]
    except (OSError, smtplib.SMTPException) as e:
        return [Check("smtp", FAIL, f"cannot reach {where} ({e}) - check NEWSLETTER_SMTP_URL "
                      "and that this machine may connect out on that port")]
    out = [Check("smtp", OK, f"{where} answers")]
    try:
        out.append(_smtp_tls(conn, sender, where))
        if out[-1].state != FAIL:
            out.append(_smtp_login(conn, sender))
    except (OSError, smtplib.SMTPException) as e:
        out.append(Check("smtp-tls", FAIL, f"{where} hung up ({e})"))
    finally:
        try:
            conn.quit()
        except (OSError, smtplib.SMTPException):
            pass
    return out


def _check_imap(s: Settings, timeout: float) -> Check:
    from newsletter.lists import mailbox

    if not s.imap_url:
        return Check("imap", FAIL, "NEWSLETTER_IMAP_URL is not set: bounces, complaints and "
                     "mailed unsubscribe requests are never read - set it to the From "
                     "address's mailbox")
    try:
        conn, name = mailbox.connect(s.imap_url, s.imap_password, timeout=timeout)
    except NewsletterError as e:
        return Check("imap", FAIL, str(e))
    try:
        typ, _ = conn.select(f'"{name}"', readonly=True)
        if typ != "OK":
            return Check("imap", FAIL, f"logged in, but there is no mailbox {name!r} - fix the "
                         "path in NEWSLETTER_IMAP_URL")
        return Check("imap", OK, f"logged in to {urlsplit(s.imap_url).hostname}, {name} open")
    except (OSError, Exception) as e:  # imaplib raises its own error classes
        return Check("imap", FAIL, f"the IMAP server hung up ({e})")
    finally:
        try:
            conn.logout()
        except Exception:  # noqa: BLE001 - closing, nothing left to report
            pass


def _check_llm(s: Settings, timeout: float) -> Check:
    if not s.llm_model:
        return Check("llm", SKIP, "no NEWSLETTER_LLM_MODEL: issues carry the extractive digest")
    from newsletter import brief

    try:
        answered = brief.ping_model(s.llm_model, s.llm_api_base or None, timeout)
    except NewsletterError as e:
        return Check("llm", FAIL, str(e))
    return Check("llm", OK, f"{s.llm_model} answered ({answered})")


def _check_unsubscribe(s: Settings, timeout: float) -> Check:
    url = s.unsubscribe_url
    if not url:
        return Check("unsubscribe", WARN, "no NEWSLETTER_UNSUBSCRIBE_URL: unsubscribing is by "
                     "mail only, no one-click (RFC 8058) - Gmail and Yahoo ask bulk senders "
                     "for it")
    if urlsplit(url).scheme != "https":
        return Check("unsubscribe", FAIL, f"{url} is not https - one-click unsubscribe must "
                     "be https (put 'newsletter serve' behind a TLS proxy)")
    probe = url.rstrip("/") + "/unsubscribe"
    try:
        with urllib.request.urlopen(probe, timeout=timeout,
                                    context=ssl.create_default_context()) as answer:
            status = answer.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return Check("unsubscribe", FAIL, f"{probe} does not answer ({reason}) - is "
                     "'newsletter serve' running behind it?")
    if status == 404 or status >= 500:
        return Check("unsubscribe", FAIL, f"{probe} answered {status} - it should be the "
                     "'newsletter serve' endpoint")
    return Check("unsubscribe", OK, f"{probe} answers ({status})")


# --- DNS --------------------------------------------------------------------------------------


def resolver(s: Settings, timeout: float) -> Callable[[str], list[str]]:
    """A TXT lookup: name -> the strings of its TXT records ([] when there are none)."""
    import dns.exception
    import dns.resolver

    res = dns.resolver.Resolver(configure=not s.dns_server)
    if s.dns_server:
        host, _, port = s.dns_server.rpartition(":") if s.dns_server.count(":") == 1 \
            else (s.dns_server, "", "")
        res.nameservers = [host]
        res.port = int(port) if port else 53
    res.lifetime = timeout

    def txt(name: str) -> list[str]:
        try:
            answer = res.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as e:
            raise NewsletterError(f"DNS lookup of {name} failed ({e.__class__.__name__}) - "
                                  "check NEWSLETTER_DNS_SERVER or this machine's resolver") from e
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]

    return txt


def _check_spf(domain: str, txt: Callable[[str], list[str]]) -> Check:
    records = [t for t in txt(domain) if t.lower().startswith("v=spf1")]
    if not records:
        return Check("spf", FAIL, f"{domain} has no SPF record - publish TXT 'v=spf1 "
                     "include:<your provider> -all'")
    if len(records) > 1:
        return Check("spf", FAIL, f"{domain} has {len(records)} SPF records - merge them "
                     "into one (receivers treat several as an error)")
    spf = records[0]
    if re.search(r"\s\+all\b", spf):
        return Check("spf", FAIL, f"{domain}: '{spf}' lets anyone send as you - end it "
                     "with -all or ~all")
    return Check("spf", OK, spf)


def _dkim_tags(record: str) -> dict[str, str]:
    tags = {}
    for item in record.split(";"):
        name, _, value = item.partition("=")
        tags[name.strip().lower()] = re.sub(r"\s+", "", value)
    return tags


def _check_dkim(s: Settings, txt: Callable[[str], list[str]]) -> Check:
    from newsletter.mail import signing

    try:
        key = signing.key_from_settings(s)
    except ConfigError as e:
        return Check("dkim", FAIL, str(e))
    if key is None:
        return Check("dkim", WARN, "not signing (no NEWSLETTER_DKIM_SELECTOR): make sure "
                     "your SMTP provider signs for your domain")
    name = f"{key.selector}._domainkey.{key.domain}"
    records = [t for t in txt(name) if "p=" in t]
    if not records:
        return Check("dkim", FAIL, f"no DKIM record at {name} - publish TXT "
                     "'v=DKIM1; k=rsa; p=<public key>' (newsletter doctor --dkim-record "
                     "prints it)")
    mine = signing.public_key(key)
    published = _dkim_tags(records[0]).get("p", "")
    if published != mine:
        try:
            same = base64.b64decode(published) == base64.b64decode(mine)
        except ValueError:
            same = False
        if not same:
            return Check("dkim", FAIL, f"the key at {name} is not the public half of "
                         "NEWSLETTER_DKIM_PRIVATE_KEY - publish the matching record")
    return Check("dkim", OK, f"{name} matches the signing key")


def _check_dmarc(domain: str, txt: Callable[[str], list[str]]) -> Check:
    name = f"_dmarc.{domain}"
    records = [t for t in txt(name) if t.lower().replace(" ", "").startswith("v=dmarc1")]
    if not records:
        return Check("dmarc", FAIL, f"no DMARC record at {name} - publish TXT "
                     "'v=DMARC1; p=none; rua=mailto:<you>' and tighten p= later")
    policy = _dkim_tags(records[0]).get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return Check("dmarc", FAIL, f"{name} has no valid p= policy ('{records[0]}')")
    if policy == "none":
        return Check("dmarc", WARN, f"{name}: p=none (monitoring only) - consider "
                     "p=quarantine once reports look clean")
    return Check("dmarc", OK, f"p={policy}")


def _check_dns(s: Settings, timeout: float) -> list[Check]:
    domain = from_domain(s)
    if _PLACEHOLDER.search(domain):
        return [Check("dns", SKIP, f"no DNS to check for {domain} (see 'from')")]
    txt = resolver(s, timeout)
    out = []
    for check in (lambda: _check_spf(domain, txt), lambda: _check_dkim(s, txt),
                  lambda: _check_dmarc(domain, txt)):
        try:
            out.append(check())
        except NewsletterError as e:
            return out + [Check("dns", FAIL, str(e))]
    return out


def run_checks(s: Settings, timeout: float = TIMEOUT) -> list[Check]:
    """Every check, in the order a message travels."""
    checks = [_check_from(s), _check_secret(s)]
    checks += _check_smtp(s, timeout)
    checks += _check_dns(s, timeout)
    checks += [_check_imap(s, timeout), _check_unsubscribe(s, timeout),
               _check_llm(s, timeout)]
    return checks
