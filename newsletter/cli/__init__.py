"""The command line: parse, call one library function, print. Nothing heavy at import."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import click

from newsletter.cli import (
    briefs,
    deliveries,
    doctor,
    feedback,
    papers,
    preview,
    serve,
    sources,
    state,
    subscribers,
    unsubscribes,
)
from newsletter.cli._common import (
    CONTEXT,
    ErrorsAsMessages,
    get_db,
    get_now,
    get_settings,
    json_option,
    load_config,
    settings_options,
)
from newsletter.cli.output import JSON_HELP, Console, verbosity_options
from newsletter.config import SETTINGS, Settings, display_value, validate

SKIPPED_SHOWN = 50  # subscribers skipped listed one by one in the summary (-v: all)


@click.group(cls=ErrorsAsMessages, context_settings=CONTEXT)
@click.version_option(package_name="academichub-newsletter")
@click.option("--config", envvar="NEWSLETTER_CONFIG", show_envvar=True, is_eager=True,
              callback=load_config, expose_value=False, metavar="PATH",
              help="Settings file (TOML); default ./newsletter.toml if present.")
@settings_options
@click.pass_context
def cli(ctx: click.Context, **values: Any) -> None:
    """AcademicHub newsletter: each morning, the new papers that matter to each researcher,
    led by a cross-field brief.

    Every option can also be set with its NEWSLETTER_* environment variable or in
    newsletter.toml (secrets only in the environment).

    \b
    Example:
        newsletter subscribers add ada@example.org --author "Taiming Lu"
        newsletter run --all
    """
    ctx.obj = validate(Settings(**values))


# --- the morning job ---------------------------------------------------------------------


def _print_fetch(out: Any, lines: list[Any]) -> None:
    for f in lines:
        requests = f" ({f.requests} requests)" if f.requests else ""
        if f.error and not f.partial:
            out.warn(f"  {f.source}: FAILED - {f.error}")
            continue
        if f.not_modified:
            out.line(f"  {f.source}: not modified{requests}", err=True)
        else:
            out.line(f"  {f.source}: {f.new} new, {f.updated} updated{requests}", err=True)
        if f.partial:
            out.warn(f"  {f.source}: PARTIAL - {f.error}; the window will be fetched "
                     "again next run")
        if f.note:
            out.line(f"  {f.source}: {f.note}", err=True)


@contextmanager
def _fetch_progress(out: Any, ctx: click.Context) -> Iterator[Callable[[str], None]]:
    """A bar over the sources on a terminal; otherwise a "Fetching X..." line each."""
    from newsletter import pipeline

    if not out.interactive:
        yield lambda name: out.line(f"Fetching {name}...", err=True)
        return
    names = pipeline.source_names(get_db(ctx), get_settings(ctx))
    with out.progress(len(names), "Fetching") as bar:
        done = iter(range(len(names) + 1))
        yield lambda name: bar.to(next(done), name)
        bar.to(len(names))


@cli.command()
@click.option("--once-per-cycle", is_flag=True,
              help="Skip sources already fetched since arXiv's last announcement (as the "
                   "hourly run does); by default every source is asked.")
@json_option(JSON_HELP)
@verbosity_options
@click.pass_context
def fetch(ctx: click.Context, once_per_cycle: bool, as_json: bool, quiet: bool,
          verbose: bool) -> None:
    """Fetch new papers from the configured sources into the database.

    Exits non-zero when every source failed.

    \b
    Example:
        NEWSLETTER_SOURCES=sample newsletter fetch
        newsletter fetch --json | jq '.sources[] | select(.status == "failed")'
    """
    from newsletter import pipeline
    from newsletter.ops.report import fetch_counts, fetch_record

    out = Console(as_json, quiet, verbose)
    settings = get_settings(ctx)
    started, clock = get_now(), time.monotonic()
    with _fetch_progress(out, ctx) as progress:
        lines = pipeline.fetch(get_db(ctx), settings, started, progress=progress,
                               once_per_cycle=once_per_cycle)
    _print_fetch(out, lines)
    c = fetch_counts(lines)
    failed = [f.source for f in lines if f.failed]
    out.result(f"{c['new']} new papers ({c['updated']} updated) from {c['sources'] - c['failed']}"
               f" of {c['sources']} sources, {c['requests']} requests"
               + (f"; failed: {', '.join(failed)}" if failed else ""))
    out.document({"started": started.isoformat(timespec="seconds"),
                  "seconds": round(time.monotonic() - clock, 3), "ok": len(failed) < len(lines)
                  or not lines, "counts": c, "sources": [fetch_record(f) for f in lines]})
    if lines and len(failed) == len(lines):
        raise click.ClickException("every source failed - see the reasons above")


@cli.command(name="match")
@click.argument("email")
@click.option("--date", "on", type=click.DateTime(["%Y-%m-%d"]),
              help="The issue of this day (at the subscriber's send hour); default now.")
@click.option("--explain", is_flag=True,
              help="Show which filter matched each paper, its score, and near misses.")
@json_option("Print JSON.")
@click.pass_context
def match_cmd(ctx: click.Context, email: str, on: datetime | None, explain: bool,
              as_json: bool) -> None:
    """Print the papers EMAIL's issue would hold, best first; records nothing.

    \b
    Example:
        newsletter match ada@example.org --explain
    """
    from newsletter import pipeline, store

    now = get_now()
    if on:
        sub = store.get_subscriber(get_db(ctx), email)
        now = on.replace(hour=sub.send_hour, tzinfo=ZoneInfo(sub.timezone))
    issue, rejected = pipeline.explain(get_db(ctx), email, get_settings(ctx), now)
    rows: list[dict[str, Any]] = [
        {"n": n, "id": m.paper.id, "title": m.paper.title, "badge": m.paper.badge,
         "score": m.score, "reasons": list(m.reasons), "in_issue": n <= len(issue.matches),
         "learned": m.learned, "like": m.like}
        for n, m in enumerate(issue.matches + issue.more, 1)]
    if as_json:
        click.echo(json.dumps({"issue_date": issue.issue_date.isoformat(), "papers": rows,
                               "rejected": [{"id": p.id, "why": why} for p, why in rejected]},
                              indent=2, ensure_ascii=False))
        return
    for row in rows:
        marker = "" if row["in_issue"] else " (more matches)"
        click.echo(f"{row['n']:02d}. {row['title']} [{row['badge']}]{marker}")
        if explain:
            click.echo(f"    score {row['score']:.2f}: {'; '.join(row['reasons'])}")
            if row["learned"] is not None:
                click.echo(f"    learned {row['learned']:+.2f}, most like: {row['like']}")
    if explain:
        for p, why in rejected:
            click.echo(f"not sent: {p.title} [{p.id}] - {why}")
    click.echo(f"{len(issue.matches)} papers in the issue of {issue.issue_date}, "
               f"{len(issue.more)} more matches")


@cli.command()
@click.option("--all", "send_all", is_flag=True,
              help="Ignore send hours and frequencies (still one issue per person per day).")
@click.option("--only", metavar="EMAIL", help="Run for this one subscriber.")
@click.option("--dry-run", is_flag=True, help="Render and report; send and record nothing, "
              "and call no LLM (briefs from the cache, else the extractive digest).")
@click.option("--with-briefs", is_flag=True,
              help="With --dry-run: call the LLM for the briefs anyway (and pay for them).")
@click.option("--date", "on", type=click.DateTime(["%Y-%m-%d"]),
              help="Run as on this day (UTC noon), e.g. to rebuild a past issue.")
@click.option("--no-fetch", is_flag=True, help="Use the papers already in the database.")
@click.option("--wait", type=float, default=0.0, show_default=True,
              help="Seconds to wait for another run to finish before giving up.")
@click.option("--shard", metavar="K/N",
              help="Send only to shard K of N (a stable hash of each address), e.g. for a "
                   "GitHub Actions matrix of N jobs.")
@json_option(JSON_HELP)
@verbosity_options
@click.pass_context
def run(ctx: click.Context, send_all: bool, only: str | None, dry_run: bool,
        with_briefs: bool, on: datetime | None, no_fetch: bool, wait: float,
        shard: str | None, as_json: bool, quiet: bool, verbose: bool) -> None:
    """The morning job: fetch, match, brief, render and send to everyone due now.

    Exits non-zero when any delivery did not go out, or when the brief could not use the
    model for a reason the operator must fix (no API key, unknown model, no price under a
    budget), so a scheduled job turns red; the emails still go out, with the digest.

    On a terminal a progress bar replaces the line per delivery (-v prints them too;
    problems are always printed). When GITHUB_ACTIONS is set it also appends a summary to
    $GITHUB_STEP_SUMMARY and prints ::error:: / ::warning:: lines for what went wrong.

    \b
    Example:
        newsletter run --all --dry-run
        newsletter run --json | jq '.counts'
    """
    from newsletter import pipeline, store
    from newsletter.ops import report as report_mod
    from newsletter.ops.lock import run_lock

    out = Console(as_json, quiet, verbose)
    settings = get_settings(ctx)
    now = on.replace(hour=12, tzinfo=UTC) if on else get_now()
    parts = pipeline.parse_shard(shard) if shard else None
    clock = time.monotonic()
    with run_lock(settings.db, wait), ExitStack() as stack:
        progress = stack.enter_context(_fetch_progress(out, ctx)) if not no_fetch else None
        bar: list[Any] = []

        def planned(total: int) -> None:
            stack.close()  # the fetch bar is done
            bar.append(stack.enter_context(out.progress(total, "Sending")))

        def sent(line: Any) -> None:
            text = f"{line.status:<10} {line.email:<32} {line.papers:>3} papers  {line.detail}"
            if line.status == "skipped":  # listed once, by the summary
                pass
            elif line.status in report_mod.PROBLEMS:
                out.result(text)
            elif out.interactive:
                out.detail(text)
            else:
                out.line(text)
            if bar:
                bar[0].advance(1, line.email)

        db = get_db(ctx)
        try:
            report = pipeline.run(
                db, settings, now, send_all=send_all, dry_run=dry_run,
                with_briefs=with_briefs, only=only, do_fetch=not no_fetch, progress=progress,
                sent=sent, planned=planned, shard=parts)
        finally:  # the write-ahead log folded into the file before the lock is let go:
            db.close()  # a run reaching this database by another path (a hard link, whose
            store.checkpoint(settings.db)  # log file has another name) sees it all
    seconds = time.monotonic() - clock
    shown = None if out.verbose else SKIPPED_SHOWN
    for line in report_mod.summary(report, settings, dry_run, skipped_shown=shown):
        (out.line if line.startswith("skipped ") else out.result)(line)
    if os.environ.get("GITHUB_ACTIONS"):
        _github_actions(report, dry_run, as_json)
    if as_json:  # one record per subscriber: built only when it is printed
        out.document(report_mod.run_document(report, dry_run=dry_run,
                                             started=now.isoformat(timespec="seconds"),
                                             seconds=seconds))
    if report.failed:
        raise click.ClickException(f"{len(report.failed)} deliveries did not go out - see above")
    if report.operator_errors:
        raise click.ClickException(f"the brief could not use the model: "
                                   f"{report.operator_errors[0]} (the emails carry the "
                                   "extractive digest)")


def _github_actions(report: Any, dry_run: bool, as_json: bool) -> None:
    """The run's page: a job summary, and annotations (on standard error with --json, where
    the runner reads them too, so standard output stays one JSON document)."""
    from pathlib import Path

    from newsletter.ops.report import step_summary, workflow_commands

    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with Path(path).open("a", encoding="utf-8") as f:
            f.write(step_summary(report, dry_run))
    for line in workflow_commands(report):
        click.echo(line, err=as_json)


@cli.command()
@click.option("--outbox", default="outbox", show_default=True, help="Where the emails go.")
@click.option("--db", "db_path", default=".demo/newsletter.db", show_default=True,
              help="The throw-away demo database (recreated each time).")
@click.pass_context
def demo(ctx: click.Context, outbox: str, db_path: str) -> None:
    """Run the morning job on the bundled sample papers and subscribers: no network,
    no SMTP server, no LLM key. One .eml and one .html per subscriber land in OUTBOX.

    \b
    Example:
        newsletter demo && open outbox/*.html
    """
    from newsletter.ops import demo as demo_mod

    for line in demo_mod.run(get_settings(ctx), db_path, outbox, get_now()):
        click.echo(line)


@cli.command(name="config")
@json_option(JSON_HELP)
@click.pass_context
def config_cmd(ctx: click.Context, as_json: bool) -> None:
    """Show every setting, its value and where it came from (secrets masked).

    \b
    Example:
        NEWSLETTER_LLM_MODEL=openai/gpt-4o-mini newsletter config
        newsletter config --json | jq -r '.[] | select(.origin != "default") | .name'
    """
    root = ctx.find_root()
    rows = []
    for s in SETTINGS:
        source = root.get_parameter_source(s.name)
        origin = {"COMMANDLINE": "flag", "ENVIRONMENT": s.envvar, "DEFAULT_MAP": "toml",
                  "DEFAULT": "default"}.get(source.name if source else "DEFAULT", "default")
        value = root.params[s.name]
        shown = display_value(s, value)
        rows.append({"name": s.name, "value": shown if s.secret or value is None
                     or not isinstance(value, bool | int | float) else value,
                     "secret": s.secret, "origin": origin})
        if not as_json:
            click.echo(f"{s.name:<18} {shown!s:<44} ({origin})")
    Console(as_json).document(rows)



cli.add_command(briefs.briefs)
cli.add_command(deliveries.deliveries)
cli.add_command(doctor.doctor)
cli.add_command(feedback.feedback)
cli.add_command(papers.papers)
cli.add_command(preview.preview)
cli.add_command(sources.sources)
cli.add_command(state.state)
cli.add_command(subscribers.subscribers)
cli.add_command(unsubscribes.unsubscribes)
cli.add_command(serve.serve)
