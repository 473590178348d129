"""The papers a reader names as "like mine": arXiv ids, DOIs, or a reference manager's file.

``parse_key`` turns what a person types or pastes (``2401.01234``, ``arXiv:2401.01234v2``,
``https://arxiv.org/abs/hep-th/9901001``, ``10.1145/3544548.3581388``,
``https://doi.org/10...``) into ``arxiv:<id>`` or ``doi:<doi>``; ``read_library`` finds those
keys in a BibTeX, RIS or CSL-JSON file (what Zotero, Mendeley and JabRef export).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from newsletter.errors import InvalidFilter

MAX_LIBRARY_BYTES = 20 * 1024 * 1024
MAX_SEEDS = 500

_ARXIV_NEW = re.compile(r"^(\d{4}\.\d{4,5})(v\d+)?$")
_ARXIV_OLD = re.compile(r"^([a-z\-]+(?:\.[A-Z]{2})?/\d{7})(v\d+)?$")
_DOI = re.compile(r"^10\.\d{4,9}/\S+$")
_ARXIV_IN_TEXT = re.compile(r"arxiv[.:/\s]+(?:org/(?:abs|pdf)/)?(\d{4}\.\d{4,5}|[a-z\-]+/\d{7})",
                            re.I)
_ARXIV_DOI = re.compile(r"^10\.48550/arxiv\.(.+)$", re.I)


def parse_key(value: str) -> str:
    """``arxiv:<id>`` or ``doi:<doi>`` for an arXiv id or DOI in any usual spelling;
    raises InvalidFilter with the accepted forms otherwise."""
    text = value.strip().strip("<>").strip()
    low = text.lower()
    for prefix in ("https://", "http://"):
        if low.startswith(prefix):
            text, low = text[len(prefix):], low[len(prefix):]
    for prefix in ("dx.doi.org/", "doi.org/", "doi:"):
        if low.startswith(prefix):
            text, low = text[len(prefix):], low[len(prefix):]
    for prefix in ("arxiv.org/abs/", "arxiv.org/pdf/", "export.arxiv.org/abs/", "arxiv:"):
        if low.startswith(prefix):
            text = text[len(prefix):].removesuffix(".pdf")
            break
    arxiv_doi = _ARXIV_DOI.match(text)
    if arxiv_doi:
        text = arxiv_doi.group(1)
    for pattern in (_ARXIV_NEW, _ARXIV_OLD):
        m = pattern.match(text)
        if m:
            return f"arxiv:{m.group(1)}"
    if _DOI.match(text):
        return f"doi:{text.lower()}"
    raise InvalidFilter(f"{value.strip()[:80]!r} is neither an arXiv id (2401.01234, "
                        "arXiv:hep-th/9901001) nor a DOI (10.1145/...)")


def _keys_from(fields: dict[str, str]) -> str | None:
    """The best key in one reference's fields: an arXiv id beats a DOI (the arXiv API
    gives the abstract), then the DOI."""
    eprint = fields.get("eprint", "")
    archive = fields.get("archiveprefix", "") + fields.get("eprinttype", "")
    if eprint and ("arxiv" in archive.lower() or _ARXIV_NEW.match(eprint)):
        try:
            return parse_key(eprint)
        except InvalidFilter:
            pass
    for name in ("doi", "url", "number", "journal", "note", "howpublished", "publisher"):
        value = fields.get(name, "")
        m = _ARXIV_IN_TEXT.search(value)
        if m:
            return f"arxiv:{m.group(1)}"
    for name in ("doi", "url"):
        try:
            return parse_key(fields[name]) if fields.get(name) else None
        except InvalidFilter:
            continue
    return None


def _bibtex(text: str) -> list[dict[str, str]]:
    entries = []
    for block in re.split(r"\n\s*@", "\n" + text)[1:]:
        fields: dict[str, str] = {}
        for m in re.finditer(r"(\w+)\s*=\s*(?:\{((?:[^{}]|\{[^{}]*\})*)\}|\"([^\"]*)\"|(\w+))",
                             block):
            fields[m.group(1).lower()] = (m.group(2) or m.group(3) or m.group(4) or "").strip()
        entries.append(fields)
    return entries


_RIS_TAGS = {"DO": "doi", "UR": "url", "L2": "url", "N1": "note", "JO": "journal",
             "T2": "journal", "JF": "journal", "M3": "number"}


def _ris(text: str) -> list[dict[str, str]]:
    entries: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Z][A-Z0-9])  -\s?(.*)$", line.strip("\ufeff"))
        if not m:
            continue
        tag, value = m.group(1), m.group(2).strip()
        if tag == "ER":
            entries.append(current)
            current = {}
        elif tag in _RIS_TAGS and _RIS_TAGS[tag] not in current:
            current[_RIS_TAGS[tag]] = value
    if current:
        entries.append(current)
    return entries


def _csl(text: str) -> list[dict[str, str]]:
    data = json.loads(text)
    items = data if isinstance(data, list) else data.get("items", []) if isinstance(
        data, dict) else []
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append({k.lower(): v for k, v in item.items()
                        if isinstance(v, str) and k.lower() in
                        ("doi", "url", "number", "note", "container-title", "publisher")})
            if "container-title" in out[-1]:
                out[-1]["journal"] = out[-1].pop("container-title")
    return out


def read_library(path: str) -> tuple[list[str], int]:
    """(keys found, references without an arXiv id or DOI) in a BibTeX (.bib), RIS (.ris)
    or CSL-JSON (.json) file; raises InvalidFilter when the file cannot be read."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_LIBRARY_BYTES:
            raise InvalidFilter(f"{path} is larger than {MAX_LIBRARY_BYTES // 2**20} MB - "
                                "export only the papers you want as seeds")
        text = p.read_text("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidFilter(f"cannot read {path}: {e} - export it as UTF-8 BibTeX, RIS or "
                            "CSL-JSON") from None
    head = text.lstrip()[:1]
    try:
        if p.suffix.lower() == ".json" or head in "[{":
            entries = _csl(text)
        elif p.suffix.lower() == ".ris" or re.search(r"^TY  -", text, re.M):
            entries = _ris(text)
        else:
            entries = _bibtex(text)
    except (ValueError, RecursionError) as e:
        raise InvalidFilter(f"{path} is not valid CSL-JSON ({str(e)[:80]}) - export it again "
                            "from your reference manager") from None
    keys, missing = [], 0
    for fields in entries:
        key = _keys_from(fields)
        if key:
            keys.append(key)
        else:
            missing += 1
    if not entries:
        raise InvalidFilter(f"no references found in {path} - export BibTeX, RIS or CSL-JSON")
    keys = list(dict.fromkeys(keys))
    if len(keys) > MAX_SEEDS:
        raise InvalidFilter(f"{path} names {len(keys)} papers; at most {MAX_SEEDS} seeds")
    return keys, missing
