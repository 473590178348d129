"""Optional DKIM signing (RFC 6376, with dkimpy) for people who send through their own
server: NEWSLETTER_DKIM_SELECTOR, NEWSLETTER_DKIM_DOMAIN (default: the From domain) and the
secret NEWSLETTER_DKIM_PRIVATE_KEY (the PEM text, or a path to the PEM file).

``sign`` is a pure function, bytes in and bytes out, so any sending loop can call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path

from newsletter.config import Settings
from newsletter.errors import ConfigError

# Signed when present (RFC 6376 5.4.1's list, plus the list headers RFC 8058 says to sign).
SIGNED = (b"from", b"to", b"reply-to", b"subject", b"date", b"message-id", b"mime-version",
          b"content-type", b"list-id", b"list-unsubscribe", b"list-unsubscribe-post",
          b"feedback-id", b"auto-submitted")


@dataclass(frozen=True)
class DkimKey:
    selector: str
    domain: str
    private_key: bytes = field(repr=False)  # PEM; never printed


def read_private_key(value: str) -> bytes:
    """The PEM text itself, or the path of a file holding it."""
    text = value.strip()
    if not text.startswith("-----BEGIN"):
        try:
            text = Path(text).expanduser().read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError("NEWSLETTER_DKIM_PRIVATE_KEY is neither a PEM private key nor "
                              f"a readable PEM file ({type(e).__name__}) - paste the key or "
                              "give its path") from e
    if "PRIVATE KEY-----" not in text:
        raise ConfigError("NEWSLETTER_DKIM_PRIVATE_KEY holds no PEM private key (-----BEGIN "
                          "... PRIVATE KEY-----) - paste the key or give its path")
    return (text + "\n").encode("ascii")


def key_from_settings(settings: Settings) -> DkimKey | None:
    """The signing key, or None when DKIM is not configured. Half a configuration is an
    error: a selector without a key, or a key without a selector."""
    if not settings.dkim_selector and not settings.dkim_private_key:
        return None
    if not settings.dkim_selector or not settings.dkim_private_key:
        missing = ("NEWSLETTER_DKIM_PRIVATE_KEY" if settings.dkim_selector
                   else "NEWSLETTER_DKIM_SELECTOR")
        raise ConfigError(f"DKIM signing needs both a selector and a private key - set "
                          f"{missing}, or unset the other")
    domain = (settings.dkim_domain
              or parseaddr(settings.from_addr)[1].rpartition("@")[2]).strip().lower()
    if not domain or domain == "localhost":
        raise ConfigError("DKIM signing needs a real domain - set NEWSLETTER_FROM_ADDR to an "
                          "address at your domain (or NEWSLETTER_DKIM_DOMAIN)")
    key = DkimKey(settings.dkim_selector.strip(), domain,
                  read_private_key(settings.dkim_private_key))
    public_key(key)  # refuse a key that cannot be parsed now, not at the first message
    return key


def public_key(key: DkimKey) -> str:
    """The base64 public key (the ``p=`` of the selector's DNS record)."""
    import base64

    from cryptography.hazmat.primitives import serialization

    try:
        private = serialization.load_pem_private_key(key.private_key, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError("NEWSLETTER_DKIM_PRIVATE_KEY cannot be read as an unencrypted PEM "
                          f"private key ({e}) - export it without a passphrase") from e
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def dns_record(key: DkimKey) -> str:
    """The TXT record to publish at ``<selector>._domainkey.<domain>``."""
    return f"v=DKIM1; k=rsa; p={public_key(key)}"


def sign(raw: bytes, key: DkimKey) -> bytes:
    """RAW (a whole message, CRLF line ends) with a DKIM-Signature header on top
    (relaxed/relaxed canonicalisation, rsa-sha256)."""
    import dkim

    present = {line.split(b":", 1)[0].strip().lower()
               for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
               if line and line[:1] not in (b" ", b"\t")}
    try:
        header = dkim.sign(raw, key.selector.encode(), key.domain.encode(), key.private_key,
                           canonicalize=(b"relaxed", b"relaxed"),
                           include_headers=[h for h in SIGNED if h in present])
    except dkim.DKIMException as e:
        raise ConfigError(f"DKIM signing failed ({e}) - check NEWSLETTER_DKIM_PRIVATE_KEY") \
            from e
    return bytes(header) + raw
