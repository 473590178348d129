"""The morning job, stage by stage: fetch -> match -> brief -> render -> send.

The only module that imports every stage. Plain functions taking their inputs as arguments.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from typing import Any

from sqlite_utils import Database

from newsletter import brief as brief_mod
from newsletter import match, render, send, sources, store
from newsletter.config import Settings
from newsletter.errors import SendFailed
from newsletter.models import Brief, Issue, Match, Paper, SourceResult, Subscriber
from newsletter.ops import schedule
from newsletter.ops.report import FetchLine, RunLine, RunReport

MORE_MATCHES = 20  # listed by title under "More matches", after the full cards


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
    budget_end = time.monotonic() + settings.fetch_budget
    for name in source_names(db, settings):
        if progress:
            progress(name)
        started = time.monotonic()
        state = store.source_state(db, name)
        last = state.get("retry_from") or state.get("last_success")
        since = (datetime.fromisoformat(last) if last
                 else now - timedelta(days=settings.first_issue_days))
        feed = state if state.get("kind") == "feed" else None
        result = _fetch_within(budget_end, settings, name, state, since, subscribers, feed,
                               now)
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
                               result.not_modified, result.partial, note,
                               seconds=round(time.monotonic() - started, 3)))
    return lines


def _fetch_within(budget_end: float, settings: Settings, name: str, state: dict[str, Any],
                  since: datetime, subscribers: list[Subscriber], feed: dict[str, Any] | None,
                  now: datetime) -> SourceResult:
    """One source, fetched on a daemon thread so that the run's fetch budget holds whatever
    the source does: a source still running when the budget is spent is reported failed
    (its thread is abandoned; sources never touch the database)."""
    left = budget_end - time.monotonic()
    if left <= 0:
        return SourceResult(name=name, error=f"not fetched: the fetch budget of "
                            f"{settings.fetch_budget:g} s was used up (NEWSLETTER_FETCH_BUDGET)")
    box: list[SourceResult] = []
    worker = threading.Thread(
        target=lambda: box.append(sources.fetch(name, settings, state, since, subscribers,
                                                feed, until=now,
                                                timeout=min(settings.fetch_timeout, left))),
        name=f"fetch-{name}", daemon=True)
    worker.start()
    worker.join(left)
    if box and box[0].error and left < settings.fetch_timeout:  # the budget cut it short
        return dataclasses.replace(box[0], error=f"{box[0].error}; the fetch budget of "
                                   f"{settings.fetch_budget:g} s was used up "
                                   "(NEWSLETTER_FETCH_BUDGET)")
    if box:
        return box[0]
    return SourceResult(name=name, requests=1, error=f"gave up after {left:.3g} s: the fetch "
                        f"budget of {settings.fetch_budget:g} s was used up "
                        "(NEWSLETTER_FETCH_BUDGET)")


# --- match -------------------------------------------------------------------------------


def issue_date_for(sub: Subscriber, now: datetime) -> date:
    return schedule.issue_date(sub, now)


def window_start(db: Database, sub: Subscriber, settings: Settings, now: datetime) -> datetime:
    """Everything first seen since the last delivered issue was planned is new; a new
    subscriber's first issue reaches back ``first_issue_days``."""
    last = store.last_sent_at(db, sub.email)
    return last if last else now - timedelta(days=settings.first_issue_days)


def build_index(db: Database, since: datetime) -> match.Index:
    """The papers first seen since ``since``; topic terms go to the FTS5 index."""
    papers, first_seen = store.papers_first_seen_since(db, since)
    return match.Index(papers, lambda expr: store.fts_search(db, expr, since), first_seen)


def index_papers(papers: Iterable[Paper]) -> match.Index:
    """An index over papers that are not (or not only) in the database: they are put into
    an in-memory database so topic queries run on the same FTS5 index as in a run."""
    mem = store.open_db(":memory:")
    papers = list(papers)
    store.upsert_papers(mem, papers)
    return match.Index(papers, lambda expr: store.fts_search(mem, expr))


