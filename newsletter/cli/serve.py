"""`newsletter serve`: the public endpoint for the links in every issue."""

from __future__ import annotations

import logging

import click

from newsletter.cli._common import get_now, get_settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on.")
@click.option("--port", default=8025, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0 = any free port).")
@click.option("--rate-limit", default=120.0, show_default=True, type=click.FloatRange(0),
              help="Requests a minute per client address (bursts of 60); 0 = no limit.")
@click.option("--proxy", default="",
              metavar="ADDRESSES",
              help="Reverse proxy address(es) whose X-Forwarded-For/-Proto to trust, "
                   "e.g. 127.0.0.1.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, rate_limit: float, proxy: str) -> None:
    """Serve the signed links in every issue on Starlette + Uvicorn: RFC 8058 one-click
    unsubscribe (POST), the unsubscribe, manage and confirmation pages. Put it behind an
    HTTPS reverse proxy and set NEWSLETTER_UNSUBSCRIBE_URL to its public address.
    Logs one line per request to stderr (no query strings, so no tokens).

    \b
    Example:
        NEWSLETTER_SECRET=... newsletter serve --host 127.0.0.1 --port 8025 --proxy 127.0.0.1
    """
    from newsletter.web import endpoint

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)

    def ready(bound: int) -> None:
        click.echo(f"Serving on http://{host}:{bound} (Ctrl-C to stop)", err=True)

    try:
        endpoint.serve(get_settings(ctx), host, port, rate_per_minute=rate_limit, proxy=proxy,
                       ready=ready, clock=get_now)
    except KeyboardInterrupt:
        pass
