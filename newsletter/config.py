"""Every setting, declared once.

Precedence (Click's own): command-line flag > ``NEWSLETTER_*`` environment variable >
``newsletter.toml`` > default. Secrets are read from the environment only: they are never
accepted from the toml file, never stored and never printed.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from newsletter.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    type: type = str
    secret: bool = False

    @property
    def envvar(self) -> str:
        return "NEWSLETTER_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("db", "subscribers/newsletter.db", "Path of the SQLite database."),
    Setting("outbox", "outbox", "Folder that receives .eml and .html files when no SMTP is set."),
    Setting(
        "sources",
        "",
        "Comma-separated sources to fetch (arxiv, sample, feed names); empty = arxiv and "
        "every enabled feed (see sources list).",
    ),
    Setting(
        "smtp_url",
        "",
        "SMTP server, e.g. smtp+starttls://user@host:587 or smtps://user@host:465; "
        "empty writes to the outbox.",
        secret=True,
    ),
    Setting("smtp_password", "", "SMTP password, if not in NEWSLETTER_SMTP_URL.", secret=True),
    Setting("smtp_rate", 0.0, "At most this many messages per second over SMTP; 0 = no limit.",
            type=float),
    Setting("send_empty", False, "Send a short 'nothing new' note when a subscriber has no new "
            "papers (default: send nothing).", type=bool),
    Setting("from_addr", "AcademicHub <newsletter@localhost>", "From: header of every issue."),
    Setting("reply_to", "", "Reply-To: header (defaults to the From address)."),
    Setting("brand", "AcademicHub · Curated Daily", "Brand line in the email header."),
    Setting("contact", "", "Sender's postal or contact line printed in the footer."),
    Setting("llm_model", "", "litellm model string, e.g. openai/gpt-4o-mini; empty = no LLM."),
    Setting("llm_api_base", "", "Base URL of an OpenAI-compatible server for the model."),
    Setting("llm_timeout", 60.0, "Seconds to wait for one LLM answer.", type=float),
    Setting("llm_budget_usd", 0.0, "Daily LLM budget in US dollars; 0 = no cap.", type=float),
    Setting("llm_concurrency", 4, "How many LLM calls may run at once.", type=int),
    Setting("arxiv_api_url", "https://export.arxiv.org/api/query", "arXiv API endpoint."),
    Setting("arxiv_rss_url", "https://rss.arxiv.org/rss", "Base of arXiv's listing feeds."),
    Setting("crossref_url", "https://api.crossref.org", "Crossref REST API, for seed papers "
            "named by DOI."),
    Setting("openalex_url", "https://api.openalex.org", "OpenAlex API, for abstracts Crossref "
            "lacks."),
    Setting("arxiv_delay", 3.0, "Seconds between arXiv API requests (at least 3).", type=float),
    Setting("arxiv_holidays", "", "Comma-separated dates (YYYY-MM-DD) with no arXiv "
            "announcement, e.g. its winter break."),
    Setting("first_issue_days", 3, "How many days back a new subscriber's first issue reaches.",
            type=int),
    Setting("imap_url", "", "Mailbox read by 'unsubscribes sync', e.g. "
            "imaps://newsletter@mail.example.org:993/INBOX.", secret=True),
    Setting("imap_password", "", "IMAP password, if not in NEWSLETTER_IMAP_URL.", secret=True),
    Setting("secret", "", "Key that signs unsubscribe links (HMAC).", secret=True),
    Setting("confirm_days", 7, "Days a subscriber added with --confirm has to confirm before "
            "being forgotten.", type=int),
    Setting("unsubscribe_url", "", "HTTPS base of the one-click unsubscribe endpoint, if any."),
)

BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """The resolved configuration handed to the pipeline stages."""

    db: str = "subscribers/newsletter.db"
    outbox: str = "outbox"
    sources: str = ""
    smtp_url: str = ""
    smtp_password: str = ""
    smtp_rate: float = 0.0
    send_empty: bool = False
    from_addr: str = "AcademicHub <newsletter@localhost>"
    reply_to: str = ""
    brand: str = "AcademicHub · Curated Daily"
    contact: str = ""
    llm_model: str = ""
    llm_api_base: str = ""
    llm_timeout: float = 60.0
    llm_budget_usd: float = 0.0
    llm_concurrency: int = 4
    arxiv_api_url: str = "https://export.arxiv.org/api/query"
    arxiv_rss_url: str = "https://rss.arxiv.org/rss"
    crossref_url: str = "https://api.crossref.org"
    openalex_url: str = "https://api.openalex.org"
    arxiv_delay: float = 3.0
    arxiv_holidays: str = ""
    first_issue_days: int = 3
    imap_url: str = ""
    imap_password: str = ""
    secret: str = ""
    confirm_days: int = 7
    unsubscribe_url: str = ""

    @property
    def source_names(self) -> list[str]:
        return [s.strip() for s in self.sources.split(",") if s.strip()]


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``newsletter.toml``; refuse secrets in it, and unknown keys."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML ({e}) - fix the file or remove it") from e
    out: dict[str, Any] = {}
    for key, value in data.items():
        setting = BY_NAME.get(key)
        if setting is None:
            raise ConfigError(
                f"{path}: unknown setting {key!r} - see README > Configuration for the names"
            )
        if setting.secret:
            raise ConfigError(
                f"{path}: {key} is a secret - set {setting.envvar} in the environment instead"
            )
        out[key] = ",".join(value) if isinstance(value, list) else value
    return out


def redact_url(url: str) -> str:
    """Hide the password part of a URL such as smtp://user:pass@host."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def display_value(setting: Setting, value: Any) -> str:
    if setting.secret and value:
        return redact_url(str(value)) if setting.name.endswith("_url") else "***"
    return str(value)