def select(sub: Subscriber, index: match.Index, already_sent: set[str], since: datetime,
           rejected: list[tuple[Paper, str]] | None = None,
           labels: tuple[list[Paper], list[Paper]] = ([], [])
           ) -> tuple[list[Any], list[Any]]:
    """(papers in the issue, "more matches"), after the per-subscriber cap; ``labels`` are
    the reader's (positives, negatives) for the learned ranking (store.labelled_papers)."""
    excluded = already_sent | index.seen_before(since)
    found, _ = match.rank(sub, index, excluded, sub.max_papers + MORE_MATCHES, rejected)
    found = learned_order(sub, found, index, excluded, *labels)
    return found[: sub.max_papers], found[sub.max_papers:]


def learned_order(sub: Subscriber, found: list[Match], index: match.Index,
                  excluded: set[str], positives: list[Paper], negatives: list[Paper]
                  ) -> list[Match]:
    """The learned ranking over the filters' matches (see newsletter.relevance): nothing
    changes for a subscriber with no seed papers and no verdicts, or in mode "filters"."""
    if sub.ranking == "filters" or not index.papers or not positives:
        return found
    from newsletter.relevance import learned

    if index.learned is None:
        index.learned = learned.Model(index.papers)
    mode = "reorder" if sub.ranking == "auto" else sub.ranking
    scored = index.learned.score(learned.Labels(tuple(positives), tuple(negatives)))
    # their own seed papers are not news to them; what they marked not relevant stays out
    known = {p.id for p in positives + negatives}
    found = [m for m in found if m.paper.id not in known]
    return learned.rerank(found, scored, mode, sub.like_cap,
                          excluded | {p.id for p in negatives + positives})


# --- brief -------------------------------------------------------------------------------


def _record(db: Database, key: str, lang: str, model: str, paper_ids: tuple[str, ...],
            result: brief_mod.BriefResult, report: RunReport, now: datetime | None = None
            ) -> None:
    """Log every model request (with the claims it made and dropped), the reason for a
    fallback, and cache a brief the model wrote (tokens and cost summed over its requests;
    cost None when the cost map does not know the model)."""
    for call in result.calls:
        store.log_llm_call(db, {"brief_key": key, "language": lang, **call}, now)
        report.llm_calls += 1
        if call.get("cost_usd") is None:
            report.llm_unpriced_calls += not call.get("error")
        else:
            report.llm_cost_usd += call["cost_usd"]
            report.llm_priced_calls += 1
        if call.get("cost_usd") is None and not call.get("error"):
            report.unpriced_models.add(model)
        report.dropped_claims += call.get("dropped_claims") or 0
    if result.brief.kind == "llm":
        costs = [c["cost_usd"] for c in result.calls if c.get("cost_usd") is not None]
        store.put_brief(db, {
            "key": key, "kind": "llm", "language": lang, "model": model,
            "prompt_version": brief_mod.PROMPT_VERSION,
            "paper_ids": json.dumps(list(paper_ids)),
            "data": brief_mod.brief_to_json(result.brief),
            "input_tokens": sum(c.get("input_tokens") or 0 for c in result.calls),
            "output_tokens": sum(c.get("output_tokens") or 0 for c in result.calls),
            "cost_usd": sum(costs) if costs else None,
        }, now)


