"""`newsletter subscribers ...`: the list of people, their filters, consent and history."""

from __future__ import annotations

import json
from typing import Any

import click

from newsletter.cli._common import F, SubGroup, get_db, get_now, get_settings, json_option
from newsletter.cli.output import JSON_HELP, Console, confirm, verbosity_options, yes_option
from newsletter.models import FREQUENCIES, STATUSES, WEEKDAYS

STATUS_CHOICE = click.Choice(STATUSES)
WEEKDAY_CHOICE = click.Choice(WEEKDAYS, case_sensitive=False)
FREQUENCY_CHOICE = click.Choice(FREQUENCIES)
RANKING_CHOICE = click.Choice(["auto", "filters", "reorder", "like"])
RANKING_HELP = ("How seed papers and feedback rank the issue: filters (unchanged), reorder "
                "(the filters' papers, best first), like (also add up to --like-cap papers "
                "the filters missed); auto = reorder once there are seeds or feedback.")


def like_options(fn: F) -> F:
    """Seed papers ("papers like mine") and the learned ranking's settings."""
    fn = click.option("--like-cap", type=click.IntRange(0, 20),
                      help="In ranking mode 'like', how many papers may be added.")(fn)
    fn = click.option("--ranking", type=RANKING_CHOICE, help=RANKING_HELP)(fn)
    fn = click.option("--like-file", "like_files", multiple=True,
                      type=click.Path(exists=True, dir_okay=False),
                      help="Seed papers from a BibTeX, RIS or CSL-JSON file (Zotero, "
                      "Mendeley, JabRef exports; repeatable).")(fn)
    return fn

# --- subscribers -------------------------------------------------------------------------


@click.group(cls=SubGroup, default="list", default_if_no_args=True)
def subscribers() -> None:
    """Add, edit, pause, import, export, confirm and forget subscribers (lists them when
    given no subcommand)."""


def filter_options(fn: F) -> F:
    fn = click.option("--category", "-c", "categories", multiple=True,
                      help="arXiv category to follow, e.g. cs.CL or q-bio.* (repeatable).")(fn)
    fn = click.option("--topic", "-t", "topics", multiple=True,
                      help='Topic: words, "a phrase", or a query with AND/OR/NOT (repeatable).'
                      )(fn)
    fn = click.option("--author", "-a", "authors", multiple=True,
                      help='Author to follow, full name (repeatable). Options after ";": '
                      '"T. Lu; initials", "Yang Liu; with: Maosong Sun".')(fn)
    fn = click.option("--filters", "filters_file", type=click.Path(exists=True, dir_okay=False),
                      help="Read more filters from a TOML or YAML file (authors, topics, "
                      "categories, exclude).")(fn)
    fn = click.option("--exclude", "-x", multiple=True,
                      help='Leave out papers matching this query, or "author:Name" '
                      "(repeatable).")(fn)
    return fn


def edit_options(fn: F) -> F:
    """--add-X / --remove-X for each kind of filter, then the settings."""
    for flag, what in (("exclude", 'an exclusion (a query or "author:Name")'),
                       ("category", "a category (cs.CL, q-bio.*)"),
                       ("topic", "a topic or query"),
                       ("author", 'an author ("Taiming Lu", "T. Lu; initials")')):
        fn = click.option(f"--remove-{flag}", f"remove_{flag}", multiple=True, metavar="TEXT",
                          help=f"Stop following {what} (repeatable).")(fn)
        fn = click.option(f"--add-{flag}", f"add_{flag}", multiple=True, metavar="TEXT",
                          help=f"Follow {what} (repeatable).")(fn)
    fn = click.option("--max-papers", type=click.IntRange(1, 100),
                      help="Papers shown in full; the rest go under 'More matches'.")(fn)
    fn = like_options(fn)
    fn = click.option("--remove-like", "remove_like", multiple=True, metavar="ID",
                      help="Drop a seed paper (arXiv id or DOI; repeatable).")(fn)
    fn = click.option("--add-like", "add_like", multiple=True, metavar="ID",
                      help="Add a seed paper, a paper like theirs (arXiv id or DOI; "
                      "repeatable).")(fn)
    fn = click.option("--weekday", type=WEEKDAY_CHOICE,
                      help="The day of a weekly issue (with --frequency weekly).")(fn)
    fn = click.option("--frequency", type=FREQUENCY_CHOICE,
                      help="daily, weekdays (Monday to Friday) or weekly.")(fn)
    fn = click.option("--send-hour", type=click.IntRange(0, 23),
                      help="Local hour after which the issue is sent.")(fn)
    fn = click.option("--timezone", help="IANA time zone, e.g. Asia/Shanghai.")(fn)
    fn = click.option("--lang", "language", help="Language of the email (en, zh).")(fn)
    fn = click.option("--name", help="The subscriber's name, used in the greeting.")(fn)
    return fn


