"""The morning job, stage by stage: fetch -> match -> brief -> render -> send.

The only module that imports every stage. Plain functions taking their inputs as arguments.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from newsletter import brief as brief_mod
from newsletter import match, render, send, sources, store
from newsletter.config import Settings
from newsletter.errors import NewsletterError, SendFailed
from newsletter.models import Brief, Issue, Paper, Subscriber

MORE_MATCHES = 20  # listed by title under "More matches", after the full cards


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
    brief_notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[RunLine]:
        return [line for line in self.lines if line.status == "failed"]


def source_names(db: Database, settings: Settings) -> list[str]:
    """The sources to fetch: those named in settings, else arXiv (unless disabled) and
    every enabled feed in the database."""
    if settings.source_names:
        return settings.source_names
    rows = {r["name"]: r for r in store.list_sources(db)}
    names = [] if rows.get("arxiv", {}).get("enabled") == 0 else ["arxiv"]
    names += [n for n, r in rows.items() if r.get("kind") == "feed" and r.get("enabled")]
    return names


# --- fetch -------------------------------------------------------------------------------


def fetch(db: Database, settings: Settings, now: datetime,
          progress: Callable[[str], None] | None = None) -> list[FetchLine]:
    subscribers = store.list_subscribers(db, status="active")
    lines = []
    for name in source_names(db, settings):
        if progress:
            progress(name)
        state = store.source_state(db, name)
        last = state.get("retry_from") or state.get("last_success")
        since = (datetime.fromisoformat(last) if last
                 else now - timedelta(days=settings.first_issue_days))
        feed = state if state.get("kind") == "feed" else None
        result = sources.fetch(name, settings, state, since, subscribers, feed, until=now)
        new, updated = store.upsert_papers(db, result.papers, now)
        extra = dict(result.state)
        note = result.note or extra.pop("warning", None)
        kind = state.get("kind") or ("feed" if name not in sources.BUILTIN else name)
        fields: dict[str, Any] = {
            "kind": kind, "last_fetched": now.isoformat(timespec="seconds"),
            "last_error": result.error, "last_new": new, "last_requests": result.requests,
            "last_note": note,
            "last_status": ("partial" if result.partial else "failed") if result.error
            else ("not-modified" if result.not_modified else "ok"),
            **{k: v for k, v in extra.items() if k in ("etag", "last_modified")},
        }
        if not state.get("kind") and kind == "feed":
            entry = sources.catalogue().get(name, {})
            fields.update(url=entry.get("url"), label=entry.get("label"), enabled=1)
        if result.error:  # the next run asks for this window again
            fields["retry_from"] = since.isoformat(timespec="seconds")
        else:
            fields["last_success"] = now.isoformat(timespec="seconds")
            fields["retry_from"] = None
        store.save_source_state(db, name, **fields)
        lines.append(FetchLine(name, new, updated, result.requests, result.error,
                               result.not_modified, result.partial, note))
    return lines


# --- match -------------------------------------------------------------------------------


def issue_date_for(sub: Subscriber, now: datetime) -> date:
    return now.astimezone(ZoneInfo(sub.timezone)).date()


def is_due(sub: Subscriber, now: datetime) -> bool:
    return now.astimezone(ZoneInfo(sub.timezone)).hour >= sub.send_hour


def window_start(db: Database, sub: Subscriber, settings: Settings, now: datetime) -> datetime:
    last = store.last_sent_at(db, sub.email)
    return last if last else now - timedelta(days=settings.first_issue_days)


def build_index(db: Database, since: datetime) -> match.Index:
    papers, first_seen = store.papers_first_seen_since(db, since)
    return match.Index(papers, first_seen)


def select(sub: Subscriber, index: match.Index, already_sent: set[str], since: datetime,
           db: Database, rejected: list[tuple[Paper, str]] | None = None
           ) -> tuple[list[Any], list[Any]]:
    """(papers in the issue, "more matches"), after the per-subscriber cap."""
    found, _ = match.rank(sub, index, already_sent | index.seen_before(since),
                          sub.max_papers + MORE_MATCHES, rejected)
    return found[: sub.max_papers], found[sub.max_papers:]


# --- brief -------------------------------------------------------------------------------


def _record(db: Database, key: str, lang: str, model: str, paper_ids: tuple[str, ...],
            result: brief_mod.BriefResult, report: RunReport) -> None:
    """Log every model request, and cache a brief the model wrote."""
    for call in result.calls:
        store.log_llm_call(db, {"brief_key": key, **call})
        report.llm_calls += 1
        report.llm_cost_usd += call.get("cost_usd") or 0.0
    if result.brief.kind == "llm":
        store.put_brief(db, {
            "key": key, "kind": "llm", "language": lang, "model": model,
            "prompt_version": brief_mod.PROMPT_VERSION,
            "paper_ids": json.dumps(list(paper_ids)),
            "data": brief_mod.brief_to_json(result.brief),
            "input_tokens": sum(c.get("input_tokens") or 0 for c in result.calls),
            "output_tokens": sum(c.get("output_tokens") or 0 for c in result.calls),
            "cost_usd": sum(c.get("cost_usd") or 0.0 for c in result.calls),
        })
    elif result.brief.note:
        report.brief_notes.append(result.brief.note)


def write_briefs(db: Database, wanted: Iterable[tuple[tuple[Paper, ...], str]],
                 settings: Settings, now: datetime, report: RunReport
                 ) -> dict[tuple[tuple[str, ...], str], Brief]:
    """One brief per distinct (papers, language); model calls run in parallel threads,
    database writes stay on this thread."""
    distinct = {(tuple(p.id for p in papers), lang): (papers, lang) for papers, lang in wanted}
    out: dict[tuple[tuple[str, ...], str], Brief] = {}
    start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)

    def budget_left() -> bool:
        cap = settings.llm_budget_usd
        return not cap or store.llm_spend_since(db, start_of_day) < cap

    if not settings.llm_model:
        return {k: brief_mod.extractive(list(papers)) for k, (papers, _) in distinct.items()}
    todo = []
    for k, (papers, lang) in distinct.items():
        key = brief_mod.cache_key(k[0], lang, settings.llm_model)
        cached = store.get_brief(db, key)
        if cached:
            out[k] = brief_mod.brief_from_json(cached["data"])
        else:
            todo.append((k, papers, lang))
    if not todo:
        return out
    missing = brief_mod.missing_key(settings.llm_model, settings.llm_api_base)
    if missing:
        note = f"no API key for model {settings.llm_model!r}: set {missing}"
        report.brief_notes.append(note)
        out.update({k: brief_mod.extractive(list(p), note=note) for k, p, _ in todo})
        return out
    with ThreadPoolExecutor(max_workers=max(1, settings.llm_concurrency)) as pool:
        futures = []
        for k, papers, lang in todo:
            if not budget_left():
                out[k] = brief_mod.extractive(list(papers), note="daily LLM budget reached")
                report.brief_notes.append("daily LLM budget reached")
                continue
            futures.append((k, papers, lang, pool.submit(
                brief_mod.write_brief, list(papers), lang, settings.llm_model,
                settings.llm_api_base, settings.llm_timeout)))
        for k, _papers, lang, fut in futures:
            result = fut.result()
            key = brief_mod.cache_key(k[0], lang, settings.llm_model)
            _record(db, key, lang, settings.llm_model, k[0], result, report)
            out[k] = result.brief
    return out


# --- whole issues ------------------------------------------------------------------------


def plan_issue(db: Database, sub: Subscriber, settings: Settings, now: datetime,
               index: match.Index | None = None) -> Issue:
    """The issue a subscriber would get now, without its brief."""
    since = window_start(db, sub, settings, now)
    index = index or build_index(db, since)
    picked, more = select(sub, index, store.delivered_paper_ids(db, sub.email), since, db)
    return Issue(subscriber=sub, issue_date=issue_date_for(sub, now), matches=tuple(picked),
                 more=tuple(more))


def explain(db: Database, email: str, settings: Settings, now: datetime
            ) -> tuple[Issue, list[tuple[Paper, str]]]:
    """The issue EMAIL would get at ``now``, and the near misses strict matching rejected."""
    sub = store.get_subscriber(db, email)
    since = window_start(db, sub, settings, now)
    rejected: list[tuple[Paper, str]] = []
    picked, more = select(sub, build_index(db, since), store.delivered_paper_ids(db, email),
                          since, db, rejected)
    issue = Issue(subscriber=sub, issue_date=issue_date_for(sub, now), matches=tuple(picked),
                  more=tuple(more))
    return issue, rejected


def with_brief(issue: Issue, briefs: dict[tuple[tuple[str, ...], str], Brief]) -> Issue:
    papers = tuple(m.paper for m in issue.matches)
    if not papers:
        return issue
    key = (tuple(p.id for p in papers), issue.subscriber.language)
    return Issue(issue.subscriber, issue.issue_date, issue.matches, issue.more, briefs[key])


def preview(db: Database, email: str, settings: Settings, now: datetime) -> tuple[Issue, Any]:
    sub = store.get_subscriber(db, email)
    issue = plan_issue(db, sub, settings, now)
    report = RunReport()
    briefs = write_briefs(db, [(tuple(m.paper for m in issue.matches), sub.language)]
                          if issue.matches else [], settings, now, report)
    issue = with_brief(issue, briefs)
    return issue, render.render(issue, settings)


def run(db: Database, settings: Settings, now: datetime, *, send_all: bool = False,
        dry_run: bool = False, only: str | None = None, do_fetch: bool = True,
        progress: Callable[[str], None] | None = None) -> RunReport:
    report = RunReport()
    if do_fetch:
        report.fetched = fetch(db, settings, now, progress)
    subs = ([store.get_subscriber(db, only)] if only
            else store.list_subscribers(db, status="active"))
    due: list[Subscriber] = []
    for sub in subs:
        if not send_all and not only and not is_due(sub, now):
            report.lines.append(RunLine(sub.email, "skipped", 0, "not due yet"))
            continue
        existing = store.get_delivery(db, sub.email, issue_date_for(sub, now))
        if existing and existing["status"] == "sent" and not dry_run:
            report.lines.append(RunLine(sub.email, "skipped", 0, "already sent today"))
            continue
        due.append(sub)
    if not due:
        return report
    earliest = min(window_start(db, s, settings, now) for s in due)
    index = build_index(db, earliest)
    issues = [plan_issue(db, s, settings, now, index) for s in due]
    briefs = write_briefs(db, [(tuple(m.paper for m in i.matches), i.subscriber.language)
                               for i in issues if i.matches], settings, now, report)
    with send.sender(settings.smtp_url, settings.smtp_password, settings.outbox) as transport:
        for issue in issues:
            report.lines.append(_deliver(db, with_brief(issue, briefs), settings, now,
                                         transport, dry_run))
    return report


def _deliver(db: Database, issue: Issue, settings: Settings, now: datetime,
             transport: send.Outbox | send.SMTPSender, dry_run: bool) -> RunLine:
    sub = issue.subscriber
    count = len(issue.matches) + len(issue.more)
    if not issue.matches:
        return RunLine(sub.email, "skipped", 0, "no new papers")
    rendered = render.render(issue, settings)
    msg = render.build_message(issue, rendered, settings, now)
    if dry_run:
        return RunLine(sub.email, "would-send", count, rendered.subject)
    delivery = store.begin_delivery(db, sub.email, issue.issue_date, msg["Message-ID"],
                                    issue.paper_ids)
    if delivery["message_id"] != msg["Message-ID"]:
        msg.replace_header("Message-ID", delivery["message_id"])
    try:
        where = transport.send(msg, sub.email, issue.issue_date.isoformat(), rendered.html)
    except (SendFailed, NewsletterError) as e:
        store.finish_delivery(db, delivery["id"], "failed", error=str(e))
        return RunLine(sub.email, "failed", count, str(e))
    store.finish_delivery(db, delivery["id"], "sent", path=where)
    return RunLine(sub.email, "sent", count, where)


# --- source administration ---------------------------------------------------------------


def set_source_enabled(db: Database, name: str, enabled: bool) -> dict[str, Any]:
    """Switch a source on or off; a catalogue feed is added on first enable."""
    state = store.source_state(db, name)
    if not state.get("kind"):
        if name in sources.BUILTIN:
            state = {"kind": name}
        elif name in sources.catalogue():
            entry = sources.catalogue()[name]
            state = {"kind": "feed", "url": entry["url"], "label": entry["label"]}
        else:
            raise NewsletterError(
                f"no source {name} - add it with \"newsletter sources add {name} URL\" or "
                "pick one from \"newsletter sources list --catalogue\"")
    store.save_source_state(db, name, **{**state, "enabled": 1 if enabled else 0})
    return store.source_state(db, name)


def check_source(db: Database, name: str, settings: Settings, now: datetime) -> Any:
    """Fetch one source once and return what was parsed; stores nothing."""
    state = store.source_state(db, name)
    feed = state if state.get("kind") == "feed" else None
    since = now - timedelta(days=settings.first_issue_days)
    return sources.fetch(name, settings, {}, since, store.list_subscribers(db, "active"),
                         feed, until=now)
