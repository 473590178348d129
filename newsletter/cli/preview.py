"""`newsletter preview`: see an issue before it goes out."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import click

from newsletter.cli._common import get_db, get_now, get_settings


@click.command()
@click.argument("email", required=False)
@click.option("--date", "on", type=click.DateTime(["%Y-%m-%d"]),
              help="The issue of this day, made at the subscriber's send hour in their time "
                   "zone; default now.")
@click.option("--format", "fmt", type=click.Choice(["html", "text", "mjml", "eml"]),
              default="html", show_default=True, help="What to write.")
@click.option("--text", "as_text", is_flag=True, help="The plain-text part (--format text).")
@click.option("--out", type=click.Path(dir_okay=False, writable=True),
              help="Write to this file instead of standard output.")
@click.option("--open", "open_browser", is_flag=True, help="Open the result in a browser.")
@click.option("--serve", is_flag=True,
              help="Serve every subscriber's issue on 127.0.0.1, rendered on each request "
                   "(a template edit shows on reload); EMAIL is then optional.")
@click.option("--port", type=int, default=8025, show_default=True,
              help="Port for --serve (0 picks a free one).")
@click.pass_context
def preview(ctx: click.Context, email: str | None, on: datetime | None, fmt: str,
            as_text: bool, out: str | None, open_browser: bool, serve: bool,
            port: int) -> None:
    """Render the issue EMAIL would get, without sending or recording anything.

    \b
    Example:
        newsletter preview ada@example.org --out ada.html --open
        newsletter preview ada@example.org --date 2026-11-20 --text
        newsletter preview --serve --open
    """
    if serve:
        _serve(ctx, on, port, open_browser)
    elif not email:
        raise click.ClickException("give the EMAIL of a subscriber, or --serve to preview "
                                   "everyone's issue in a browser")
    else:
        _write(ctx, email, on, "text" if as_text else fmt, out, open_browser)


def _write(ctx: click.Context, email: str, on: datetime | None, fmt: str, out: str | None,
           open_browser: bool) -> None:
    from newsletter import render
    from newsletter.web import preview_server

    settings = get_settings(ctx)
    issue, rendered, when = preview_server.preview(get_db(ctx), email, settings, get_now(),
                                                   on.date() if on else None)
    if fmt == "eml":
        data = bytes(render.build_message(issue, rendered, settings, when))
    else:
        data = {"html": rendered.html, "text": rendered.text, "mjml": rendered.mjml}[fmt].encode()
    if open_browser and not out:
        suffix = {"html": "html", "text": "txt", "mjml": "mjml", "eml": "eml"}[fmt]
        out = str(Path(settings.outbox) / f"preview_{email}.{suffix}")
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    if out:
        Path(out).write_bytes(data)
        click.echo(f"Wrote {out} ({len(issue.matches)} papers)", err=True)
        if open_browser:
            import webbrowser

            webbrowser.open(Path(out).resolve().as_uri())
    else:
        sys.stdout.buffer.write(data)


def _serve(ctx: click.Context, on: datetime | None, port: int, open_browser: bool) -> None:
    from newsletter.web import preview_server

    server = preview_server.make_server(get_settings(ctx), get_now, port=port,
                                        day=on.date() if on else None,
                                        log=lambda line: click.echo(line, err=True))
    click.echo(f"Serving issue previews on {server.url} - press Ctrl+C to stop", err=True)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