@subscribers.command(name="add")
@click.argument("email")
@click.option("--name", default="", help="The subscriber's name, used in the greeting.")
@filter_options
@click.option("--lang", "language", default="en", show_default=True,
              help="Language of the email (en, zh, ...).")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone.")
@click.option("--send-hour", type=click.IntRange(0, 23), default=7, show_default=True,
              help="Local hour after which the issue is sent.")
@click.option("--frequency", type=FREQUENCY_CHOICE, default="daily", show_default=True,
              help="daily, weekdays (Monday to Friday) or weekly.")
@click.option("--weekday", type=WEEKDAY_CHOICE, help="The day of a weekly issue (default mon).")
@click.option("--max-papers", type=click.IntRange(1, 100), default=10, show_default=True,
              help="Papers shown in full; the rest go under 'More matches'.")
@click.option("--like", "likes", multiple=True, metavar="ID",
              help="A paper like theirs, by arXiv id or DOI (repeatable).")
@like_options
@click.option("--confirm", is_flag=True, help="Double opt-in: keep them pending and email a "
              "confirmation request (needs NEWSLETTER_SECRET).")
@click.pass_context
def subscribers_add(ctx: click.Context, email: str, filters_file: str | None,
                    confirm: bool, **fields: Any) -> None:
    """Add a subscriber with their filters.

    With --confirm they stay "pending" (no issues) until they reply to the confirmation
    email or open its signed link.

    \b
    Example:
        newsletter subscribers add ada@example.org --name "Ada" \\
            --author "Taiming Lu" --topic "diffusion models" --category cs.CL --lang zh
    """
    from newsletter.lists import roster

    settings, db = get_settings(ctx), get_db(ctx)
    if confirm:
        roster.require_secret(settings)
    extra = roster.load_filter_file(filters_file) if filters_file else {}
    for key, values in extra.items():
        fields[key] = tuple(fields[key]) + tuple(values)
    fields["likes"] = roster.resolve_likes(db, settings, fields["likes"],
                                           fields.pop("like_files"))
    fields["ranking"] = fields["ranking"] or "auto"
    fields["like_cap"] = 3 if fields["like_cap"] is None else fields["like_cap"]
    sub = roster.add(db, email, status="pending" if confirm else "active", now=get_now(), **fields)
    click.echo(f"Added {sub.email} ({roster.describe(sub)})")
    if confirm:
        where = roster.request_confirmation(db, settings, sub.email, now=get_now())
        click.echo(f"Pending until they confirm: confirmation email sent ({where})")


@subscribers.command(name="edit")
@click.argument("email")
@edit_options
@click.pass_context
def subscribers_edit(ctx: click.Context, email: str, **options: object) -> None:
    """Change a subscriber's filters and settings; prints each change.

    New filters are checked like "add": a broken query is refused with its position and
    nothing is written. Removing a filter they do not have is an error.

    \b
    Example:
        newsletter subscribers edit ada@example.org --add-author "Yann LeCun" \\
            --remove-topic "diffusion models" --frequency weekly --weekday fri
    """
    from newsletter.lists import roster

    db = get_db(ctx)
    given = {k: v for k, v in options.items() if v not in (None, ())}
    if given.get("add_like") or given.get("like_files"):
        given["add_like"] = roster.resolve_likes(
            db, get_settings(ctx), given.get("add_like", ()),  # type: ignore[arg-type]
            given.pop("like_files", ()))  # type: ignore[arg-type]
    if given.get("remove_like"):
        given["remove_like"] = roster.like_ids(db, given["remove_like"])  # type: ignore[arg-type]
    done = roster.edit(db, email, now=get_now(), **given)  # type: ignore[arg-type]
    for line in done or [f"Nothing changed for {email.strip()}"]:
        click.echo(line)


