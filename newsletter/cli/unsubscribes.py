"""`newsletter unsubscribes sync` and `newsletter serve`: leaving the list."""

from __future__ import annotations

import click

from newsletter.cli import SubGroup, _db, _now, _settings, cli


@cli.group(cls=SubGroup, default="sync", default_if_no_args=True)
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

    report = mailbox.sync(_db(ctx), _settings(ctx), _now())
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


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8025, show_default=True, help="Port to listen on.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int) -> None:
    """Answer the signed links in every issue: RFC 8058 one-click unsubscribe (POST), a
    manage page (pause, resume, unsubscribe) and confirmations. Put it behind HTTPS and set
    NEWSLETTER_UNSUBSCRIBE_URL to its public address.

    \b
    Example:
        NEWSLETTER_SECRET=... newsletter serve --port 8025
    """
    from newsletter.web import endpoint

    settings = _settings(ctx)
    _db(ctx)  # migrate before serving
    server = endpoint.make_server(settings.db, settings, host, port)
    click.echo(f"Serving on http://{host}:{server.server_address[1]} (Ctrl-C to stop)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
