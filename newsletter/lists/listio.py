"""Subscriber lists as files: reading CSV and JSON for import, writing them for export.

No database here and no validation of the values: this module turns a file into numbered
rows of raw values (or says why a row or the whole file cannot be read), and subscribers
back into a file. ``newsletter.lists.roster`` decides what each row means.

CSV: a header row naming the columns (any order; only ``email`` is required), then one row
per subscriber. The delimiter is sniffed from the header (comma, semicolon or tab), so files
saved by Excel in a semicolon locale work. List columns (authors, topics, categories,
exclude) hold several values separated by ``|``: ``Taiming Lu|Yann LeCun``. (Not ``;``:
author options use it, as in ``Taiming Lu; initials``.) Rows are numbered as a spreadsheet
shows them: the header is row 1. A UTF-8 byte-order mark and Windows line endings are fine.

JSON: a list of objects with the same keys (``subscribers export --format json`` writes
one); list fields are JSON lists. Rows are numbered from 1.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from newsletter.errors import NewsletterError
from newsletter.models import Subscriber

COLUMNS = ("email", "name", "language", "timezone", "send_hour", "frequency", "weekday",
           "max_papers", "status", "confirmed_at", "authors", "topics", "categories",
           "exclude", "likes", "ranking", "like_cap", "feedback")
LIST_COLUMNS = ("authors", "topics", "categories", "exclude", "likes", "feedback")
LIST_SEP = "|"
DELIMITERS = (",", ";", "\t")


class ListFileError(NewsletterError):
    """The file as a whole cannot be read (encoding, format, header)."""


@dataclass
class Row:
    number: int
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def record(sub: Subscriber, feedback: Iterable[str] | None = None) -> dict[str, Any]:
    """One subscriber as a plain dict in column order: what export and ``--json`` print.
    ``feedback`` (export only) holds their verdicts as ``paper_id:relevant`` /
    ``paper_id:not_relevant``."""
    return {
        "email": sub.email, "name": sub.name, "language": sub.language,
        "timezone": sub.timezone, "send_hour": sub.send_hour, "frequency": sub.frequency,
        "weekday": sub.weekday, "max_papers": sub.max_papers, "status": sub.status,
        "confirmed_at": sub.confirmed_at.isoformat() if sub.confirmed_at else None,
        "authors": list(sub.authors), "topics": list(sub.topics),
        "categories": list(sub.categories), "exclude": list(sub.exclude),
        "likes": list(sub.likes), "ranking": sub.ranking, "like_cap": sub.like_cap,
    } | ({} if feedback is None else {"feedback": list(feedback)})


# --- reading -----------------------------------------------------------------------------


def decode(data: bytes, name: str, encoding: str | None = None) -> str:
    """The file's text: UTF-8 (with or without a byte-order mark), UTF-16 with a mark, or
    the given encoding; anything else is a one-line error naming ``--encoding``."""
    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ListFileError(f"unknown encoding {encoding!r} - try utf-8, gb18030, "
                                "latin-1 or cp1252") from None
        try:
            return data.decode(encoding).removeprefix("\ufeff")
        except UnicodeDecodeError as e:
            raise ListFileError(f"{name} is not {encoding} ({_where(data, e.start)}) - pass "
                                "the encoding it was saved in with --encoding") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16").removeprefix("\ufeff")
    body = data.removeprefix(codecs.BOM_UTF8)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ListFileError(
            f"{name} is not UTF-8 ({_where(body, e.start)}) - save it as UTF-8, or pass its "
            "encoding, e.g. --encoding gb18030 (Chinese Excel) or --encoding latin-1") from None


def _where(data: bytes, offset: int) -> str:
    line = data.count(b"\n", 0, offset) + 1
    return f"byte 0x{data[offset]:02x} on line {line}"


def read_file(path: str | Path, encoding: str | None = None) -> list[Row]:
    """The rows of a CSV or JSON subscriber file (JSON if it ends in .json or starts
    with ``[``)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ListFileError(f"{path} is larger than {MAX_FILE_BYTES // 1_000_000} MB - "
                                "split it into smaller files")
        data = path.read_bytes()
    except OSError as e:
        raise ListFileError(f"cannot read {path} ({e.strerror})") from None
    text = decode(data, path.name, encoding)
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        return parse_json(text, path.name)
    return parse_csv(text, path.name)


def sniff_delimiter(header: str) -> str:
    """The delimiter of a CSV file, from its header line: the most frequent of , ; tab
    outside quotes."""
    bare = re.sub(r'"[^"]*"', "", header)
    counts = {d: bare.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _split(cell: str) -> list[str]:
    return [v.strip() for v in cell.split(LIST_SEP) if v.strip()]


def parse_csv(text: str, name: str = "the file") -> list[Row]:
    first = text.split("\n", 1)[0].rstrip("\r")
    if not first.strip():
        raise ListFileError(f"{name} is empty - the first row must name the columns, "
                            "e.g. email,name,topics")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sniff_delimiter(first))
    header = [h.strip().lower() for h in next(reader)]
    _check_header(header, name)
    rows: list[Row] = []
    try:
        for number, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(header):
                rows.append(Row(number, error=f"{len(cells)} cells but {len(header)} columns"
                                " - quote cells that contain the delimiter"))
                continue
            values: dict[str, Any] = {}
            for key, cell in zip(header, cells, strict=False):
                cell = unescape_cell(cell.strip())
                values[key] = _split(cell) if key in LIST_COLUMNS else cell.strip()
            rows.append(Row(number, values))
    except csv.Error as e:
        raise ListFileError(f"{name}, line {reader.line_num}: {e}") from None
    return rows


def _check_header(header: list[str], name: str) -> None:
    for col in header:
        if col not in COLUMNS:
            raise ListFileError(f"{name}: unknown column {col!r} - the columns are "
                                + ", ".join(COLUMNS))
        if header.count(col) > 1:
            raise ListFileError(f"{name}: column {col!r} appears twice")
    if "email" not in header:
        raise ListFileError(f"{name}: no email column - the first row must name the "
                            "columns, e.g. email,name,topics")


MAX_FILE_BYTES = 50_000_000
MAX_JSON_DEPTH = 20  # a subscriber list is two deep; objects nested deeper are refused


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > 18:
        raise ValueError(f"a number of {len(text)} digits")
    return int(text)


def _json_depth_ok(text: str) -> bool:
    """Whether brackets outside strings nest at most MAX_JSON_DEPTH deep (checked before
    parsing, so a file nested 100,000 deep never reaches the recursive parser)."""
    outside = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    depth = 0
    for c in re.findall(r"[\[\]{}]", outside):
        depth += 1 if c in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            return False
    return True


def parse_json(text: str, name: str = "the file") -> list[Row]:
    if not _json_depth_ok(text):
        raise ListFileError(f"{name}: JSON nested more than {MAX_JSON_DEPTH} deep - a "
                            "subscriber list is a list of flat objects")
    try:
        data = json.loads(text, parse_int=_json_int,
                          parse_constant=lambda c: _refuse_constant(c))
    except json.JSONDecodeError as e:
        raise ListFileError(f"{name} is not valid JSON ({e.msg} at line {e.lineno} column "
                            f"{e.colno})") from None
    except (ValueError, RecursionError) as e:
        raise ListFileError(f"{name} is not a subscriber list ({e}) - export one with "
                            "\"newsletter subscribers export --format json\"") from None
    if isinstance(data, dict) and isinstance(data.get("subscribers"), list):
        data = data["subscribers"]
    if not isinstance(data, list):
        raise ListFileError(f"{name}: expected a JSON list of subscribers, one object each")
    return [_json_row(n, item) for n, item in enumerate(data, start=1)]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a value a subscriber list holds")


def _json_row(number: int, item: Any) -> Row:
    if not isinstance(item, dict):
        return Row(number, error="expected an object with an email field")
    values: dict[str, Any] = {}
    for key, value in item.items():
        if key not in COLUMNS:
            return Row(number, error=f"unknown field {key!r} - the fields are "
                       + ", ".join(COLUMNS))
        if key in LIST_COLUMNS:
            if value is None:
                value = []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                return Row(number, error=f"{key} must be a list of strings")
            values[key] = [v.strip() for v in value if v.strip()]
        elif value is None:
            values[key] = ""
        elif isinstance(value, str | int) and not isinstance(value, bool):
            values[key] = value.strip() if isinstance(value, str) else value
        else:
            return Row(number, error=f"{key} must be a string or a number")
    return Row(number, values)


# --- writing -----------------------------------------------------------------------------

# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets
# (tab and carriage return too, as OWASP's CSV-injection advice lists): export puts a
# single quote in front, which spreadsheets show as text; import takes it off again. A value
# that already starts with quotes before such a character gets one more, so the round trip
# is exact.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _needs_quote(value: str) -> bool:
    return value.lstrip("'")[:1] in FORMULA_START and (
        value[:1] in FORMULA_START or value[:1] == "'")


def escape_cell(value: str) -> str:
    """``=1+1`` -> ``'=1+1`` (and ``'=x`` -> ``''=x``); anything else unchanged."""
    return "'" + value if value and _needs_quote(value) else value


def unescape_cell(value: str) -> str:
    """The inverse of :func:`escape_cell`."""
    if value.startswith("'") and _needs_quote(value[1:]):
        return value[1:]
    return value



def to_csv(subs: Iterable[Subscriber], feedback: dict[str, list[str]] | None = None) -> str:
    """CSV with every column; list cells joined with ``|``. Refuses a value containing
    ``|`` (it would come back as two), which only JSON can carry."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for sub in subs:
        rec = record(sub, (feedback or {}).get(sub.email, []))
        for key in LIST_COLUMNS:
            for value in rec[key]:
                if LIST_SEP in value:
                    raise ListFileError(
                        f"{sub.email}: {key} value {value!r} contains {LIST_SEP!r}, which "
                        "separates list items in CSV - use --format json")
            rec[key] = LIST_SEP.join(rec[key])
        writer.writerow(["" if rec[k] is None else escape_cell(str(rec[k])) for k in COLUMNS])
    return out.getvalue()


def to_json(subs: Iterable[Subscriber], feedback: dict[str, list[str]] | None = None) -> str:
    return json.dumps([record(s, (feedback or {}).get(s.email, [])) for s in subs], indent=2,
                      ensure_ascii=False) + "\n"