@subscribers.command(name="list")
@click.option("--status", type=STATUS_CHOICE, help="Only subscribers with this status.")
@click.option("--author", help="Only those following this author (matched like papers are; "
              "one word matches the family name).")
@click.option("--topic", help="Only those with a topic containing this text "
              "(case-insensitive).")
@json_option("Print JSON instead of a table.")
@click.pass_context
def subscribers_list(ctx: click.Context, status: str | None, author: str | None,
                     topic: str | None, as_json: bool) -> None:
    """List subscribers, with a count per status at the end.

    \b
    Example:
        newsletter subscribers list --status paused --author "Taiming Lu"
    """
    from newsletter.lists import listio, roster

    rows = roster.find(get_db(ctx), status=status, author=author, topic=topic)
    if as_json:
        click.echo(json.dumps([listio.record(s) for s in rows], indent=2, ensure_ascii=False))
        return
    for line in roster.table_lines(rows, filtered=bool(status or author or topic)):
        click.echo(line)


@subscribers.command(name="show")
@click.argument("email")
@click.option("--history", is_flag=True, help="Also show every change, when and from where.")
@json_option("Print JSON.")
@click.pass_context
def subscribers_show(ctx: click.Context, email: str, history: bool, as_json: bool) -> None:
    """Show one subscriber, their filters and (with --history) every change to them.

    \b
    Example:
        newsletter subscribers show ada@example.org --history
    """
    from newsletter import store
    from newsletter.lists import listio, roster

    db = get_db(ctx)
    sub = store.get_subscriber(db, email)
    events = store.subscriber_history(db, sub.email) if history else None
    if as_json:
        out = {**listio.record(sub), **({"history": events} if history else {})}
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    for line in roster.show_lines(sub, events):
        click.echo(line)


@subscribers.command(name="link")
@click.argument("email")
@click.option("--days", type=click.IntRange(1, 3650), default=None,
              help="Days the link stays valid (default: the link_days setting).")
@click.option("--feed", is_flag=True, help="Print the private Atom feed URL instead.")
@click.option("--revoke", is_flag=True,
              help="First make every page and feed link handed out so far invalid.")
@click.pass_context
def subscribers_link(ctx: click.Context, email: str, days: int | None, feed: bool,
                     revoke: bool) -> None:
    """Print EMAIL's signed research radar page link (needs NEWSLETTER_WEB_URL and
    NEWSLETTER_SECRET); every issue carries a fresh one when the web URL is set.

    \b
    Example:
        newsletter subscribers link ada@example.org --revoke
    """
    from newsletter.lists import roster

    click.echo(roster.radar_link(get_db(ctx), get_settings(ctx), email, get_now(), days=days,
                                 feed=feed, revoke=revoke))


@subscribers.command(name="pause")
@click.argument("email")
@click.pass_context
def subscribers_pause(ctx: click.Context, email: str) -> None:
    """Stop sending to a subscriber; their filters and history stay.

    \b
    Example:
        newsletter subscribers pause ada@example.org
    """
    from newsletter.lists import roster

    sub, changed = roster.pause(get_db(ctx), email, now=get_now())
    click.echo(f"Paused {sub.email}" if changed else f"{sub.email} is already paused")


@subscribers.command(name="resume")
@click.argument("email")
@click.pass_context
def subscribers_resume(ctx: click.Context, email: str) -> None:
    """Send again to a paused (or bounced) subscriber.

    \b
    Example:
        newsletter subscribers resume ada@example.org
    """
    from newsletter.lists import roster

    sub, changed = roster.resume(get_db(ctx), email, now=get_now())
    click.echo(f"Resumed {sub.email}" if changed else f"{sub.email} is already active")


