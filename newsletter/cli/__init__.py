"""The command line: parse, call one library function, print. Nothing heavy at import."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import click

from newsletter.cli import (
    briefs,
    deliveries,
    doctor,
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
from newsletter.config import SETTINGS, Settings, display_value, validate


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


def _print_fetch(lines: list[Any]) -> None:
    for f in lines:
        requests = f" ({f.requests} requests)" if f.requests else ""
        if f.error and not f.partial:
            click.echo(f"  {f.source}: FAILED - {f.error}", err=True)
            continue
        if f.not_modified:
            click.echo(f"  {f.source}: not modified{requests}", err=True)
        else:
            click.echo(f"  {f.source}: {f.new} new, {f.updated} updated{requests}", err=True)
        if f.partial:
            click.echo(f"  {f.source}: PARTIAL - {f.error}; the window will be fetched "
                       "again next run", err=True)
        if f.note:
            click.echo(f"  {f.source}: {f.note}", err=True)


@cli.command()
@click.pass_context
def fetch(ctx: click.Context) -> None:
    """Fetch new papers from the configured sources into the database.

    \b
    Example:
        NEWSLETTER_SOURCES=sample newsletter fetch
    """
    from newsletter import pipeline

    settings = get_settings(ctx)
    lines = pipeline.fetch(get_db(ctx), settings, get_now(),
                           progress=lambda name: click.echo(f"Fetching {name}...", err=True))
    _print_fetch(lines)
    total = sum(f.new for f in lines)
    failed = [f for f in lines if f.failed]
    updated = sum(f.updated for f in lines)
    requests = sum(f.requests for f in lines)
    click.echo(f"{total} new papers ({updated} updated) from {len(lines) - len(failed)} of "
               f"{len(lines)} sources, {requests} requests"
               + (f"; failed: {', '.join(f.source for f in failed)}" if failed else ""))
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
         "score": m.score, "reasons": list(m.reasons), "in_issue": n <= len(issue.matches)}
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
    if explain:
        for p, why in rejected:
            click.echo(f"not sent: {p.title} [{p.id}] - {why}")
    click.echo(f"{len(issue.matches)} papers in the issue of {issue.issue_date}, "
               f"{len(issue.more)} more matches")


def _print_delivery(line: Any) -> None:
    if line.status != "skipped":  # skips are listed once, by the summary
        click.echo(f"{line.status:<10} {line.email:<32} {line.papers:>3} papers  {line.detail}")


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
@click.pass_context
def run(ctx: click.Context, send_all: bool, only: str | None, dry_run: bool,
        with_briefs: bool, on: datetime | None, no_fetch: bool, wait: float) -> None:
    """The morning job: fetch, match, brief, render and send to everyone due now.

    Exits non-zero when any delivery did not go out, or when the brief could not use the
    model for a reason the operator must fix (no API key, unknown model, no price under a
    budget), so a scheduled job turns red; the emails still go out, with the digest.

    \b
    Example:
        newsletter run --all --dry-run
    """
    from newsletter import pipeline, store
    from newsletter.ops.lock import run_lock
    from newsletter.ops.report import summary

    settings = get_settings(ctx)
    now = on.replace(hour=12, tzinfo=UTC) if on else get_now()
    with run_lock(settings.db, wait):
        db = get_db(ctx)
        try:
            report = pipeline.run(
                db, settings, now, send_all=send_all, dry_run=dry_run,
                with_briefs=with_briefs, only=only, do_fetch=not no_fetch,
                progress=lambda n: click.echo(f"Fetching {n}...", err=True),
                sent=_print_delivery)
        finally:  # the write-ahead log folded into the file before the lock is let go:
            db.close()  # a run reaching this database by another path (a hard link, whose
            store.checkpoint(settings.db)  # log file has another name) sees it all
    for line in summary(report, settings, dry_run):
        click.echo(line)
    if report.failed:
        raise click.ClickException(f"{len(report.failed)} deliveries did not go out - see above")
    if report.operator_errors:
        raise click.ClickException(f"the brief could not use the model: "
                                   f"{report.operator_errors[0]} (the emails carry the "
                                   "extractive digest)")


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
@click.pass_context
def config_cmd(ctx: click.Context) -> None:
    """Show every setting, its value and where it came from (secrets masked).

    \b
    Example:
        NEWSLETTER_LLM_MODEL=openai/gpt-4o-mini newsletter config
    """
    root = ctx.find_root()
    for s in SETTINGS:
        source = root.get_parameter_source(s.name)
        origin = {"COMMANDLINE": "flag", "ENVIRONMENT": s.envvar, "DEFAULT_MAP": "toml",
                  "DEFAULT": "default"}.get(source.name if source else "DEFAULT", "default")
        value = display_value(s, root.params[s.name])
        click.echo(f"{s.name:<18} {value!s:<44} ({origin})")



cli.add_command(briefs.briefs)
cli.add_command(deliveries.deliveries)
cli.add_command(doctor.doctor)
cli.add_command(papers.papers)
cli.add_command(preview.preview)
cli.add_command(sources.sources)
cli.add_command(state.state)
cli.add_command(subscribers.subscribers)
cli.add_command(unsubscribes.unsubscribes)
cli.add_command(serve.serve)
