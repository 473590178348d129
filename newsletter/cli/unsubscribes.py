"""`newsletter unsubscribes sync`: leaving the list by email."""

from __future__ import annotations

import click

from newsletter.cli._common import SubGroup, get_db, get_now, get_settings, json_option
from newsletter.cli.output import JSON_HELP, Console, verbosity_options


@click.group(cls=SubGroup, default="sync", default_if_no_args=True)
def unsubscribes() -> None:
    """Apply unsubscribe requests, hard bounces and confirmation replies from the mailbox."""


@unsubscribes.command(name="sync")
@json_option(JSON_HELP)
@verbosity_options
@click.pass_context
def unsubscribes_sync(ctx: click.Context, as_json: bool, quiet: bool, verbose: bool) -> None:
    """Read the sender's mailbox over IMAP (NEWSLETTER_IMAP_URL) and apply every valid
    unsubscribe request, hard bounce and confirmation reply; run it before sending.

    \b
    Example:
        NEWSLETTER_IMAP_URL=imaps://newsletter@mail.example.org/INBOX \\
            newsletter unsubscribes sync
        newsletter unsubscribes sync --json | jq '.counts'
    """
    import time

    from newsletter.lists import mailbox

    out = Console(as_json, quiet, verbose)
    started, clock = get_now(), time.monotonic()
    report = mailbox.sync(get_db(ctx), get_settings(ctx), started)
    rows: list[tuple[str, str | None, str | None, str]] = [  # status, email, reason, line
        *(("unsubscribed", a, None, f"unsubscribed {a}") for a in report.unsubscribed),
        *(("bounced", a, why, f"bounced      {a} ({why})") for a, why in report.bounced),
        *(("complained", a, "complaint: unsubscribed", f"complained   {a} (unsubscribed)")
          for a in report.complained),
        *(("soft-bounce", a, f"{n} in 30 days", f"soft bounce  {a} ({n} in 30 days)")
          for a, n in report.soft),
        *(("paused", a, "too many soft bounces", f"paused       {a} (too many soft bounces)")
          for a in report.paused),
        *(("confirmed", a, None, f"confirmed    {a}") for a in report.confirmed),
        *(("rejected", None, why, f"rejected     {why}") for why in report.rejected)]
    for *_, line in rows:
        out.line(line)
    out.result(f"{len(report.unsubscribed)} unsubscribed, {len(report.bounced)} bounced, "
               f"{len(report.soft)} soft bounces, {len(report.complained)} complaints, "
               f"{len(report.confirmed)} confirmed, {len(report.rejected)} rejected, "
               f"{report.ignored} other messages left unread")
    out.document({"started": started.isoformat(timespec="seconds"),
                  "seconds": round(time.monotonic() - clock, 3),
                  "counts": {"unsubscribed": len(report.unsubscribed),
                             "bounced": len(report.bounced), "soft_bounces": len(report.soft),
                             "complained": len(report.complained),
                             "paused": len(report.paused),
                             "confirmed": len(report.confirmed),
                             "rejected": len(report.rejected), "ignored": report.ignored},
                  "records": [{"email": email, "status": status, "reason": reason}
                              for status, email, reason, _ in rows]})
