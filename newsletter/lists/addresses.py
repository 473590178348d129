"""Email address validation and normalisation (pure functions, no I/O)."""

from __future__ import annotations

import ipaddress

from newsletter.errors import InvalidAddress


def normalize_email(raw: str) -> str:
    """Return the canonical form of an address, checked by ``email-validator``: trimmed,
    the domain lower-cased and converted with IDNA 2008 / UTS-46 (``a@straße.de`` is stored
    as ``a@xn--strae-oqa.de``, never as the different domain ``strasse.de``).

    The local part keeps its case (RFC 5321 lets servers treat it as case-sensitive), but
    duplicates are found case-insensitively by the store. Only ASCII local parts are
    accepted (an SMTPUTF8 address cannot be sent through every relay).
    """
    from email_validator import EmailNotValidError, validate_email

    address = raw.strip()
    if address.count("@") != 1:
        raise InvalidAddress(f"{raw!r} is not an email address - expected name@domain")
    try:
        checked = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as e:
        reason = str(e).rstrip(".")
        raise InvalidAddress(f"{raw!r} is not an email address - {reason[:1].lower()}"
                             f"{reason[1:]}") from None
    return str(checked.ascii_email or checked.normalized)


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine (where credentials may travel in
    clear and politeness limits do not apply: test servers)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
