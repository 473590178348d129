"""`newsletter sources ...`: where papers come from."""

from __future__ import annotations

import json

import click

from newsletter.cli._common import SubGroup, get_db, get_now, get_settings, json_option
from newsletter.cli.output import JSON_HELP, Console, confirm, yes_option


@click.group(cls=SubGroup, default="list", default_if_no_args=True)
def sources() -> None:
    """List, add, switch on and off, and check the sources papers come from."""


@sources.command(name="list")
@click.option("--catalogue", is_flag=True, help="Also list the well-known feeds not yet on.")
@json_option("Print JSON instead of a table.")
@click.pass_context
def sources_list(ctx: click.Context, catalogue: bool, as_json: bool) -> None:
    """List sources with their last fetch: status, new papers, requests.

    \b
    Example:
        newsletter sources list --catalogue
    """
    from newsletter import pipeline, store
    from newsletter.sources import BUILTIN
    from newsletter.sources import catalogue as well_known

    db = get_db(ctx)
    rows = {r["name"]: r for r in store.list_sources(db)}
    active = set(pipeline.source_names(db, get_settings(ctx)))
    for name in ("arxiv", *sorted(active)):
        rows.setdefault(name, {"name": name, "kind": "feed" if name not in BUILTIN
                               else name, "enabled": 1})
    if catalogue:
        for name, entry in well_known().items():
            rows.setdefault(name, {"name": name, "kind": "feed", "url": entry["url"],
                                   "label": entry["label"], "enabled": 0,
                                   "last_status": "catalogue"})
    listing = [{
        "name": r["name"], "kind": r.get("kind"), "url": r.get("url") or "",
        "label": r.get("label") or "", "enabled": bool(r.get("enabled", 1)),
        "fetched": name in active, "last_fetched": r.get("last_fetched"),
        "status": r.get("last_status") or "never fetched", "new": r.get("last_new"),
        "requests": r.get("last_requests"), "error": r.get("last_error"),
        "note": r.get("last_note"),
    } for name, r in sorted(rows.items())]
    if as_json:
        click.echo(json.dumps(listing, indent=2, ensure_ascii=False))
        return
    for s in listing:
        on = "on " if s["fetched"] else "off"
        when = (s["last_fetched"] or "")[:16].replace("T", " ")
        new = "" if s["new"] is None else f"{s['new']} new"
        click.echo(f"{on} {s['name']:<16} {s['kind']:<6} {s['status']:<14} {when:<16} "
                   f"{new:<8} {s['url']}")


@sources.command(name="add")
@click.argument("name")
@click.argument("url")
@click.option("--label", help="What the email's source badge says (default: NAME).")
@click.pass_context
def sources_add(ctx: click.Context, name: str, url: str, label: str | None) -> None:
    """Add an RSS or Atom feed.

    \b
    Example:
        newsletter sources add nature-physics https://www.nature.com/nphys.rss \\
            --label "Nature Physics"
    """
    from newsletter import store

    if not url.startswith(("http://", "https://")):
        raise click.BadParameter("give the feed's http:// or https:// URL", param_hint="URL")
    store.add_feed(get_db(ctx), name, url, label or name)
    click.echo(f"Added {name} ({url})")


@sources.command(name="remove")
@click.argument("name")
@yes_option
@click.pass_context
def sources_remove(ctx: click.Context, name: str, yes: bool) -> None:
    """Remove a source and its fetch state (papers already stored stay). Asks first on a
    terminal; elsewhere needs --yes.

    \b
    Example:
        newsletter sources remove nature-physics --yes
    """
    from newsletter import store

    db = get_db(ctx)
    if store.source_state(db, name):  # an unknown name is refused without asking
        confirm(yes, f"Remove the source {name}?")
    store.remove_source(db, name)
    click.echo(f"Removed {name}")


@sources.command(name="enable")
@click.argument("name")
@click.pass_context
def sources_enable(ctx: click.Context, name: str) -> None:
    """Switch a source on, including a well-known feed from the catalogue by name.

    \b
    Example:
        newsletter sources enable biorxiv
    """
    from newsletter.ops import source_admin

    row = source_admin.set_source_enabled(get_db(ctx), name, True)
    click.echo(f"Enabled {name}" + (f" ({row['url']})" if row.get("url") else ""))


@sources.command(name="disable")
@click.argument("name")
@click.pass_context
def sources_disable(ctx: click.Context, name: str) -> None:
    """Switch a source off without forgetting it.

    \b
    Example:
        newsletter sources disable arxiv
    """
    from newsletter.ops import source_admin

    source_admin.set_source_enabled(get_db(ctx), name, False)
    click.echo(f"Disabled {name}")


@sources.command(name="check")
@click.argument("name")
@json_option(JSON_HELP)
@click.pass_context
def sources_check(ctx: click.Context, name: str, as_json: bool) -> None:
    """Fetch a source once and print what was parsed; nothing is stored.

    Exits non-zero when the source failed (a partial fetch still lists what it parsed).

    \b
    Example:
        newsletter sources check nature
        newsletter sources check nature --json | jq '.papers[].title'
    """
    import time

    from newsletter.cli.papers import paper_json
    from newsletter.ops import source_admin

    out = Console(as_json)
    clock = time.monotonic()
    result = source_admin.check_source(get_db(ctx), name, get_settings(ctx), get_now())
    failed = bool(result.error) and not result.partial
    for p in result.papers:
        out.line(f"{p.id}  {p.published:%Y-%m-%d}  {p.title}")
        out.line(f"    {', '.join(p.authors[:6])}{' ...' if len(p.authors) > 6 else ''}"
                 + (f"  doi:{p.doi}" if p.doi else ""))
    if result.note:
        out.warn(f"Note: {result.note}")
    out.document({
        "source": name, "seconds": round(time.monotonic() - clock, 3),
        "status": "failed" if failed else "partial" if result.partial else "ok",
        "reason": result.error, "note": result.note, "requests": result.requests,
        "count": len(result.papers), "papers": [paper_json(p) for p in result.papers]})
    if failed:
        raise click.ClickException(f"{name}: {result.error}")
    out.warn(f"{len(result.papers)} papers parsed from {name} ({result.requests} requests)"
             + (f"; {result.error}" if result.error else ""))
