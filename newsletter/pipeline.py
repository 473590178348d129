"""The morning job, stage by stage: fetch -> match -> brief -> render -> send.

The only module that imports every stage. Plain functions taking their inputs as arguments.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import hashlib
import json
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlite_utils import Database

from newsletter import brief as brief_mod
from newsletter import match, render, send, sources, store
from newsletter.config import Settings
from newsletter.errors import ConfigError, SendFailed
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


def _active(db: Database) -> Iterator[Subscriber]:
    """Active subscribers, streamed a batch at a time."""
    for batch in store.subscriber_batches(db, status="active"):
        for _, sub in batch:
            yield sub


def fetched_this_cycle(state: dict[str, Any], now: datetime, settings: Settings,
                       plan_key: str | None) -> datetime | None:
    """The last arXiv announcement, when this source was last fetched in full after it (and,
    for arXiv, for the same filters): then the store already has this cycle's papers."""
    last = state.get("last_success")
    if not last or state.get("retry_from") or state.get("last_status") == "partial":
        return None
    announced = schedule.last_announcement(now, schedule.parse_holidays(
        settings.arxiv_holidays))
    if datetime.fromisoformat(last) < announced:
        return None
    if plan_key is not None and state.get("plan_key") != plan_key:
        return None
    return announced


def fetch(db: Database, settings: Settings, now: datetime,
          progress: Callable[[str], None] | None = None, once_per_cycle: bool = False
          ) -> list[FetchLine]:
    """Fetch every source into the store. ``once_per_cycle`` (the hourly run) skips a
    source already fetched since arXiv's last announcement: later runs reuse the store."""
    lines = []
    budget_end = time.monotonic() + settings.fetch_budget
    for name in source_names(db, settings):
        state = store.source_state(db, name)
        planned = sources.arxiv_plan(_active(db)) if name == "arxiv" else None
        plan_key = sources.plan_key(planned) if planned is not None else None
        if once_per_cycle:
            announced = fetched_this_cycle(state, now, settings, plan_key)
            if announced is not None:
                lines.append(FetchLine(name, note="fetched after arXiv's announcement of "
                                       f"{announced:%Y-%m-%d %H:%M %Z} already; using the "
                                       "store"))
                continue
        if progress:
            progress(name)
        started = time.monotonic()
        last = state.get("retry_from") or state.get("last_success")
        since = (datetime.fromisoformat(last) if last
                 else now - timedelta(days=settings.first_issue_days))
        feed = state if state.get("kind") == "feed" else None
        result = _fetch_within(budget_end, settings, name, state, since, planned, feed, now)
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
            fields["plan_key"] = plan_key
        store.save_source_state(db, name, **fields)
        lines.append(FetchLine(name, new, updated, result.requests, result.error,
                               result.not_modified, result.partial, note,
                               seconds=round(time.monotonic() - started, 3)))
    return lines


