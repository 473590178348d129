"""Email address validation and normalisation (pure functions, no I/O)."""

from __future__ import annotations

import ipaddress
import re

from newsletter.errors import InvalidAddress

_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normalize_email(raw: str) -> str:
    """Return the canonical form of an address: trimmed, domain lower-cased and IDNA-encoded.

    The local part keeps its case (RFC 5321 lets servers treat it as case-sensitive), but
    duplicates are found case-insensitively by the store.
    """
    address = raw.strip()
    if address.count("@") != 1:
        raise InvalidAddress(f"{raw!r} is not an email address - expected name@domain")
    local, domain = address.split("@")
    if not local or len(local) > 64 or not _LOCAL.match(local) or ".." in local:
        raise InvalidAddress(f"{raw!r} is not an email address - the part before @ is invalid")
    if local.startswith(".") or local.endswith("."):
        raise InvalidAddress(f"{raw!r} is not an email address - the part before @ is invalid")
    try:
        ascii_domain = domain.strip().rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError as e:
        raise InvalidAddress(f"{raw!r} is not an email address - bad domain ({e})") from e
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise InvalidAddress(
            f"{raw!r} is not an email address - the domain must look like example.org"
        )
    return f"{local}@{ascii_domain}"


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine (where credentials may travel in
    clear and politeness limits do not apply: test servers)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