def write_briefs(db: Database, wanted: Iterable[tuple[tuple[Paper, ...], str]],
                 settings: Settings, now: datetime, report: RunReport, *,
                 call_model: bool = True) -> dict[tuple[tuple[str, ...], str], Brief]:
    """One brief per distinct (papers, language): from the cache, else (when ``call_model``)
    from the model in up to llm_concurrency threads (database writes stay on this thread),
    each request reserving its worst-case cost from the day's llm_budget_usd first. Every
    fallback's reason goes to report.brief_notes and the brief_fallbacks table, never to the
    reader; a setting the operator must fix also to report.operator_errors."""
    distinct = {(tuple(p.id for p in papers), lang): (papers, lang) for papers, lang in wanted}
    model = settings.llm_model
    if not model:
        return {k: brief_mod.extractive(list(papers)) for k, (papers, _) in distinct.items()}
    out: dict[tuple[tuple[str, ...], str], Brief] = {}
    todo = []
    for k, (papers, lang) in distinct.items():
        cached = store.get_brief(db, brief_mod.cache_key(k[0], lang, model))
        if cached:
            out[k] = brief_mod.brief_from_json(cached["data"])
            store.log_brief_hit(db, cached["key"], model, lang, now)
        else:
            todo.append((k, papers, lang))
    if todo and not call_model:
        out.update({k: brief_mod.extractive(list(p), note="dry run: no model calls "
                                            "(--with-briefs makes them)") for k, p, _ in todo})
        todo = []
    cap = settings.llm_budget_usd
    problem = _model_problem(settings) if todo else None
    if problem:
        report.operator_errors.append(problem)
        out.update({k: brief_mod.extractive(list(p), note=problem) for k, p, _ in todo})
        todo = []
    spent = store.llm_spend_since(db, now.replace(hour=0, minute=0, second=0,
                                                  microsecond=0)) if cap else 0.0
    budget = brief_mod.Budget(cap, spent)
    workers = max(1, settings.llm_concurrency)
    deadline = time.monotonic() + settings.llm_deadline
    with brief_mod.DaemonPool() as pool:
        for (k, _, lang), result in brief_mod.write_many(
                todo, pool, workers, model, settings.llm_api_base,
                min(settings.llm_timeout, settings.llm_deadline), deadline=deadline,
                max_tokens=settings.llm_max_tokens, budget=budget,
                price_per_call=settings.llm_price_per_call_usd):
            if result.brief.note == brief_mod.LATE:  # no call to record: it is still out
                out[k] = result.brief
                continue
            _record(db, brief_mod.cache_key(k[0], lang, model), lang, model, k[0], result,
                    report, now)
            if result.operator_error:
                report.operator_errors.append(result.operator_error)
            out[k] = result.brief
    _fallbacks(db, out, settings, now, report, budget, record=call_model)
    return out


def _model_problem(settings: Settings) -> str | None:
    """What the operator must fix before the model may be called at all."""
    model = settings.llm_model
    problem = brief_mod.check_model(model, settings.llm_api_base)
    if problem is None and settings.llm_budget_usd and not settings.llm_price_per_call_usd \
            and not brief_mod.known_price(model):
        problem = (f"model {model!r} has no price in litellm's list, so the daily budget "
                   "cannot cap it: set NEWSLETTER_LLM_PRICE_PER_CALL_USD or unset "
                   "NEWSLETTER_LLM_BUDGET_USD")
    return problem


def _fallbacks(db: Database, out: dict[tuple[tuple[str, ...], str], Brief],
               settings: Settings, now: datetime, report: RunReport,
               budget: brief_mod.Budget, record: bool) -> None:
    """Every brief that fell back to the digest: its reason to the run summary and (unless
    a dry run) to the brief_fallbacks table for `briefs stats`."""
    notes: dict[str, int] = {}
    for (ids, lang), b in out.items():
        if not b.note:
            continue
        notes[b.note] = notes.get(b.note, 0) + 1
        if record:
            store.log_brief_fallback(db, brief_mod.cache_key(ids, lang, settings.llm_model),
                                     settings.llm_model, lang, b.note, now)
    for note, n in notes.items():
        if note == brief_mod.LATE:
            note = (f"{note} (NEWSLETTER_LLM_DEADLINE, {settings.llm_deadline:g} s for all "
                    "briefs)")
        if note == brief_mod.BUDGET_REACHED:
            note = (f"daily LLM budget of ${settings.llm_budget_usd:g} reached "
                    f"(${budget.spent:.4f} spent today)")
        report.brief_notes.append(f"{note} - {n} of {len(out)} briefs fell back to the "
                                  "extractive digest")


