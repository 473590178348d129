"""`newsletter feedback`: a reader's verdict on a paper, for the learned ranking."""

from __future__ import annotations

import click

from newsletter.cli._common import get_db, get_now


@click.command()
@click.argument("email")
@click.argument("paper_id")
@click.option("--relevant/--not-relevant", "relevant", required=True,
              help="The reader's verdict on the paper.")
@click.pass_context
def feedback(ctx: click.Context, email: str, paper_id: str, relevant: bool) -> None:
    """Record that EMAIL finds PAPER_ID relevant or not. Their next issues are ranked with
    it (see "subscribers edit --ranking"); the newest verdict on a paper counts.

    \b
    Example:
        newsletter feedback ada@example.org 2401.01234 --not-relevant
    """
    from newsletter import store

    verdict = "relevant" if relevant else "not_relevant"
    row = store.add_feedback(get_db(ctx), email.strip(), paper_id.strip(), verdict, "cli",
                                now=get_now())
    click.echo(f"{row['email']}: {row['paper_id']} marked {verdict.replace('_', ' ')}")
