"""What a morning run did, as data (``RunReport``) and as lines for the job's log."""

from __future__ import annotations

import html
import json
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import astuple, dataclass, field
from typing import IO, Any

from newsletter.config import Settings, redact_url


@dataclass
class FetchLine:
    source: str
    new: int = 0
    updated: int = 0
    requests: int = 0
    error: str | None = None
    not_modified: bool = False
    partial: bool = False
    note: str | None = None
    seconds: float = 0.0  # how long this source took

    @property
    def status(self) -> str:
        return ("failed" if self.failed else "partial" if self.partial else
                "not-modified" if self.not_modified else "ok")

    @property
    def failed(self) -> bool:
        return bool(self.error) and not self.partial


@dataclass(slots=True)  # one per subscriber in a run: kept small
class RunLine:
    email: str
    status: str  # sent, would-send, skipped, failed
    papers: int = 0
    detail: str = ""  # file path, SMTP target, reason


class Lines:
    """A run's lines, one per subscriber, in the order they came: the first ``keep`` in
    memory, the rest in a temporary file (a list of 100,000 must not grow the run's memory
    with the list). Appended to from several threads; read after the run."""

    def __init__(self, keep: int = 2000):
        self.keep = keep
        self._memory: list[RunLine] = []
        self._file: IO[str] | None = None
        self._count = 0
        self._lock = threading.Lock()

    def append(self, line: RunLine) -> None:
        with self._lock:
            self._count += 1
            if len(self._memory) < self.keep:
                self._memory.append(line)
                return
            if self._file is None:
                self._file = tempfile.TemporaryFile("w+", encoding="utf-8")
            self._file.write(json.dumps(astuple(line), ensure_ascii=False) + "\n")

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[RunLine]:
        with self._lock:
            memory = self._memory[:]
            if self._file is not None:
                self._file.flush()
            end = self._file.tell() if self._file is not None else 0
        yield from memory
        at = 0
        while self._file is not None and at < end:
            with self._lock:  # a line at a time: nothing held while the caller works
                self._file.seek(at)
                text = self._file.readline()
                at = self._file.tell()
                self._file.seek(0, 2)
            yield RunLine(*json.loads(text))


@dataclass
class RunReport:
    fetched: list[FetchLine] = field(default_factory=list)
    lines: Lines = field(default_factory=Lines)
    llm_calls: int = 0
    llm_cost_usd: float = 0.0
    llm_priced_calls: int = 0  # answered calls with a known cost (summed in llm_cost_usd)
    llm_unpriced_calls: int = 0  # answered calls with no known price
    dropped_claims: int = 0  # claims the model made without a quote found in the abstract
    brief_notes: list[str] = field(default_factory=list)
    # why briefs fell back to the digest, summed over the run's batches:
    # reason -> (how it is said, how many briefs)
    fallback_counts: dict[str, tuple[str, int]] = field(default_factory=dict)
    briefs_written: int = 0  # distinct briefs, counted per batch
    checked_models: dict[tuple[Any, ...], str | None] = field(default_factory=dict)
    operator_errors: list[str] = field(default_factory=list)  # settings to fix: exit 1

    due: int = 0
    expired: list[str] = field(default_factory=list)
    unpriced_models: set[str] = field(default_factory=set)

    def add(self, line: RunLine) -> None:
        """Record one line (from the recorder thread too)."""
        self.lines.append(line)

    def count_fallbacks(self, reason: str, said: str, n: int) -> None:
        """``n`` more briefs fell back to the digest for ``reason`` (said as ``said``)."""
        self.fallback_counts[reason] = (said, self.fallback_counts.get(reason, ("", 0))[1] + n)

    @property
    def fallback_notes(self) -> list[str]:
        """Why briefs fell back to the digest, one line per reason, for the run's outputs."""
        notes = [f"{said} - {n} of {self.briefs_written} briefs fell back to the extractive "
                 "digest" for said, n in self.fallback_counts.values()]
        return list(dict.fromkeys([*self.brief_notes, *notes]))

    @property
    def failed(self) -> list[RunLine]:
        """Deliveries that did not go out in this run (failed for good, or deferred)."""
        return [line for line in self.lines if line.status in ("failed", "deferred")]


def _skipped_lines(report: RunReport, shown: int | None) -> list[str]:
    lines: list[str] = []
    skipped = 0
    for line in report.lines:
        if line.status != "skipped":
            continue
        skipped += 1
        if shown is None or skipped <= shown:
            lines.append(f"{line.status:<10} {line.email:<32} {line.papers:>3} papers  "
                         f"{line.detail}")
    if shown is not None and skipped > shown:
        lines.append(f"skipped    ... and {skipped - shown:,} more (-v lists every one, "
                     "--json has them all)")
    return lines


