"""`newsletter deliveries ...`: the record of what was sent to whom."""

from __future__ import annotations

import json
from datetime import datetime

import click

from newsletter.cli._common import SubGroup, get_db, json_option
from newsletter.models import DELIVERY_STATUSES


@click.group(cls=SubGroup, default="list", default_if_no_args=True)
def deliveries() -> None:
    """The delivery record: one row per subscriber and issue date."""


@deliveries.command(name="list")
@click.option("--date", "on", type=click.DateTime(["%Y-%m-%d"]), help="Only this issue date.")
@click.option("--status", type=click.Choice(DELIVERY_STATUSES),
              help="Only deliveries in this state.")
@json_option("Print JSON instead of a table.")
@click.pass_context
def deliveries_list(ctx: click.Context, on: datetime | None, status: str | None,
                    as_json: bool) -> None:
    """List deliveries: address, issue date, state, attempts, papers, error.

    \b
    Example:
        newsletter deliveries list --date 2026-11-22 --status failed
    """
    from newsletter import store

    rows = store.list_deliveries(get_db(ctx), on.date() if on else None, status)
    for row in rows:
        row["paper_ids"] = json.loads(row["paper_ids"] or "[]")
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for r in rows:
        click.echo(f"{r['issue_date']}  {r['status']:<9} {r['email']:<32} "
                   f"{len(r['paper_ids']):>3} papers  {r['attempts']} tries  {r['error'] or ''}")
    click.echo(f"{len(rows)} deliveries")


@deliveries.command(name="retry")
@click.option("--date", "on", type=click.DateTime(["%Y-%m-%d"]), help="Only this issue date.")
@click.option("--email", metavar="EMAIL", help="Only this subscriber.")
@click.pass_context
def deliveries_retry(ctx: click.Context, on: datetime | None, email: str | None) -> None:
    """Send failed deliveries again with the next run.

    A delivery the SMTP server refused with a 5xx answer is "failed" and is not tried
    again on its own; fix the cause first (e.g. the address), then retry.

    \b
    Example:
        newsletter deliveries retry --date 2026-11-22 && newsletter run
    """
    from newsletter import store

    count = store.retry_failed(get_db(ctx), on.date() if on else None, email)
    click.echo(f"{count} failed deliveries set back to pending: the next run sends them")
