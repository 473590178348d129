"""What a morning run did, as data (``RunReport``) and as lines for the job's log."""

from __future__ import annotations

from dataclasses import dataclass, field

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

    @property
    def failed(self) -> bool:
        return bool(self.error) and not self.partial


@dataclass
class RunLine:
    email: str
    status: str  # sent, would-send, skipped, failed
    papers: int = 0
    detail: str = ""  # file path, SMTP target, reason


@dataclass
class RunReport:
    fetched: list[FetchLine] = field(default_factory=list)
    lines: list[RunLine] = field(default_factory=list)
    llm_calls: int = 0
    llm_cost_usd: float = 0.0
    llm_priced_calls: int = 0  # answered calls with a known cost (summed in llm_cost_usd)
    llm_unpriced_calls: int = 0  # answered calls with no known price
    dropped_claims: int = 0  # claims the model made without a quote found in the abstract
    brief_notes: list[str] = field(default_factory=list)
    operator_errors: list[str] = field(default_factory=list)  # settings to fix: exit 1

    due: int = 0
    expired: list[str] = field(default_factory=list)
    unpriced_models: set[str] = field(default_factory=set)

    @property
    def failed(self) -> list[RunLine]:
        """Deliveries that did not go out in this run (failed for good, or deferred)."""
        return [line for line in self.lines if line.status in ("failed", "deferred")]


def summary(report: RunReport, settings: Settings, dry_run: bool = False) -> list[str]:
    """What happened, for a person reading the job's log (secrets redacted)."""
    lines = [f"{line.status:<10} {line.email:<32} {line.papers:>3} papers  {line.detail}"
             for line in report.lines if line.status == "skipped"]
    by_status: dict[str, list[RunLine]] = {}
    for line in report.lines:
        by_status.setdefault(line.status, []).append(line)
    parts = [f"{report.due} due"]
    for status in ("sent", "would-send", "deferred", "failed", "skipped"):
        group = by_status.get(status, [])
        if not group:
            continue
        reasons: dict[str, int] = {}
        for line in group:
            if status in ("skipped", "failed", "deferred"):
                reasons[line.detail] = reasons.get(line.detail, 0) + 1
        why = "; ".join(f"{n} {r}" for r, n in reasons.items())
        parts.append(f"{len(group)} {status}" + (f" ({why})" if why else ""))
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
    for note in dict.fromkeys(report.brief_notes):
        lines.append(f"Brief fallback: {note}")
    return lines
