"""Signed tokens in links and mailto subjects: HMAC-SHA256 of an address with
NEWSLETTER_SECRET, so a token for one address cannot act on another and a web endpoint can
check it without the database."""

from __future__ import annotations

import hashlib
import hmac

from newsletter.text import fold


def sign(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()[:32]


def unsubscribe_token(secret: str, email: str) -> str:
    """In every issue's unsubscribe link and List-Unsubscribe mailto."""
    return sign(secret, fold(email))


def confirm_token(secret: str, email: str) -> str:
    """In the confirmation email (a different token from the unsubscribe one)."""
    return sign(secret, f"confirm:{fold(email.strip())}")


def page_token(secret: str, email: str, expires: int, generation: int) -> str:
    """In the research radar page's links: valid until ``expires`` (Unix time) and while
    the subscriber's link generation is ``generation`` (raising it revokes the link);
    rotating the secret revokes every link."""
    return sign(secret, f"page:{fold(email)}:{expires}:{generation}")


def feedback_token(secret: str, email: str, paper_id: str, verdict: str, expires: int,
                   generation: int) -> str:
    """In the email's "relevant / not relevant" links: one address, one paper, one verdict,
    valid until ``expires`` and while the link generation is ``generation``."""
    return sign(secret, f"feedback:{fold(email)}:{paper_id}:{verdict}:{expires}:{generation}")
