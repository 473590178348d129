"""Subscriber operations behind the CLI: validate, then hand to the store."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlite_utils import Database

from newsletter import match, store
from newsletter.addresses import normalize_email
from newsletter.errors import InvalidFilter
from newsletter.models import Subscriber

LANGUAGES = ("en", "zh")


def _clean(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(" ".join(v.split()) for v in values if v.strip()))


def build(email: str, *, name: str = "", authors: Iterable[str] = (),
          topics: Iterable[str] = (), categories: Iterable[str] = (),
          exclude: Iterable[str] = (), language: str = "en", timezone: str = "UTC",
          send_hour: int = 7, max_papers: int = 10, frequency: str = "daily") -> Subscriber:
    """A validated Subscriber; raises InvalidAddress or InvalidFilter with the fix."""
    if language not in LANGUAGES:
        raise InvalidFilter(f"language {language!r} is not available - use one of: "
                            + ", ".join(LANGUAGES))
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise InvalidFilter(f"unknown time zone {timezone!r} - use an IANA name such as "
                            "Europe/Berlin or Asia/Shanghai") from e
    sub = Subscriber(
        email=normalize_email(email), name=name.strip(), language=language,
        timezone=timezone, send_hour=send_hour, frequency=frequency, max_papers=max_papers,
        authors=_clean(authors), topics=_clean(topics),
        categories=tuple(c.strip() for c in _clean(categories)), exclude=_clean(exclude),
    )
    match.validate_filters(sub)
    return sub


FILTER_KEYS = ("authors", "topics", "categories", "exclude")


def load_filter_file(path: str) -> dict[str, list[str]]:
    """Filters for people with long lists: a TOML or YAML file with the keys
    authors, topics, categories and exclude, each a list of strings."""
    import tomllib

    text = Path(path).read_text(encoding="utf-8")
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as e:
        raise InvalidFilter(f"{path} could not be read ({str(e).splitlines()[0]}) - "
                            "write TOML or YAML with lists named "
                            + ", ".join(FILTER_KEYS)) from e
    if not isinstance(data, dict):
        raise InvalidFilter(f"{path}: expected keys {', '.join(FILTER_KEYS)}")
    unknown = set(data) - set(FILTER_KEYS)
    if unknown:
        raise InvalidFilter(f"{path}: unknown key {sorted(unknown)[0]!r} - use "
                            + ", ".join(FILTER_KEYS))
    out: dict[str, list[str]] = {}
    for key in FILTER_KEYS:
        values = data.get(key) or []
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidFilter(f"{path}: {key} must be a list of strings")
        out[key] = values
    return out


def add(db: Database, email: str, **fields: object) -> Subscriber:
    return store.add_subscriber(db, build(email, **fields))  # type: ignore[arg-type]


def describe(sub: Subscriber) -> str:
    parts = [f"{len(sub.authors)} authors", f"{len(sub.topics)} topics",
             f"{len(sub.categories)} categories", sub.language]
    return ", ".join(parts)


def table(subs: list[Subscriber]) -> list[str]:
    if not subs:
        return ["No subscribers yet - add one with \"newsletter subscribers add EMAIL\""]
    width = max(len(s.email) for s in subs)
    lines = [f"{'email':<{width}}  lang  status  filters"]
    for s in subs:
        filters = "; ".join([*(f"author: {a}" for a in s.authors),
                             *(f"topic: {t}" for t in s.topics),
                             *(f"category: {c}" for c in s.categories)])
        lines.append(f"{s.email:<{width}}  {s.language:<4}  {s.status:<6}  {filters}")
    lines.append(f"{len(subs)} subscribers")
    return lines
