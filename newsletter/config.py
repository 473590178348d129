"""Every setting, declared once.

Precedence (Click's own): command-line flag > ``NEWSLETTER_*`` environment variable >
``newsletter.toml`` > default. Secrets are read from the environment only: they are never
accepted from the toml file, never stored and never printed.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from newsletter.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent


def setting(default: Any, help: str, secret: bool = False) -> Any:
    """One declared setting, as a field of :class:`Settings`."""
    return field(default=default, metadata={"help": help, "secret": secret})


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


@dataclass(frozen=True)
class Settings:
    """The resolved configuration handed to the pipeline stages; each field is a declared
    setting (its default, its help, whether it is a secret), and ``SETTINGS`` is read from
    these fields: one declaration for the dataclass, the CLI options, the README table and
    ``newsletter.toml``."""

    db: str = setting("subscribers/newsletter.db", "Path of the SQLite database.")
    outbox: str = setting("outbox",
                          "Folder that receives .eml and .html files when no SMTP is set.")
    sources: str = setting("",
                           "Comma-separated sources to fetch (arxiv, sample, feed names); empty ="
                           " arxiv and every enabled feed (see sources list).")
    smtp_url: str = setting("",
                            "SMTP server, e.g. smtp+starttls://user@host:587 or "
                            "smtps://user@host:465; empty writes to the outbox.", secret=True)
    smtp_password: str = setting("", "SMTP password, if not in NEWSLETTER_SMTP_URL.", secret=True)
    smtp_rate: float = setting(0.0,
                               "At most this many messages per second over SMTP; 0 = no limit.")
    send_empty: bool = setting(False,
                               "Send a short 'nothing new' note when a subscriber has no new "
                               "papers (default: send nothing).")
    from_addr: str = setting("AcademicHub <newsletter@localhost>", "From: header of every issue.")
    reply_to: str = setting("", "Reply-To: header (defaults to the From address).")
    brand: str = setting("AcademicHub · Curated Daily", "Brand line in the email header.")
    contact: str = setting("", "Sender's postal or contact line printed in the footer.")
    llm_model: str = setting("", "litellm model string, e.g. openai/gpt-4o-mini; empty = no LLM.")
    llm_api_base: str = setting("", "Base URL of an OpenAI-compatible server for the model.")
    llm_timeout: float = setting(60.0, "Seconds to wait for one LLM answer.")
    llm_budget_usd: float = setting(0.0, "Daily LLM budget in US dollars; 0 = no cap.")
    llm_concurrency: int = setting(4, "How many LLM calls may run at once.")
    llm_max_tokens: int = setting(1500, "Longest answer (tokens) the model may write for one "
                                  "brief; the budget reserves this much per call.")
    llm_price_per_call_usd: float = setting(0.0, "Worst-case USD per LLM call, for a model "
                                            "litellm has no price for; needed for such a model "
                                            "when a budget is set.")
    arxiv_api_url: str = setting("https://export.arxiv.org/api/query", "arXiv API endpoint.")
    arxiv_rss_url: str = setting("https://rss.arxiv.org/rss", "Base of arXiv's listing feeds.")
    crossref_url: str = setting("https://api.crossref.org",
                                "Crossref REST API, for seed papers named by DOI.")
    openalex_url: str = setting("https://api.openalex.org",
                                "OpenAlex API, for abstracts Crossref lacks.")
    arxiv_delay: float = setting(3.0, "Seconds between arXiv API requests (at least 3).")
    arxiv_holidays: str = setting("",
                                  "Comma-separated dates (YYYY-MM-DD) with no arXiv announcement,"
                                  " e.g. its winter break.")
    first_issue_days: int = setting(3, "How many days back a new subscriber's first issue reaches.")
    imap_url: str = setting("",
                            "Mailbox read by 'unsubscribes sync', e.g. "
                            "imaps://newsletter@mail.example.org:993/INBOX.", secret=True)
    imap_password: str = setting("", "IMAP password, if not in NEWSLETTER_IMAP_URL.", secret=True)
    secret: str = setting("", "Key that signs unsubscribe and page links (HMAC); changing it "
                          "revokes them all.", secret=True)
    confirm_days: int = setting(7,
                                "Days a subscriber added with --confirm has to confirm before "
                                "being forgotten.")
    unsubscribe_url: str = setting("", "HTTPS base of the one-click unsubscribe endpoint, if any.")
    web_url: str = setting("", "Public base URL of 'newsletter serve' (the research radar "
                           "page); empty = the email's filter links stay mailto replies.")
    link_days: int = setting(60, "Days a research radar page link stays valid.")
    state_key: str = setting("", "Key that encrypts the state 'state push' sends to the remote "
                             "(make one with 'newsletter state keygen').", secret=True)
    state_remote: str = setting("origin", "Git remote of the state: a remote name, a URL or a "
                                "path.")
    state_branch: str = setting("newsletter-state", "Branch of the state (never the code's).")
    state_retention_days: int = setting(90, "Days that sent deliveries, cached briefs and papers "
                                        "nothing refers to are kept before 'state push' prunes "
                                        "them.")
    feedback_id: str = setting("", "Sender id for a Feedback-ID: header (Gmail's feedback loop);"
                               " empty = no header.")
    dkim_selector: str = setting("", "DKIM selector: sign every message when set (with "
                                 "NEWSLETTER_DKIM_PRIVATE_KEY).")
    dkim_domain: str = setting("", "DKIM signing domain (d=); empty = the From address's domain.")
    dkim_private_key: str = setting("", "DKIM private key: the PEM text, or the path of the PEM "
                                    "file.", secret=True)
    soft_bounce_limit: int = setting(3, "Pause a subscriber after this many soft bounces (mailbox"
                                     " full, refused, gave up retrying) within 30 days; 0 = "
                                     "never.")
    dns_server: str = setting("", "DNS resolver 'doctor' asks, as host or host:port; empty = the"
                              " system's.")

    @property
    def source_names(self) -> list[str]:
        return [s.strip() for s in self.sources.split(",") if s.strip()]


_TYPES = {"str": str, "float": float, "int": int, "bool": bool}
SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, f.default, f.metadata["help"], type=_TYPES[str(f.type)],
            secret=f.metadata["secret"])
    for f in fields(Settings))
BY_NAME = {s.name: s for s in SETTINGS}


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