def _fetch_within(budget_end: float, settings: Settings, name: str, state: dict[str, Any],
                  since: datetime, planned: sources.ArxivPlan | None,
                  feed: dict[str, Any] | None, now: datetime) -> SourceResult:
    """One source, fetched on a daemon thread so that the run's fetch budget holds whatever
    the source does: a source still running when the budget is spent is reported failed
    (its thread is abandoned; sources never touch the database)."""
    left = budget_end - time.monotonic()
    if left <= 0:
        return SourceResult(name=name, error=f"not fetched: the fetch budget of "
                            f"{settings.fetch_budget:g} s was used up (NEWSLETTER_FETCH_BUDGET)")
    box: list[SourceResult] = []
    worker = threading.Thread(
        target=lambda: box.append(sources.fetch(name, settings, state, since, (), feed,
                                                until=now, planned=planned,
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
    fallback's reason goes to report.fallback_counts and the brief_fallbacks table, never to the
    reader; a setting the operator must fix also to report.operator_errors."""
    distinct = {(tuple(p.id for p in papers), lang): (papers, lang) for papers, lang in wanted}
    model = settings.llm_model
    if not model:
        return {k: brief_mod.extractive(list(papers)) for k, (papers, _) in distinct.items()}
    out: dict[tuple[tuple[str, ...], str], Brief] = {}
    todo = []
    keys = {k: brief_mod.cache_key(k[0], k[1], model) for k in distinct}
    cache = store.get_briefs(db, list(keys.values()))
    hits = []
    for k, (papers, lang) in distinct.items():
        cached = cache.get(keys[k])
        if cached:
            out[k] = brief_mod.brief_from_json(cached["data"])
            hits.append((cached["key"], model, lang))
        else:
            todo.append((k, papers, lang))
    if todo and not call_model:
        out.update({k: brief_mod.extractive(list(p), note="dry run: no model calls "
                                            "(--with-briefs makes them)") for k, p, _ in todo})
        todo = []
    cap = settings.llm_budget_usd
    spent = store.llm_spend_since(db, now.replace(hour=0, minute=0, second=0,
                                                  microsecond=0)) if cap and todo else 0.0
    budget = brief_mod.Budget(cap, spent)
    if todo and budget.exhausted():
        # the day's budget is spent (by calls the model answered): no request can start,
        # so neither the model nor litellm (seconds to import) is asked
        out.update({k: brief_mod.extractive(list(p), note=brief_mod.BUDGET_REACHED)
                    for k, p, _ in todo})
        todo = []
    problem = _model_problem(settings, report) if todo else None
    if problem:
        if problem not in report.operator_errors:
            report.operator_errors.append(problem)
        out.update({k: brief_mod.extractive(list(p), note=problem) for k, p, _ in todo})
        todo = []
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
    _fallbacks(db, out, settings, now, report, budget, record=call_model, hits=hits)
    return out


def _model_problem(settings: Settings, report: RunReport | None = None) -> str | None:
    """What the operator must fix before the model may be called at all (asked once per
    run: ``report`` remembers the answer, as a run writes its briefs a batch at a time)."""
    model = settings.llm_model
    key = (model, settings.llm_api_base, settings.llm_budget_usd,
           settings.llm_price_per_call_usd)
    if report is not None and key in report.checked_models:
        return report.checked_models[key]
    problem = brief_mod.check_model(model, settings.llm_api_base)
    if problem is None and settings.llm_budget_usd and not settings.llm_price_per_call_usd \
            and not brief_mod.known_price(model):
        problem = (f"model {model!r} has no price in litellm's list, so the daily budget "
                   "cannot cap it: set NEWSLETTER_LLM_PRICE_PER_CALL_USD or unset "
                   "NEWSLETTER_LLM_BUDGET_USD")
    if report is not None:
        report.checked_models[key] = problem
    return problem


def _fallbacks(db: Database, out: dict[tuple[tuple[str, ...], str], Brief],
               settings: Settings, now: datetime, report: RunReport,
               budget: brief_mod.Budget, record: bool,
               hits: Sequence[tuple[str, str, str]] = ()) -> None:
    """Every brief that fell back to the digest: its reason to the run summary and (unless
    a dry run) to the brief_fallbacks table for `briefs stats`; ``hits`` (served from the
    cache) to the brief_hits table, in the same transaction."""
    notes: dict[str, int] = {}
    fallbacks = []
    for (ids, lang), b in out.items():
        if not b.note:
            continue
        notes[b.note] = notes.get(b.note, 0) + 1
        if record:
            fallbacks.append((brief_mod.cache_key(ids, lang, settings.llm_model),
                              settings.llm_model, lang, b.note))
    store.log_brief_uses(db, hits, fallbacks, now)
    for note, n in notes.items():
        said = note
        if note == brief_mod.LATE:
            said = (f"{note} (NEWSLETTER_LLM_DEADLINE, {settings.llm_deadline:g} s for all "
                    "briefs)")
        if note == brief_mod.BUDGET_REACHED:
            said = (f"daily LLM budget of ${settings.llm_budget_usd:g} reached "
                    f"(${budget.spent:.4f} spent today)")
        report.count_fallbacks(note, said, n)
    report.briefs_written += len(out)


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


# --- the morning run: streamed, a batch of subscribers at a time ---------------------------

BATCH = 250  # subscribers planned (and their deliveries begun) together
FIRST_BATCH = 20  # a small first batch: the first emails leave within seconds
IN_FLIGHT = 1  # rendered batches queued for the sending threads, at most (memory)


def in_shard(email: str, shard: tuple[int, int] | None) -> bool:
    """Whether EMAIL belongs to shard K of N (1-based): a stable hash of the address, the
    same on every machine and in every run."""
    if shard is None:
        return True
    k, n = shard
    digest = hashlib.sha256(email.strip().lower().encode()).digest()
    return int.from_bytes(digest[:8], "big") % n == k - 1


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), with 1 <= K <= N."""
    k, sep, n = text.partition("/")
    if not sep or not k.strip().isdigit() or not n.strip().isdigit() or \
            not 1 <= int(k) <= int(n):
        raise ConfigError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. 2/4")
    return int(k), int(n)


# Rendering runs in worker processes forked when the first issues are ready (after the
# run's index is built, so they have its papers); they get the settings and the run's clock
# once, then jobs: an issue (its indexed papers as positions, see _pack) and a Message-ID.
_WORKER: tuple[Settings, datetime, bool] | None = None
_PAPERS: list[Paper] = []  # the index's papers, as the workers were forked with them

PackedMatch = tuple[Paper | int, float, tuple[str, ...], tuple[str, ...], float | None,
                    str | None]
Job = tuple[Subscriber, date, Brief | None, tuple[PackedMatch, ...], tuple[PackedMatch, ...],
            str | None]


def _worker_init(settings: Settings, now: datetime, keep_html: bool) -> None:
    global _WORKER
    _WORKER = (settings, now, keep_html)


def _pack(issue: Issue, message_id: str | None, where: dict[int, int]) -> Job:
    """A job for a worker: each paper the workers were forked with goes as its position in
    the index (a few bytes, not the paper's title, authors and abstract)."""
    def packed(m: Match) -> PackedMatch:
        n = where.get(id(m.paper))
        return (n if n is not None and _PAPERS[n] is m.paper else m.paper, m.score,
                m.reasons, m.followed_authors, m.learned, m.like)
    return (issue.subscriber, issue.issue_date, issue.brief,
            tuple(packed(m) for m in issue.matches), tuple(packed(m) for m in issue.more),
            message_id)


def _unpack(job: Job) -> tuple[Issue, str | None]:
    sub, issue_date, brief, matches, more, message_id = job

    def match_(m: PackedMatch) -> Match:
        paper, score, reasons, followed, learned, like = m
        return Match(_PAPERS[paper] if isinstance(paper, int) else paper, score, reasons,
                     followed, learned, like)
    return Issue(sub, issue_date, tuple(match_(m) for m in matches),
                 tuple(match_(m) for m in more), brief), message_id


def _render_job(job: tuple[Issue, str | None]) -> tuple[str, bytes, str]:
    """(subject, the message as it goes out - CRLF, not yet DKIM-signed: the transport
    signs -, the HTML part when the outbox needs it)."""
    assert _WORKER is not None
    settings, now, keep_html = _WORKER
    issue, message_id = job
    rendered = render.render(issue, settings)
    data = render.message_bytes(issue, rendered, settings, now, message_id)
    return rendered.subject, data, rendered.html if keep_html else ""


def _render_chunk(jobs: list[Job]) -> list[tuple[str, bytes, str]]:
    return [_render_job(_unpack(job)) for job in jobs]


# jobs a worker takes at once (one message to it, one back): fewer results for the pool's
# threads to pass on (at 10,000 readers 325-331 emails/s and 1.5 ms of the run's CPU per
# email, against 309-316 and 1.7 ms with 4)
RENDER_CHUNK = 16
RENDER_AHEAD = 128  # jobs given to the workers and not yet taken by the sender, at most


class _Chunk:
    """Jobs for one worker call; ``result`` once given to the pool."""

    __slots__ = ("jobs", "result")

    def __init__(self, jobs: list[Job]):
        self.jobs = jobs
        self.result: Any = None


def render_workers(settings: Settings) -> int:
    return settings.render_workers or (os.cpu_count() or 1)


class _Renderer:
    """Renders jobs in ``workers`` processes (or here, when 1), keeping their order. The
    processes are forked on the first jobs, with the papers ``papers()`` gives then.

    At most RENDER_AHEAD jobs are with the workers or rendered and not yet taken, across
    all batches: when sending is slower than rendering, the rest of a batch waits as jobs
    (a few hundred bytes each), not as rendered messages (about 50 KB each). Given to the
    pool all at once, three batches of rendered messages, 20 MB and more, sat in the run's
    process for most of a 20,000-reader run."""

    def __init__(self, settings: Settings, now: datetime, keep_html: bool, workers: int,
                 papers: Callable[[], list[Paper]] = list):
        _worker_init(settings, now, keep_html)
        self.args = (settings, now, keep_html)
        self.workers = workers
        self.papers = papers
        self.pool: Any = None
        self.where: dict[int, int] = {}
        self._lock = threading.Lock()
        self._waiting: collections.deque[_Chunk] = collections.deque()  # not yet given
        self._ahead = 0  # jobs given to the pool and not yet taken

    def map(self, jobs: list[tuple[Issue, str | None]]) -> Iterator[tuple[str, bytes, str]]:
        if self.workers <= 1:
            return map(_render_job, jobs)
        if self.pool is None:
            global _PAPERS
            _PAPERS = self.papers()
            self.where = {id(p): n for n, p in enumerate(_PAPERS)}
            # what exists now (the index, imported modules) stays out of the garbage
            # collections of the workers and of this process until the run ends: a
            # collection writes to every object it visits, and so copies every page the
            # processes share (gc.freeze's documented use before fork)
            gc.freeze()
            self.pool = multiprocessing.get_context("fork").Pool(
                self.workers, _worker_init, self.args)
        packed = [_pack(issue, message_id, self.where) for issue, message_id in jobs]
        chunks = collections.deque(_Chunk(packed[i:i + RENDER_CHUNK])
                                   for i in range(0, len(packed), RENDER_CHUNK))
        with self._lock:
            self._waiting.extend(chunks)
        self._give()
        return self._taken(chunks)

    def _give(self, needed: _Chunk | None = None) -> None:
        """Give waiting chunks to the pool, oldest first, while fewer than RENDER_AHEAD
        jobs are out; and up to ``needed`` whatever is out (a batch its consumer dropped
        must not hold up the next)."""
        with self._lock:
            while self._waiting and (
                    self._ahead + len(self._waiting[0].jobs) <= RENDER_AHEAD
                    or (needed is not None and needed.result is None)):
                chunk = self._waiting.popleft()
                chunk.result = self.pool.apply_async(_render_chunk, (chunk.jobs,))
                self._ahead += len(chunk.jobs)

    def _taken(self, chunks: collections.deque[_Chunk]
               ) -> Iterator[tuple[str, bytes, str]]:
        while chunks:
            chunk = chunks.popleft()
            self._give(chunk)
            rendered = chunk.result.get()
            chunk.result, chunk.jobs = None, []  # nothing kept once taken
            with self._lock:
                self._ahead -= len(rendered)
            self._give()
            yield from rendered

    def close(self) -> None:
        global _PAPERS
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            gc.unfreeze()
            _PAPERS = []  # the run's papers are not kept past it


def _due(db: Database, batch: list[tuple[int, Subscriber]], settings: Settings,
         now: datetime, send_all: bool, dry_run: bool, report: RunReport,
         index: Callable[[], match.Index]) -> list[tuple[int, Issue, dict[str, Any] | None]]:
    """The batch's issues: (subscriber id, issue, the unfinished delivery it resumes)."""
    ids = [sid for sid, _ in batch]
    history = store.histories(db, ids)
    told = store.with_feedback(db, ids)
    out: list[tuple[int, Issue, dict[str, Any] | None]] = []
    for sid, sub in batch:
        h = history[sid]
        if h.unfinished and not dry_run:
            out.append((sid, resume_issue(db, sub, h.unfinished), h.unfinished))
            continue
        ok, why = schedule.due(sub, now, h.last_issue_date)
        if not ok and send_all and why != "already sent today":
            ok = True  # --only picks the subscriber; only --all overrides the schedule
        if not ok:
            report.add(RunLine(sub.email, "skipped", 0, why))
            continue
        since = h.last_sent_at or now - timedelta(days=settings.first_issue_days)
        labels = (store.labelled_papers(db, sub.email, sub.likes)
                  if sub.likes or sid in told else ([], []))
        picked, more = select(sub, index(), set(h.delivered), since, labels=labels)
        out.append((sid, Issue(subscriber=sub, issue_date=issue_date_for(sub, now),
                               matches=tuple(picked), more=tuple(more)), None))
    report.due += len(out)
    return out


def run(db: Database, settings: Settings, now: datetime, *, send_all: bool = False,
        dry_run: bool = False, with_briefs: bool = False, only: str | None = None,
        do_fetch: bool = True,
        progress: Callable[[str], None] | None = None,
        sent: Callable[[RunLine], None] | None = None,
        shard: tuple[int, int] | None = None,
        planned: Callable[[int], None] = lambda total: None) -> RunReport:
    """The morning job. ``send_all`` ignores send hours and frequencies (never the one-issue-
    per-day rule); ``only`` runs for one subscriber; ``shard`` (K, N) only for the
    subscribers of shard K; ``planned`` is told, before the first delivery, how many
    subscribers the run considers (an upper bound on the deliveries: the run is streamed and
    does not know yet who is due); ``sent`` is told about each delivery (from a sending
    thread).

    Streamed: subscribers are planned a batch at a time, their briefs written, their pending
    deliveries recorded, their emails rendered in worker processes and handed to
    ``smtp_connections`` sending threads while the next batch is planned. A dry run calls
    no model (briefs come from the cache or the digest) unless ``with_briefs``."""
    report = RunReport()
    if not dry_run:
        from newsletter.lists import roster

        send.refuse_unready(settings)
        report.expired = roster.expire_pending(db, now, settings.confirm_days,
                                                    outbox=settings.outbox)
    batches = _batches(db, only, report)
    built: list[match.Index] = []

    def index() -> match.Index:
        """Fetched and built when the first subscriber due needs new papers: nobody due,
        nothing fetched (the state stays as it was)."""
        if not built:
            if do_fetch:
                report.fetched = fetch(db, settings, now, progress, once_per_cycle=True)
            earliest = store.earliest_last_sent(db)
            floor = now - timedelta(days=settings.first_issue_days)
            built.append(build_index(db, min(earliest, floor) if earliest else floor))
        return built[0]

    told: list[int] = []

    def tell_planned() -> None:  # once, after the fetch, before the first delivery
        if not told:
            told.append(_considered(db, only, shard))
            planned(told[0])

    workers = render_workers(settings) if not only else 1
    renderer = _Renderer(settings, now, not settings.smtp_url, workers,
                         lambda: built[0].papers if built else [])
    # every reader's issue from the same templates, read once (render.frozen)
    with render.frozen():
        try:
            if dry_run:
                for batch in batches:
                    _dry_batch(db, [b for b in batch if in_shard(b[1].email, shard)], settings,
                               now, send_all, only, report, index, renderer, sent, with_briefs,
                               tell_planned)
                return report
            with _Sending(db, settings, now, report, sent) as sending:
                for batch in batches:
                    ready = _plan_batch(db, [b for b in batch if in_shard(b[1].email, shard)],
                                        settings, now, send_all, only, report, index, sending)
                    if ready:  # rendered and sent while the next batch is planned
                        tell_planned()
                        sending.hand_over(renderer_jobs(renderer, ready))
        finally:
            renderer.close()
    return report


def _batches(db: Database, only: str | None, report: RunReport
             ) -> Iterable[list[tuple[int, Subscriber]]]:
    """The run's subscribers, a batch at a time; ``only``: that one, if active."""
    if not only:
        return store.subscriber_batches(db, status="active", size=BATCH, first=FIRST_BATCH)
    sub = store.get_subscriber(db, only)
    if sub.status != "active":
        report.add(RunLine(sub.email, "skipped", 0, f"subscriber is {sub.status}"))
        return []
    return [[(store.subscriber_id(db, only), sub)]]


def _considered(db: Database, only: str | None, shard: tuple[int, int] | None) -> int:
    """How many subscribers the run looks at (the progress bar's length)."""
    if only:
        return 1
    return sum(1 for email in store.active_emails(db) if in_shard(email, shard))


def renderer_jobs(renderer: _Renderer, planned: list[tuple[Issue, dict[str, Any]]]
                  ) -> Iterator[tuple[Issue, dict[str, Any], tuple[str, bytes, str]]]:
    results = renderer.map([(issue, row["message_id"]) for issue, row in planned])
    return ((issue, row, r) for (issue, row), r in zip(planned, results, strict=True))


def _briefed(db: Database, issues: list[Issue], settings: Settings, now: datetime,
             report: RunReport, call_model: bool = True) -> list[Issue]:
    briefs = write_briefs(db, [(tuple(m.paper for m in i.matches), i.subscriber.language)
                               for i in issues if i.matches], settings, now, report,
                          call_model=call_model)
    return [with_brief(i, briefs) for i in issues]


def _dry_batch(db: Database, batch: list[tuple[int, Subscriber]], settings: Settings,
               now: datetime, send_all: bool, only: str | None, report: RunReport,
               index: Callable[[], match.Index], renderer: _Renderer,
               sent: Callable[[RunLine], None] | None, with_briefs: bool,
               tell_planned: Callable[[], None]) -> None:
    due = _due(db, batch, settings, now, send_all, True, report, index)
    issues = [i for _, i, _ in due if i.matches or settings.send_empty]
    for _, i, _ in due:
        if not (i.matches or settings.send_empty):
            report.add(RunLine(i.subscriber.email, "skipped", 0, "no new papers"))
    issues = _briefed(db, issues, settings, now, report, call_model=with_briefs)
    if issues:
        tell_planned()
    for issue, (subject, _, _) in zip(issues, renderer.map([(i, None) for i in issues]),
                                      strict=True):
        line = RunLine(issue.subscriber.email, "would-send",
                       len(issue.matches) + len(issue.more), subject)
        report.add(line)
        if sent:
            sent(line)


def _plan_batch(db: Database, batch: list[tuple[int, Subscriber]], settings: Settings,
                now: datetime, send_all: bool, only: str | None, report: RunReport,
                index: Callable[[], match.Index], sending: _Sending
                ) -> list[tuple[Issue, dict[str, Any]]]:
    """Plan the batch's issues, write their briefs and record their pending deliveries
    (one transaction); returns (issue, delivery row) for those to send."""
    due = _due(db, batch, settings, now, send_all, False, report, index)
    keep: list[tuple[int, Issue, dict[str, Any] | None]] = []
    for sid, issue, row in due:
        if not issue.matches and not settings.send_empty and row is None:
            report.add(RunLine(issue.subscriber.email, "skipped", 0, "no new papers"))
        elif not sending.quota_left():
            report.add(RunLine(issue.subscriber.email, "skipped", 0, sending.over_quota))
        else:
            keep.append((sid, issue, row))
    issues = _briefed(db, [i for _, i, _ in keep], settings, now, report)
    begun = store.begin_deliveries(db, [
        (sid, i.issue_date, render.message_id(i.subscriber.email, i.issue_date, settings),
         i.paper_ids)
        for (sid, _, row), i in zip(keep, issues, strict=True) if row is None], now)
    out = []
    for (sid, _, row), issue in zip(keep, issues, strict=True):
        delivery = row or begun[sid]
        if delivery["status"] == "sent":
            report.add(RunLine(issue.subscriber.email, "skipped", 0, "already sent today"))
            continue
        if delivery["status"] == "failed":  # a 5xx answer: sending again would repeat it
            report.add(RunLine(issue.subscriber.email, "skipped", 0, "failed earlier, not "
                               f"retried ({delivery['error']}) - 'newsletter deliveries "
                               "retry' sends it again"))
            continue
        out.append((issue, delivery))
    return out


class _Sending:
    """The sending side of a run: ``smtp_connections`` threads hand messages to the server
    and tell one recorder thread (its own database connection: one writer, no waiting on
    each other's locks) each step; the recorder writes whatever steps have queued up in one
    transaction (a group commit), in order: sending, then sent | deferred | failed. The
    daily quota (``smtp_daily_limit``) is counted over the UTC day."""

    def __init__(self, db: Database, settings: Settings, now: datetime, report: RunReport,
                 sent: Callable[[RunLine], None] | None):
        self.path = store.db_path(db)
        self.settings, self.now, self.report, self.sent = settings, now, report, sent
        limit = settings.smtp_daily_limit
        day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.quota = limit - store.sent_since(db, day) if limit else None
        self.over_quota = (f"daily sending limit of {limit} reached - goes out with the next "
                           "run after midnight UTC")
        pacer = send.Pacer(settings.smtp_rate)
        self.dispatcher = send.Dispatcher(
            lambda: send.transport_for(settings, pacer),
            settings.smtp_connections if settings.smtp_url else 1,
            self._before, self._after, depth=4 * max(1, settings.smtp_connections))

        self.batches: queue.Queue[Iterator[Any] | None] = queue.Queue(maxsize=IN_FLIGHT)
        self.feeder = threading.Thread(target=self._feed, name="feeder", daemon=True)
        self.feed_error: BaseException | None = None
        self.steps: queue.Queue[tuple[int, str, str | None, str | None, RunLine | None]
                                | None] = queue.Queue()
        self.recorder = threading.Thread(target=self._record, name="recorder", daemon=True)
        self.record_error: BaseException | None = None

    def quota_left(self) -> bool:
        if self.quota is None:
            return True
        if self.quota <= 0:
            return False
        self.quota -= 1
        return True

    def __enter__(self) -> _Sending:
        self.started = False
        return self

    def _start(self) -> None:
        """The threads start with the first batch to send, after the render workers were
        forked (a fork copies only the forking thread; none other is running yet)."""
        self.started = True
        self.recorder.start()
        self.dispatcher.__enter__()
        self.feeder.start()

    def __exit__(self, *exc: Any) -> None:
        if not self.started:  # nothing was handed over
            return
        if exc[1] is not None:
            self.dispatcher.stop.set()
        try:
            self._put(None)
            self.feeder.join()
            self.dispatcher.__exit__(*exc)
        finally:  # what the server accepted is recorded before the run ends, whatever else
            self.steps.put(None)
            self.recorder.join()
        if exc[1] is None:
            for error in (self.feed_error, self.record_error):
                if error is not None:
                    raise error

    def _put(self, item: Iterator[Any] | None) -> None:
        while self.feeder.is_alive():
            try:
                self.batches.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        if self.feed_error is not None and item is not None:
            raise self.feed_error

    def _feed(self) -> None:
        """Hands rendered batches to the dispatcher, in order, while the run plans on."""
        try:
            while True:
                rendered = self.batches.get()
                if rendered is None:
                    return
                self._hand(rendered)
        except BaseException as e:  # noqa: BLE001  (raised again on the run's thread)
            self.feed_error = e
            while self.batches.get() is not None:  # let the run's thread finish
                pass

    def _record(self) -> None:
        """The recorder thread: every step queued so far, in one transaction, until the
        end; then closes its connection."""
        db = store.open_db(self.path)
        try:
            done = False
            while not done:
                steps = [self.steps.get()]
                while True:
                    try:
                        steps.append(self.steps.get_nowait())
                    except queue.Empty:
                        break
                done = None in steps
                todo = [s for s in steps if s is not None]
                if self.record_error is None and todo:
                    self._write(db, todo)
        finally:
            db.close()

    def _write(self, db: Database, todo: list[tuple[int, str, str | None, str | None,
                                                  RunLine | None]]) -> None:
        try:
            store.record_progress(db, [step[:4] for step in todo], now=self.now)
        except BaseException as e:  # noqa: BLE001  (raised again on the run's thread)
            self.record_error = e
            self.dispatcher.stop.set()
            return
        for *_, line in todo:
            if line is not None:
                self.report.add(line)
                if self.sent:
                    self.sent(line)

    def hand_over(self, rendered: Iterator[tuple[Issue, dict[str, Any],
                                                 tuple[str, bytes, str]]]) -> None:
        """Queue a batch being rendered; waits while IN_FLIGHT batches are queued."""
        if not self.started:
            self._start()
        if self.record_error is not None:
            raise self.record_error
        self._put(rendered)

    def _hand(self, rendered: Iterator[tuple[Issue, dict[str, Any],
                                             tuple[str, bytes, str]]]) -> None:
        for issue, row, (_, data, html) in rendered:
            self.dispatcher.put(send.Outgoing(
                (row["id"], len(issue.matches) + len(issue.more)), issue.subscriber.email,
                issue.issue_date.isoformat(), data, html))

    def _before(self, item: send.Outgoing) -> None:
        self.steps.put((item.key[0], "sending", None, None, None))

    def _after(self, item: send.Outgoing, where: str | None,
               error: SendFailed | None) -> None:
        delivery_id, count = item.key
        if error is None:
            line = RunLine(item.email, "sent", count, where or "")
            self.steps.put((delivery_id, "sent", None, where, line))
        else:
            status = "deferred" if error.temporary else "failed"
            line = RunLine(item.email, status, count, str(error))
            self.steps.put((delivery_id, status, str(error), None, line))
