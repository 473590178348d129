"""The research radar's signed links, built with urllib (no web framework imported here:
the email renderer and the CLI use them too).

A page link is ``<web_url>/radar?email=E&exp=T&g=G&token=H`` where T is the Unix time it
expires, G the subscriber's link generation and H = HMAC(secret, page:E:T:G). Every other
page of the radar (``/radar/feed.atom``, ``/radar/archive/<date>``, the POST actions)
takes the same four parameters.

A feedback link (one paper card's "relevant" or "not relevant" in the email) is
``<web_url>/feedback?email=E&paper=P&v=V&exp=T&g=G&token=H`` with
H = HMAC(secret, feedback:E:P:V:T:G): it acts only for that address, paper and verdict.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from urllib.parse import urlencode

from newsletter.config import Settings
from newsletter.lists.tokens import feedback_token, page_token

RADAR = "/radar"
FEED = "/radar/feed.atom"
FEEDBACK = "/feedback"


def page_params(secret: str, email: str, generation: int, expires: int) -> dict[str, str]:
    return {"email": email, "exp": str(expires), "g": str(generation),
            "token": page_token(secret, email, expires, generation)}


def expires_at(settings: Settings, now: datetime, days: int | None = None) -> int:
    return int((now + timedelta(days=settings.link_days if days is None else days))
               .timestamp())


def page_url(settings: Settings, email: str, generation: int, now: datetime,
             path: str = RADAR, days: int | None = None, **extra: str) -> str | None:
    """The absolute signed URL of EMAIL's radar page (or another radar path); None when
    ``web_url`` or the secret is not set."""
    if not (settings.web_url and settings.secret):
        return None
    params = page_params(settings.secret, email, generation, expires_at(settings, now, days))
    return f"{settings.web_url.rstrip('/')}{path}?{urlencode({**params, **extra})}"


def _fresh(secret: str, email: str, exp: str, generation: str, token: str,
           now: datetime) -> bool:
    """Well-formed, bounded and not expired (before any HMAC is computed)."""
    if not (secret and email and token and exp.isdigit() and generation.isdigit()):
        return False
    if len(email) > 320 or len(exp) > 12 or len(generation) > 9 or len(token) > 64:
        return False
    return int(exp) >= now.timestamp()


def valid_page_token(secret: str, email: str, exp: str, generation: str, token: str,
                     now: datetime) -> bool:
    """The HMAC and the expiry only; the generation is compared with the database's by
    the caller, after this cheap check passed."""
    if not _fresh(secret, email, exp, generation, token, now):
        return False
    expected = page_token(secret, email, int(exp), int(generation))
    return secrets.compare_digest(expected, token)


def feedback_url(settings: Settings, email: str, generation: int, now: datetime,
                 paper_id: str, verdict: str) -> str | None:
    """The signed one-click feedback link for EMAIL's verdict on a paper; None without
    ``web_url`` or the secret."""
    if not (settings.web_url and settings.secret):
        return None
    exp = expires_at(settings, now)
    params = {"email": email, "paper": paper_id, "v": verdict, "exp": str(exp),
              "g": str(generation),
              "token": feedback_token(settings.secret, email, paper_id, verdict, exp,
                                      generation)}
    return f"{settings.web_url.rstrip('/')}{FEEDBACK}?{urlencode(params)}"


def valid_feedback_token(secret: str, email: str, paper_id: str, verdict: str, exp: str,
                         generation: str, token: str, now: datetime) -> bool:
    """The HMAC and the expiry (the generation is compared with the database's later)."""
    if not (paper_id and verdict) or len(paper_id) > 200 or len(verdict) > 20:
        return False
    if not _fresh(secret, email, exp, generation, token, now):
        return False
    expected = feedback_token(secret, email, paper_id, verdict, int(exp), int(generation))
    return secrets.compare_digest(expected, token)
