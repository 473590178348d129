"""Every setting, declared once.

Precedence (Click's own): command-line flag > ``NEWSLETTER_*`` environment variable >
``newsletter.toml`` > default. Secrets are read from the environment only: they are never
accepted from the toml file, never stored and never printed.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from datetime import date
from email.utils import parseaddr
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
    smtp_connections: int = setting(1, "SMTP connections sending at once (smtp_rate caps them "
                                    "together).")
    smtp_per_connection: int = setting(0, "Messages sent over one SMTP connection before it is "
                                       "closed and reopened; 0 = no limit.")
    smtp_daily_limit: int = setting(0, "At most this many messages per UTC day (the provider's "
                                    "daily quota); the rest wait for the next run after "
                                    "midnight UTC; 0 = no limit.")
    render_workers: int = setting(0, "Processes rendering emails during a run; 0 = one per CPU "
                                  "core, 1 = render in the main process.")
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
    fetch_timeout: float = setting(30.0, "Seconds one request to a source may take in all "
                                   "(connect, headers and body).")
    fetch_budget: float = setting(600.0, "Seconds the whole fetch stage may take; a source still"
                                  " running then is reported as failed and the emails go out.")
    llm_deadline: float = setting(300.0, "Seconds the whole brief stage may take; briefs not "
                                  "written by then fall back to the extractive digest.")
    smtp_timeout: float = setting(60.0, "Seconds one message may take over SMTP in all "
                                  "(connect to end of data).")
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

    def __post_init__(self) -> None:
        for name in ("smtp_connections", "smtp_per_connection", "smtp_daily_limit",
                     "render_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{BY_NAME[name].envvar} must be 0 or more, not "
                                  f"{getattr(self, name)}")
        if self.smtp_connections < 1:
            raise ConfigError("NEWSLETTER_SMTP_CONNECTIONS must be at least 1")

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
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        why = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else str(e)
        raise ConfigError(f"{path} is not valid TOML ({why}) - fix the file or remove "
                          "it") from e
    except OSError as e:
        raise ConfigError(f"cannot read {path} ({e.strerror}) - check the path "
                          "(--config / NEWSLETTER_CONFIG)") from e
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
        if isinstance(value, list) and key in _LISTS and all(isinstance(v, str) for v in value):
            value = ",".join(value)
        if not _toml_type_ok(setting, value):
            want = {str: "a string", float: "a number", int: "a whole number",
                    bool: "true or false"}[setting.type]
            raise ConfigError(f"{path}: {key} must be {want}, not {type(value).__name__} - "
                              "see README > Configuration")
        out[key] = value
    return out


_LISTS = ("sources", "arxiv_holidays")  # comma-separated settings may be TOML lists


def _toml_type_ok(setting: Setting, value: Any) -> bool:
    if setting.type is bool:
        return isinstance(value, bool)
    if setting.type is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if setting.type is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, str)


def _finite(name: str, value: float, low: float, high: float = math.inf,
            low_open: bool = False) -> list[str]:
    ok = math.isfinite(value) and (value > low if low_open else value >= low) \
        and value <= high
    if ok:
        return []
    bound = f"more than {low:g}" if low_open else f"at least {low:g}"
    if high != math.inf:
        bound += f" and at most {high:g}"
    return [f"{name} = {value!r} is out of range - use a number {bound}"]


def _address(name: str, value: str, required: bool) -> list[str]:
    if not value and not required:
        return []
    if any(c in value for c in "\r\n\0"):
        return [f"{name} contains a line break - give one address such as "
                "\"AcademicHub <newsletter@example.org>\""]
    addr = parseaddr(value)[1]
    local, _, domain = addr.rpartition("@")
    if not local or not domain or not re.fullmatch(r"[^\s@]+", local) \
            or not re.fullmatch(r"[^\s@.]+(?:\.[^\s@.]+)*", domain):
        return [f"{name} = {value!r} is not an email address - use name@domain or "
                "\"Name <name@domain>\""]
    return []


def _url(name: str, value: str, schemes: tuple[str, ...], secret: bool = False
         ) -> list[str]:
    if not value:
        return []
    shown = "the value" if secret else repr(value)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return [f"{name}: {shown} has a bad port - use a number, e.g. host:587"]
    if parts.scheme.lower() not in schemes or not parts.hostname:
        return [f"{name}: {shown} is not a {' or '.join(schemes)} URL - see README > "
                "Configuration"]
    return []


def validate(settings: Settings) -> Settings:
    """Check every setting once, when loaded; raise ConfigError listing what is wrong.
    Secret values are never repeated in the message."""
    from newsletter.lists.addresses import is_loopback

    s = settings
    problems: list[str] = []
    problems += _finite("smtp_rate", s.smtp_rate, 0)
    problems += _finite("llm_timeout", s.llm_timeout, 0, 3600, low_open=True)
    problems += _finite("llm_budget_usd", s.llm_budget_usd, 0)
    problems += _finite("llm_concurrency", s.llm_concurrency, 1, 64)
    problems += _finite("first_issue_days", s.first_issue_days, 1, 365)
    problems += _finite("confirm_days", s.confirm_days, 1, 365)
    problems += _finite("fetch_timeout", s.fetch_timeout, 0, 3600, low_open=True)
    problems += _finite("fetch_budget", s.fetch_budget, 0, 86400, low_open=True)
    problems += _finite("llm_deadline", s.llm_deadline, 0, 86400, low_open=True)
    problems += _finite("smtp_timeout", s.smtp_timeout, 0, 3600, low_open=True)
    api_host = urlsplit(s.arxiv_api_url).hostname or ""
    if not is_loopback(api_host):  # only a loopback test server may be asked faster
        problems += _finite("arxiv_delay", s.arxiv_delay, 3, 3600)
    else:
        problems += _finite("arxiv_delay", s.arxiv_delay, 0, 3600)
    problems += _address("from_addr", s.from_addr, required=True)
    problems += _address("reply_to", s.reply_to, required=False)
    for name in ("brand", "contact"):
        if any(ord(c) < 32 or c == "\x7f" for c in getattr(s, name)):
            problems.append(f"{name} contains control characters or line breaks - use one "
                            "line of text")
    unsubscribe_host = urlsplit(s.unsubscribe_url).hostname or ""  # http only to loopback
    problems += _url("unsubscribe_url", s.unsubscribe_url,
                     ("https", "http") if is_loopback(unsubscribe_host) else ("https",))
    for name in ("arxiv_api_url", "arxiv_rss_url", "llm_api_base"):
        problems += _url(name, getattr(s, name), ("http", "https"))
    problems += _url("smtp_url", s.smtp_url, ("smtp", "smtps", "smtp+starttls"), secret=True)
    problems += _url("imap_url", s.imap_url, ("imap", "imaps"), secret=True)
    for day in (d.strip() for d in s.arxiv_holidays.split(",") if d.strip()):
        try:
            date.fromisoformat(day)
        except ValueError:
            problems.append(f"arxiv_holidays: {day!r} is not a date - use YYYY-MM-DD")
    for name in s.source_names:
        if not re.fullmatch(r"[\w.-]{1,64}", name):
            problems.append(f"sources: {name!r} is not a source name - see \"newsletter "
                            "sources list\"")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
    return settings


def redact_url(url: str) -> str:
    """Hide the password part of a URL such as smtp://user:pass@host; a value that is not
    a URL with a host (a bare password by mistake) is hidden whole."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018
    except ValueError:
        return "***"
    if not parts.scheme or not parts.hostname:
        return "***"
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