@subscribers.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Report what would happen; write nothing.")
@click.option("--skip-invalid", is_flag=True,
              help="Import the valid rows even if some are rejected.")
@click.option("--encoding", help="The file's encoding if not UTF-8, e.g. gb18030 or latin-1.")
@click.option("--confirm", is_flag=True, help="New subscribers stay pending and get a "
              "confirmation email (needs NEWSLETTER_SECRET).")
@json_option(JSON_HELP)
@verbosity_options
@click.pass_context
def subscribers_import(ctx: click.Context, file: str, dry_run: bool, skip_invalid: bool,
                       encoding: str | None, confirm: bool, as_json: bool, quiet: bool,
                       verbose: bool) -> None:
    """Add or update subscribers from a CSV or JSON file, in one transaction.

    CSV: a header row, then one row per subscriber. Columns: email (required), name,
    language, timezone, send_hour, frequency, weekday, max_papers, status, confirmed_at,
    authors, topics, categories, exclude. Comma, semicolon or tab separated (detected).
    List cells hold several values separated by "|", e.g. "Taiming Lu|Yann LeCun". An empty
    cell or a missing column keeps the current value; status and confirmed_at apply to new
    subscribers only. JSON: a list of objects with the same keys, lists as JSON lists.
    Each row is reported as added, updated, unchanged or rejected with the reason (rows
    counted as a spreadsheet shows them, the header being row 1); if any row is rejected
    nothing is imported, unless --skip-invalid. On a terminal a progress bar replaces the
    line per row (rejected rows are always printed; -v prints every row).

    \b
    Example:
        newsletter subscribers import subscribers/example.csv --dry-run
        newsletter subscribers import new.csv --dry-run --json | jq '.counts'
    """
    import time

    from newsletter.lists import roster

    settings = get_settings(ctx)
    out = Console(as_json, quiet, verbose)
    clock = time.monotonic()
    with out.ticker("Checking rows") as tick:
        report = roster.import_file(get_db(ctx), file, encoding=encoding, dry_run=dry_run,
                                    skip_invalid=skip_invalid, now=get_now(),
                                    confirm_with=settings if confirm else None, tick=tick,
                                    settings=settings)
    for line in report.lines:
        if line.outcome == "rejected":
            out.result(str(line))
        elif out.interactive:
            out.detail(str(line))
        else:
            out.line(str(line))
    out.document({
        "file": file, "dry_run": dry_run, "written": report.written, "error": report.error,
        "seconds": round(time.monotonic() - clock, 3),
        "counts": {o: report.count(o) for o in ("added", "updated", "unchanged", "rejected")},
        "rows": [{"row": line.row, "email": line.email or None, "status": line.outcome,
                  "reason": line.detail or None} for line in report.lines]})
    if report.error:
        raise roster.ImportRejected(report.error)
    out.result(report.summary() + (" (dry run: nothing written)" if dry_run else ""))


@subscribers.command(name="export")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]),
              help="Default: from the --out file name, else csv.")
@click.option("--out", type=click.Path(dir_okay=False, writable=True),
              help="Write to this file (UTF-8; CSV with a byte-order mark for Excel) "
              "instead of standard output.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def subscribers_export(ctx: click.Context, fmt: str | None, out: str | None,
                       quiet: bool) -> None:
    """Write every subscriber with all settings and filters, ready for "import".

    \b
    Example:
        newsletter subscribers export --out subscribers.csv
    """
    from pathlib import Path

    from newsletter.lists import roster

    fmt = fmt or ("json" if out and out.lower().endswith(".json") else "csv")
    with Console(quiet=quiet).ticker("Exporting") as tick:
        text, count = roster.export(get_db(ctx), fmt, tick)
    if out is None:
        click.echo(text, nl=False)
        return
    Path(out).write_text(text, encoding="utf-8-sig" if fmt == "csv" else "utf-8", newline="")
    click.echo(f"Exported {count} subscribers to {out}")


