"""`newsletter preview`: see an issue before it goes out."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from newsletter.cli import _db, _now, _settings, cli


@cli.command()
@click.argument("email")
@click.option("--format", "fmt", type=click.Choice(["html", "text", "mjml", "eml"]),
              default="html", show_default=True, help="What to write.")
@click.option("--out", type=click.Path(dir_okay=False, writable=True),
              help="Write to this file instead of standard output.")
@click.option("--open", "open_browser", is_flag=True, help="Open the HTML in a browser.")
@click.pass_context
def preview(ctx: click.Context, email: str, fmt: str, out: str | None,
            open_browser: bool) -> None:
    """Render the issue EMAIL would get now, without sending or recording anything.

    \b
    Example:
        newsletter preview ada@example.org --out ada.html --open
    """
    from newsletter import pipeline, render

    settings = _settings(ctx)
    now = _now()
    issue, rendered = pipeline.preview(_db(ctx), email, settings, now)
    if fmt == "eml":
        data = bytes(render.build_message(issue, rendered, settings, now))
    else:
        data = {"html": rendered.html, "text": rendered.text, "mjml": rendered.mjml}[fmt
                                                                                    ].encode()
    if open_browser and not out:
        out = str(Path(settings.outbox) / f"preview_{email}.html")
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    if out:
        Path(out).write_bytes(data)
        click.echo(f"Wrote {out} ({len(issue.matches)} papers)", err=True)
        if open_browser:
            import webbrowser

            webbrowser.open(Path(out).resolve().as_uri())
    else:
        sys.stdout.buffer.write(data)
