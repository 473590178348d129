"""Text and links from outside (feeds, imports, model answers) made safe to show.

Pure functions, no I/O. ``clean_text`` strips control characters and the invisible
format characters (bidirectional overrides and isolates such as U+202E and U+2066,
zero-width spaces such as U+200B, byte-order marks): they can reorder or hide text in an
email client or a terminal. ``http_url`` keeps a link only when it is ``http:`` or
``https:`` with a host, so ``javascript:``, ``vbscript:`` and ``data:`` links never render.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

# C0/C1 controls except tab and newline, and every "format" (Cf) character: bidi
# embeddings/overrides/isolates/marks, zero-width spaces and joiners, BOM, soft hyphen...
_UNSAFE = re.compile(
    "[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u00ad\u0600-\u0605\u061c\u06dd\u070f"
    "\u0890-\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f"
    "\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]")


def clean_text(value: str, multiline: bool = True) -> str:
    """``value`` without control and invisible format characters; with
    ``multiline=False`` also without line breaks (each becomes a space)."""
    text = _UNSAFE.sub("", value.replace("\r\n", "\n").replace("\r", "\n"))
    if not multiline:
        text = " ".join(text.split())
    return text


@functools.lru_cache(maxsize=8192)
def http_url(value: str | None) -> str | None:
    """The link when it is an absolute ``http:`` / ``https:`` URL with a host, else None.
    (Cached: a run checks each paper's links again in every issue that shows it.)"""
    if not value:
        return None
    url = clean_text(str(value), multiline=False).strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    if any(c.isspace() or c in "<>\"'`" for c in url):
        return None
    return url


def clean_record(obj: T) -> T:
    """A frozen dataclass with every text field cleaned (tuples of text too) and every
    field named ``url`` or ``*_url`` reduced to an http(s) link ('' or None otherwise)."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if f.name == "url" or f.name.endswith("_url"):
            safe = http_url(value)
            new: Any = safe if safe is not None else ("" if isinstance(value, str)
                                                      and f.name == "url" else None)
        elif isinstance(value, str):
            new = clean_text(value, multiline=f.name in ("abstract", "text", "body"))
        elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            new = tuple(c for c in (clean_text(v, multiline=False) for v in value) if c)
        else:
            continue
        if new != value:
            changes[f.name] = new
    return dataclasses.replace(obj, **changes) if changes else obj  # type: ignore[type-var]