def _tally(report: RunReport) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Lines per status, and per reason for the statuses that have one (counted, not kept:
    the lines may be many)."""
    totals: dict[str, int] = {}
    reasons: dict[str, dict[str, int]] = {}
    for line in report.lines:
        totals[line.status] = totals.get(line.status, 0) + 1
        if line.status in ("skipped", "failed", "deferred"):
            mine = reasons.setdefault(line.status, {})
            mine[line.detail] = mine.get(line.detail, 0) + 1
    return totals, reasons


def summary(report: RunReport, settings: Settings, dry_run: bool = False,
            skipped_shown: int | None = None) -> list[str]:
    """What happened, for a person reading the job's log (secrets redacted): a line per
    subscriber skipped (the first ``skipped_shown`` of them, when given: an hourly run of
    a big list skips most of it), then the summary."""
    lines = _skipped_lines(report, skipped_shown)
    totals, reasons = _tally(report)
    parts = [f"{report.due} due"]
    for status in ("sent", "would-send", "deferred", "failed", "skipped"):
        if not totals.get(status):
            continue
        why = "; ".join(f"{n} {r}" for r, n in reasons.get(status, {}).items())
        parts.append(f"{totals[status]} {status}" + (f" ({why})" if why else ""))
    lines.append("Summary: " + ", ".join(parts))
    via = redact_url(settings.smtp_url) if settings.smtp_url else f"outbox {settings.outbox}"
    lines.append(f"Transport: {via}" + (" (dry run: nothing sent)" if dry_run else ""))
    for f in report.fetched:
        state = ("FAILED" if f.failed else "partial" if f.partial else
                 "not modified" if f.not_modified else "ok")
        lines.append(f"Source {f.source}: {state}, {f.new} new, {f.requests} requests"
                     + (f" - {f.error}" if f.error else "") + (f" ({f.note})" if f.note else ""))
    if report.llm_calls:
        cost = ("cost unknown" if not report.llm_priced_calls and report.llm_unpriced_calls
                else f"${report.llm_cost_usd:.4f}"
                + (f" + {report.llm_unpriced_calls} calls of unknown cost"
                   if report.llm_unpriced_calls else ""))
        lines.append(f"LLM: {report.llm_calls} calls, {cost}, {report.dropped_claims} "
                     "claims dropped (no supporting quote)")
    for model in sorted(report.unpriced_models):
        cap = ("; NEWSLETTER_LLM_BUDGET_USD cannot cap it" if settings.llm_budget_usd
               else "")
        lines.append(f"LLM cost unknown: litellm's price list has no {model!r}{cap}")
    if report.expired:
        lines.append(f"Expired: {len(report.expired)} unconfirmed subscribers forgotten after "
                     f"{settings.confirm_days} days")
    for note in report.fallback_notes:
        lines.append(f"Brief fallback: {note}")
    return lines


# --- for scripts: the JSON document of `run --json` and `fetch --json` --------------------

PROBLEMS = ("failed", "deferred")


def fetch_record(f: FetchLine) -> dict[str, Any]:
    return {"source": f.source, "status": f.status, "new": f.new, "updated": f.updated,
            "requests": f.requests, "reason": f.error, "note": f.note, "seconds": f.seconds}


def fetch_counts(lines: list[FetchLine]) -> dict[str, int]:
    return {"sources": len(lines), "failed": sum(1 for f in lines if f.failed),
            "partial": sum(1 for f in lines if f.partial),
            "new": sum(f.new for f in lines), "updated": sum(f.updated for f in lines),
            "requests": sum(f.requests for f in lines)}


def counts(report: RunReport) -> dict[str, int]:
    """Deliveries by outcome (``would_send`` in a dry run)."""
    out = {"due": report.due, "sent": 0, "would_send": 0, "skipped": 0, "deferred": 0,
           "failed": 0}
    for line in report.lines:
        key = line.status.replace("-", "_")
        out[key] = out.get(key, 0) + 1
    return out


def run_document(report: RunReport, *, dry_run: bool, started: str,
                 seconds: float) -> dict[str, Any]:
    """What ``run --json`` prints: counts, one record per subscriber and per source,
    the LLM's calls and cost, brief fallbacks, timings (docs/json/run.schema.json)."""
    return {
        "dry_run": dry_run, "started": started, "seconds": round(seconds, 3),
        "ok": not report.failed and not report.operator_errors, "counts": counts(report),
        "deliveries": [{"email": line.email, "status": line.status, "papers": line.papers,
                        "reason": line.detail if line.status in (*PROBLEMS, "skipped")
                        else None,
                        "detail": line.detail} for line in report.lines],
        "sources": [fetch_record(f) for f in report.fetched],
        "llm": {"calls": report.llm_calls, "priced_calls": report.llm_priced_calls,
                "unpriced_calls": report.llm_unpriced_calls,
                "cost_usd": round(report.llm_cost_usd, 6),
                "unpriced_models": sorted(report.unpriced_models)},
        "brief_fallbacks": report.fallback_notes,
        "operator_errors": list(dict.fromkeys(report.operator_errors)),
        "expired": len(report.expired),
    }


