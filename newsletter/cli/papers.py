"""`newsletter papers ...`: what was stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from newsletter.cli._common import SubGroup, get_db, json_option
from newsletter.models import Paper


def paper_json(p: Paper) -> dict[str, Any]:
    return {
        "id": p.id, "source": p.source, "venue": p.venue, "title": p.title,
        "authors": list(p.authors), "abstract": p.abstract, "url": p.url,
        "pdf_url": p.pdf_url, "doi": p.doi, "categories": list(p.categories),
        "published": p.published.isoformat(),
        "updated": p.updated.isoformat() if p.updated else None,
    }


@click.group(cls=SubGroup, default="list", default_if_no_args=True)
def papers() -> None:
    """Browse the papers stored by fetch."""


@papers.command(name="list")
@click.option("--source", help="Only papers from this source.")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]),
              help="Only papers first seen on or after this date (YYYY-MM-DD).")
@click.option("--limit", type=int, default=None, help="At most this many.")
@json_option("Print JSON instead of lines.")
@click.pass_context
def papers_list(ctx: click.Context, source: str | None, since: datetime | None,
                limit: int | None, as_json: bool) -> None:
    """List stored papers, newest first.

    \b
    Example:
        newsletter papers list --source arxiv --since 2026-11-20 --json
    """
    from newsletter import store

    found = store.list_papers(get_db(ctx), source=source,
                              since=since.replace(tzinfo=UTC) if since else None, limit=limit)
    if as_json:
        click.echo(json.dumps([paper_json(p) for p in found], indent=2, ensure_ascii=False))
        return
    for p in found:
        click.echo(f"{p.id:<28} {p.badge:<18} {p.published.date()}  {p.title}")
    click.echo(f"{len(found)} papers")


@papers.command(name="show")
@click.argument("paper_id")
@json_option("Print JSON.")
@click.pass_context
def papers_show(ctx: click.Context, paper_id: str, as_json: bool) -> None:
    """Show one stored paper.

    \b
    Example:
        newsletter papers show 2411.11844
    """
    from newsletter import store

    data = paper_json(store.get_paper(get_db(ctx), paper_id))
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    for key, value in data.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        click.echo(f"{key + ':':<12}{shown if shown is not None else ''}")