# --- whole issues ------------------------------------------------------------------------


def plan_issue(db: Database, sub: Subscriber, settings: Settings, now: datetime,
               index: match.Index | None = None) -> Issue:
    """The issue a subscriber would get now, without its brief."""
    since = window_start(db, sub, settings, now)
    index = index or build_index(db, since)
    picked, more = select(sub, index, store.delivered_paper_ids(db, sub.email), since,
                          labels=store.labelled_papers(db, sub.email, sub.likes))
    return Issue(subscriber=sub, issue_date=issue_date_for(sub, now), matches=tuple(picked),
                 more=tuple(more))


def explain(db: Database, email: str, settings: Settings, now: datetime
            ) -> tuple[Issue, list[tuple[Paper, str]]]:
    """The issue EMAIL would get at ``now``, and the near misses strict matching rejected."""
    sub = store.get_subscriber(db, email)
    since = window_start(db, sub, settings, now)
    rejected: list[tuple[Paper, str]] = []
    delivered = store.delivered_paper_ids(db, email)
    picked, more = select(sub, build_index(db, since), delivered, since, rejected,
                          store.labelled_papers(db, sub.email, sub.likes))
    issue = Issue(subscriber=sub, issue_date=issue_date_for(sub, now), matches=tuple(picked),
                  more=tuple(more))
    shown = set(issue.paper_ids) | delivered  # in the issue through another filter, or sent
    return issue, [(p, why) for p, why in rejected if p.id not in shown]


def with_brief(issue: Issue, briefs: dict[tuple[tuple[str, ...], str], Brief]) -> Issue:
    papers = tuple(m.paper for m in issue.matches)
    if not papers:
        return issue
    key = (tuple(p.id for p in papers), issue.subscriber.language)
    return Issue(issue.subscriber, issue.issue_date, issue.matches, issue.more, briefs[key])


def preview(db: Database, email: str, settings: Settings, now: datetime) -> tuple[Issue, Any]:
    """The issue of ``now``'s day: the one a run already planned or sent for that day (same
    papers, same order), else the one a run would plan now."""
    sub = store.get_subscriber(db, email)
    recorded = store.get_delivery(db, email, issue_date_for(sub, now))
    if recorded is not None:
        issue = resume_issue(db, sub, recorded)
    else:
        issue = plan_issue(db, sub, settings, now)
    report = RunReport()
    briefs = write_briefs(db, [(tuple(m.paper for m in issue.matches), sub.language)]
                          if issue.matches else [], settings, now, report)
    issue = with_brief(issue, briefs)
    return issue, render.render(issue, settings)


def resume_issue(db: Database, sub: Subscriber, row: dict[str, Any],
                 skip_missing: bool = False) -> Issue:
    """Rebuild the issue a previous run planned but did not finish: same papers, same order.
    ``skip_missing``: leave out papers pruned since (for reading an old issue)."""
    ids = json.loads(row["paper_ids"] or "[]")
    papers = (store.get_papers(db, ids) if skip_missing
              else [store.get_paper(db, pid) for pid in ids])
    index = match.Index(papers, lambda expr: store.fts_search(db, expr, ids=ids))
    by_id = {m.paper.id: m for m in match.match_subscriber(sub, index)}
    matches = [by_id.get(p.id) or Match(p, 0.0, ("planned earlier",)) for p in papers]
    return Issue(subscriber=sub, issue_date=date.fromisoformat(row["issue_date"]),
                 matches=tuple(matches[: sub.max_papers]),
                 more=tuple(matches[sub.max_papers:]))