# --- for the GitHub Actions run page -------------------------------------------------------

MAX_ANNOTATIONS = 10  # per kind; the run page shows only the first few anyway
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _cell(text: str, limit: int = 200) -> str:
    """Outside text made safe for one Markdown table cell: no markup, no line breaks."""
    text = _CONTROL.sub(" ", text)
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    text = html.escape(text, quote=False)
    return re.sub(r"([\\`*_\[\]|#!~])", r"\\\1", text)


def step_summary(report: RunReport, dry_run: bool = False) -> str:
    """The Markdown appended to $GITHUB_STEP_SUMMARY: what a person sees on the run's page."""
    c = counts(report)
    title = "Morning run" + (" (dry run: nothing sent)" if dry_run else "")
    sent_key = "would_send" if dry_run else "sent"
    out = [f"## {title}", "",
           "| due | " + sent_key.replace("_", " ") + " | skipped | deferred | failed |",
           "|---:|---:|---:|---:|---:|",
           f"| {c['due']} | {c[sent_key]} | {c['skipped']} | {c['deferred']} | {c['failed']} |",
           ""]
    problems = [line for line in report.lines if line.status in PROBLEMS]
    if problems:
        out += ["### Deliveries that did not go out", "", "| subscriber | status | reason |",
                "|---|---|---|"]
        out += [f"| {_cell(line.email)} | {line.status} | {_cell(line.detail)} |"
                for line in problems[:50]]
        if len(problems) > 50:
            out.append(f"| … | | and {len(problems) - 50} more |")
        out.append("")
    bad = [f for f in report.fetched if f.failed or f.partial]
    if bad:
        out += ["### Sources that failed", "", "| source | status | reason |", "|---|---|---|"]
        out += [f"| {_cell(f.source)} | {f.status} | {_cell(f.error or '')} |" for f in bad]
        out.append("")
    elif report.fetched:
        out += [f"All {len(report.fetched)} sources fetched: "
                f"{sum(f.new for f in report.fetched)} new papers.", ""]
    fix = list(dict.fromkeys(report.operator_errors))
    if fix:
        out += ["### The brief could not use the model (fix the settings)", ""]
        out += [f"- {_cell(n, 300)}" for n in fix] + [""]
    notes = report.fallback_notes
    if notes:
        out += ["### Brief fallbacks", ""] + [f"- {_cell(n, 300)}" for n in notes] + [""]
    cost = f"${report.llm_cost_usd:.4f}"
    if report.unpriced_models:
        cost += " (unknown for " + ", ".join(_cell(m) for m in sorted(report.unpriced_models)) + ")"
    out += [f"LLM: {report.llm_calls} calls, {cost}", ""]
    return "\n".join(out) + "\n"


def _escape_data(text: str) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return _CONTROL.sub(" ", text)


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_commands(report: RunReport) -> list[str]:
    """``::error::`` / ``::warning::`` workflow commands: failed deliveries, failed sources
    and settings the brief needs fixed are errors; deferred deliveries and partly fetched
    sources are warnings. At most MAX_ANNOTATIONS of each, then one line saying how many
    more."""
    found: dict[tuple[str, str], list[str]] = {}
    for line in report.lines:
        if line.status in PROBLEMS:
            level = "error" if line.status == "failed" else "warning"
            found.setdefault((level, f"Delivery {line.status}"), []).append(
                f"{line.email}: {line.detail}")
    for f in report.fetched:
        if f.failed or f.partial:
            level = "error" if f.failed else "warning"
            found.setdefault((level, f"Source {f.status}"), []).append(
                f"{f.source}: {f.error}")
    for note in dict.fromkeys(report.operator_errors):
        found.setdefault(("error", "Brief"), []).append(f"the brief could not use the model: "
                                                       f"{note}")
    out = []
    for (level, title), messages in found.items():
        for message in messages[:MAX_ANNOTATIONS]:
            out.append(f"::{level} title={_escape_property(title)}::{_escape_data(message)}")
        if len(messages) > MAX_ANNOTATIONS:
            out.append(f"::{level} title={_escape_property(title)}::"
                       f"and {len(messages) - MAX_ANNOTATIONS} more (see the job summary)")
    return out
