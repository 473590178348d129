"""`newsletter subscribers ...`: the list of people and their filters."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from newsletter.cli import F, SubGroup, _db, cli

# --- subscribers -------------------------------------------------------------------------


@cli.group(cls=SubGroup, default="list", default_if_no_args=True)
def subscribers() -> None:
    """Add, list, show and remove subscribers (lists them when given no subcommand)."""


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


@subscribers.command(name="add")
@click.argument("email")
@click.option("--name", default="", help="The subscriber's name, used in the greeting.")
@filter_options
@click.option("--lang", "language", default="en", show_default=True,
              help="Language of the email (en, zh, ...).")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone.")
@click.option("--send-hour", type=click.IntRange(0, 23), default=7, show_default=True,
              help="Local hour after which the issue is sent.")
@click.option("--max-papers", type=click.IntRange(1, 100), default=10, show_default=True,
              help="Papers shown in full; the rest go under 'More matches'.")
@click.pass_context
def subscribers_add(ctx: click.Context, email: str, name: str, authors: tuple[str, ...],
                    topics: tuple[str, ...], categories: tuple[str, ...],
                    exclude: tuple[str, ...], filters_file: str | None, language: str,
                    timezone: str, send_hour: int, max_papers: int) -> None:
    """Add a subscriber with their filters.

    \b
    Example:
        newsletter subscribers add ada@example.org --name "Ada" \\
            --author "Taiming Lu" --topic "diffusion models" --category cs.CL --lang zh
    """
    from newsletter import subscribers as subs

    extra = subs.load_filter_file(filters_file) if filters_file else {}
    sub = subs.add(_db(ctx), email, name=name, authors=authors + tuple(extra.get("authors", [])),
                   topics=topics + tuple(extra.get("topics", [])),
                   categories=categories + tuple(extra.get("categories", [])),
                   exclude=exclude + tuple(extra.get("exclude", [])), language=language,
                   timezone=timezone, send_hour=send_hour, max_papers=max_papers)
    click.echo(f"Added {sub.email} ({subs.describe(sub)})")


@subscribers.command(name="list")
@click.option("--status", type=click.Choice(["active", "paused", "unsubscribed"]),
              help="Only subscribers with this status.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def subscribers_list(ctx: click.Context, status: str | None, as_json: bool) -> None:
    """List subscribers.

    \b
    Example:
        newsletter subscribers list --json
    """
    from newsletter import store
    from newsletter import subscribers as subs

    rows = store.list_subscribers(_db(ctx), status=status)
    if as_json:
        click.echo(json.dumps([asdict(s) for s in rows], indent=2, ensure_ascii=False))
        return
    for line in subs.table(rows):
        click.echo(line)


@subscribers.command(name="show")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def subscribers_show(ctx: click.Context, email: str, as_json: bool) -> None:
    """Show one subscriber and their filters.

    \b
    Example:
        newsletter subscribers show ada@example.org
    """
    from newsletter import store

    sub = store.get_subscriber(_db(ctx), email)
    if as_json:
        click.echo(json.dumps(asdict(sub), indent=2, ensure_ascii=False))
        return
    for key, value in asdict(sub).items():
        shown = ", ".join(value) if isinstance(value, list | tuple) else value
        click.echo(f"{key + ':':<12}{shown}")


@subscribers.command(name="remove")
@click.argument("email")
@click.pass_context
def subscribers_remove(ctx: click.Context, email: str) -> None:
    """Remove a subscriber, their filters and their delivery records.

    \b
    Example:
        newsletter subscribers remove ada@example.org
    """
    from newsletter import store

    store.remove_subscriber(_db(ctx), email)
    click.echo(f"Removed {email.strip()}")