def run(db: Database, settings: Settings, now: datetime, *, send_all: bool = False,
        dry_run: bool = False, with_briefs: bool = False, only: str | None = None,
        do_fetch: bool = True,
        progress: Callable[[str], None] | None = None,
        sent: Callable[[RunLine], None] | None = None,
        planned: Callable[[int], None] = lambda total: None) -> RunReport:
    """The morning job. ``send_all`` ignores send hours and frequencies (never the one-issue-
    per-day rule); ``only`` runs for one subscriber; ``planned`` is told how many issues
    will be delivered, before the first; ``sent`` is told about each delivery. A dry run
    calls no model (briefs come from the cache or the digest) unless ``with_briefs``."""
    report = RunReport()
    if not dry_run:
        from newsletter.lists import roster

        send.refuse_unready(settings)
        report.expired = roster.expire_pending(db, now, settings.confirm_days,
                                                    outbox=settings.outbox)
    subs = ([store.get_subscriber(db, only)] if only
            else store.list_subscribers(db, status="active"))
    for sub in [s for s in subs if s.status != "active"]:
        report.lines.append(RunLine(sub.email, "skipped", 0, f"subscriber is {sub.status}"))
    subs = [s for s in subs if s.status == "active"]
    issues: list[Issue] = []
    fresh: list[Subscriber] = []
    for sub in subs:
        unfinished = store.unfinished_delivery(db, sub.email)
        if unfinished and not dry_run:
            issues.append(resume_issue(db, sub, unfinished))
            continue
        last = store.last_issue_date(db, sub.email)
        ok, why = schedule.due(sub, now, last)
        if not ok and send_all and why != "already sent today":
            ok = True  # --only picks the subscriber; only --all overrides the schedule
        if not ok:
            report.lines.append(RunLine(sub.email, "skipped", 0, why))
            continue
        fresh.append(sub)
    report.due = len(issues) + len(fresh)
    if do_fetch and fresh:  # nobody due, nothing fetched: the state stays as it was
        report.fetched = fetch(db, settings, now, progress)
    if fresh:
        earliest = min(window_start(db, s, settings, now) for s in fresh)
        index = build_index(db, earliest)
        issues += [plan_issue(db, s, settings, now, index) for s in fresh]
    if not issues:
        return report
    planned(len(issues))
    briefs = write_briefs(db, [(tuple(m.paper for m in i.matches), i.subscriber.language)
                               for i in issues if i.matches], settings, now, report,
                          call_model=not dry_run or with_briefs)
    with send.transport_for(settings) as transport:
        for issue in issues:
            line = _deliver(db, with_brief(issue, briefs), settings, now, transport, dry_run)
            report.lines.append(line)
            if sent:
                sent(line)
    return report


def _deliver(db: Database, issue: Issue, settings: Settings, now: datetime,
             transport: send.Outbox | send.SMTPSender, dry_run: bool) -> RunLine:
    sub = issue.subscriber
    count = len(issue.matches) + len(issue.more)
    if not issue.matches and not settings.send_empty:
        return RunLine(sub.email, "skipped", 0, "no new papers")
    rendered = render.render(issue, settings)
    msg = render.build_message(issue, rendered, settings, now)
    if dry_run:
        return RunLine(sub.email, "would-send", count, rendered.subject)
    delivery = store.begin_delivery(db, sub.email, issue.issue_date, msg["Message-ID"],
                                    issue.paper_ids, now)
    if delivery["status"] == "sent":
        return RunLine(sub.email, "skipped", 0, "already sent today")
    if delivery["status"] == "failed":  # a 5xx answer: sending again would only repeat it
        return RunLine(sub.email, "skipped", 0, "failed earlier, not retried ("
                       f"{delivery['error']}) - 'newsletter deliveries retry' sends it again")
    if delivery["message_id"] != msg["Message-ID"]:
        msg.replace_header("Message-ID", delivery["message_id"])
    store.mark_sending(db, delivery["id"])
    try:
        where = transport.send(msg, sub.email, issue.issue_date.isoformat(), rendered.html)
    except SendFailed as e:
        status = "deferred" if e.temporary else "failed"
        store.finish_delivery(db, delivery["id"], status, error=str(e), now=now)
        return RunLine(sub.email, status, count, str(e))
    store.finish_delivery(db, delivery["id"], "sent", path=where, now=now)
    return RunLine(sub.email, "sent", count, where)
