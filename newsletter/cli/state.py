"""`newsletter state push`: carry the database to the next scheduled run."""

from __future__ import annotations

import click

from newsletter.cli._common import SubGroup, get_settings


@click.group(cls=SubGroup)
def state() -> None:
    """Keep the database in the repository between scheduled runs."""


@state.command(name="push")
@click.option("--remote", default="origin", show_default=True, help="Git remote.")
@click.option("--branch", help="Branch to push to (default: the current one).")
@click.option("--message", "-m", default="Morning run: delivery state", show_default=True,
              help="Commit message.")
@click.pass_context
def state_push(ctx: click.Context, remote: str, branch: str | None, message: str) -> None:
    """Commit the database and push it; if the remote moved on (someone changed
    subscribers meanwhile), merge this run's deliveries and fetch state into the newer
    database first, so neither side's work is lost.

    \b
    Example:
        newsletter state push -m "Morning run 2026-11-22"
    """
    from newsletter.ops import statesync

    click.echo(statesync.push(get_settings(ctx).db, message, remote, branch))