@subscribers.command(name="confirm")
@click.argument("email")
@click.option("--token", help="The code from their confirmation email (checked).")
@click.option("--resend", is_flag=True, help="Email the confirmation request again instead.")
@click.pass_context
def subscribers_confirm(ctx: click.Context, email: str, token: str | None,
                        resend: bool) -> None:
    """Confirm a pending subscriber (they confirmed by reply, link, or told you), or
    --resend them the confirmation email.

    \b
    Example:
        newsletter subscribers confirm ada@example.org --token 3f2a...
    """
    from newsletter.lists import roster

    db = get_db(ctx)
    if resend:
        where = roster.request_confirmation(db, get_settings(ctx), email, now=get_now())
        click.echo(f"Confirmation email sent to {email.strip()} ({where})")
        return
    sub = roster.confirm(db, email, token, origin="cli", now=get_now())
    click.echo(f"Confirmed {sub.email}: they now receive issues")


@subscribers.command(name="expire")
@click.option("--days", type=click.IntRange(1), default=7, show_default=True,
              help="Forget those still unconfirmed this many days after being added.")
@yes_option
@json_option(JSON_HELP)
@click.pass_context
def subscribers_expire(ctx: click.Context, days: int, yes: bool, as_json: bool) -> None:
    """Forget pending subscribers who never confirmed. Asks first on a terminal;
    elsewhere needs --yes.

    \b
    Example:
        newsletter subscribers expire --days 7 --yes
    """
    from newsletter.lists import roster

    out = Console(as_json)
    confirm(yes, f"Forget every subscriber still unconfirmed after {days} days?")
    gone = roster.expire_pending(get_db(ctx), get_now(), days, outbox=get_settings(ctx).outbox)
    for email in gone:
        out.line(f"Expired {email}")
    out.result(f"{len(gone)} unconfirmed subscribers forgotten")
    out.document({"days": days, "count": len(gone), "expired": gone})


@subscribers.command(name="forget")
@click.argument("email")
@yes_option
@json_option(JSON_HELP)
@click.pass_context
def subscribers_forget(ctx: click.Context, email: str, yes: bool, as_json: bool) -> None:
    """Erase a person: address, name, filters, history, delivery records and their emails
    in the outbox. Only anonymous counts of past deliveries remain. Asks first on a
    terminal; elsewhere needs --yes.

    \b
    Example:
        newsletter subscribers forget ada@example.org --yes
    """
    from newsletter import store
    from newsletter.lists import roster

    out = Console(as_json)
    db = get_db(ctx)
    sub = store.get_subscriber(db, email)  # an unknown address is refused without asking
    confirm(yes, f"Erase {sub.email} and everything about them?")
    done = roster.forget(db, email, now=get_now(), outbox=get_settings(ctx).outbox)
    out.result(f"Forgot {done.email}: {done.filters} filters, {done.events} history events, "
               f"{done.deliveries} deliveries (kept as anonymous counts), "
               f"{len(done.files)} outbox files")
    for where in done.residue:
        out.warn(f"Warning: the address still appears in {where}")
    if done.compact_error:
        out.warn(f"Warning: could not compact the database ({done.compact_error}); "
                 "run it again when nothing else uses it")
    out.document({"email": done.email, "filters": done.filters, "events": done.events,
                  "deliveries": done.deliveries, "outbox_files": len(done.files),
                  "residue": list(done.residue), "compact_error": done.compact_error})


@subscribers.command(name="remove")
@click.argument("email")
@yes_option
@click.pass_context
def subscribers_remove(ctx: click.Context, email: str, yes: bool) -> None:
    """Remove a subscriber, their filters and their delivery records (use "forget" to keep
    anonymous delivery counts). Asks first on a terminal; elsewhere needs --yes.

    \b
    Example:
        newsletter subscribers remove ada@example.org --yes
    """
    from newsletter import store

    sub = store.get_subscriber(get_db(ctx), email)  # an unknown address is refused first
    confirm(yes, f"Remove {sub.email}, their filters and delivery records?")
    store.remove_subscriber(get_db(ctx), email, now=get_now())
    click.echo(f"Removed {email.strip()}")
