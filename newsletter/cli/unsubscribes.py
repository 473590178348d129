"""`newsletter unsubscribes sync`: leaving the list by email."""

from __future__ import annotations

import click

from newsletter.cli._common import SubGroup, get_db, get_now, get_settings


@click.group(cls=SubGroup, default="sync", default_if_no_args=True)
def unsubscribes() -> None:
    """Apply unsubscribe requests, hard bounces and confirmation replies from the mailbox."""


@unsubscribes.command(name="sync")
@click.pass_context
def unsubscribes_sync(ctx: click.Context) -> None:
    """Read the sender's mailbox over IMAP (NEWSLETTER_IMAP_URL) and apply every valid
    unsubscribe request, hard bounce and confirmation reply; run it before sending.

    \b
    Example:
        NEWSLETTER_IMAP_URL=imaps://newsletter@mail.example.org/INBOX \\
            newsletter unsubscribes sync
    """
    from newsletter.lists import mailbox

    report = mailbox.sync(get_db(ctx), get_settings(ctx), get_now())
    for address in report.unsubscribed:
        click.echo(f"unsubscribed {address}")
    for address, status in report.bounced:
        click.echo(f"bounced      {address} ({status})")
    for address in report.complained:
        click.echo(f"complained   {address} (unsubscribed)")
    for address, count in report.soft:
        click.echo(f"soft bounce  {address} ({count} in 30 days)")
    for address in report.paused:
        click.echo(f"paused       {address} (too many soft bounces)")
    for address in report.confirmed:
        click.echo(f"confirmed    {address}")
    for why in report.rejected:
        click.echo(f"rejected     {why}")
    click.echo(f"{len(report.unsubscribed)} unsubscribed, {len(report.bounced)} bounced, "
               f"{len(report.soft)} soft bounces, {len(report.complained)} complaints, "
               f"{len(report.confirmed)} confirmed, {len(report.rejected)} rejected, "
               f"{report.ignored} other messages left unread")
