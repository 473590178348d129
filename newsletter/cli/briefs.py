"""`newsletter briefs ...`: the cached briefs and what the model calls cost.

Reads the database only: tokens and cost were stored when each call was made, so neither
command imports litellm.
"""

from __future__ import annotations

import json
from datetime import datetime

import click

from newsletter.cli._common import SubGroup, get_db, json_option


@click.group(cls=SubGroup, default="list", default_if_no_args=True)
def briefs() -> None:
    """The cross-field briefs: the cache, and the LLM calls with their tokens and cost."""


@briefs.command(name="stats")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]),
              help="Only days on or after this date (YYYY-MM-DD, UTC).")
@json_option("Print JSON.")
@click.pass_context
def briefs_stats(ctx: click.Context, since: datetime | None, as_json: bool) -> None:
    """LLM usage per day and model: calls (ok/failed), tokens, cost in USD, briefs served
    from the cache instead of a call, claims dropped for want of a quote from the cited
    abstract, and briefs that fell back to the extractive digest, with the reasons. Cost
    "-" means the model is not in litellm's cost map.

    \b
    Example:
        newsletter briefs stats --since 2026-11-01
    """
    from newsletter import brief, store

    db = get_db(ctx)
    rows = store.llm_usage(db, since.date() if since else None)
    total = brief.usage_totals(rows)
    reasons = store.brief_fallback_reasons(db, since.date() if since else None)
    if as_json:
        click.echo(json.dumps({"rows": rows, "total": total, "fallbacks": reasons},
                              indent=2, ensure_ascii=False))
        return
    click.echo(f"{'day':<10}  {'model':<28} {'calls':>5} {'ok':>4} {'failed':>6} "
               f"{'in tokens':>10} {'out tokens':>10} {'cost':>10} {'cache hits':>10} "
               f"{'claims':>6} {'dropped':>7} {'digests':>7}")
    for r in [*rows, {**total, "day": "total", "model": ""}]:
        click.echo(f"{r['day']:<10}  {r['model'] or '':<28} {r['calls']:>5} {r['ok']:>4} "
                   f"{r['failed']:>6} {r['input_tokens']:>10} {r['output_tokens']:>10} "
                   f"{brief.format_cost(r['cost_usd']):>10} {r['cache_hits']:>10} "
                   f"{r['claims']:>6} {r['dropped_claims']:>7} {r['fallbacks']:>7}")
    for r in reasons:
        click.echo(f"digest {r['day']} {r['model']}: {r['briefs']} x {r['reason']}")


@briefs.command(name="list")
@click.option("--limit", type=int, default=None, help="At most this many, newest first.")
@json_option("Print JSON.")
@click.pass_context
def briefs_list(ctx: click.Context, limit: int | None, as_json: bool) -> None:
    """List the cached briefs, newest first: key, date, language, model, papers, tokens,
    cost and how often the cache served each one.

    \b
    Example:
        newsletter briefs list --json
    """
    from newsletter import brief, store

    rows = [{**r, "papers": len(json.loads(r.pop("paper_ids") or "[]"))}
            for r in store.list_briefs(get_db(ctx), limit)]
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for r in rows:
        click.echo(f"{r['key']}  {(r['created'] or '')[:10]}  {r['language']:<3} "
                   f"{r['model']:<28} {r['papers']:>3} papers  {r['input_tokens'] or 0:>6} in "
                   f"{r['output_tokens'] or 0:>5} out  {brief.format_cost(r['cost_usd']):>9}  "
                   f"{r['cache_hits']} hits")
    click.echo(f"{len(rows)} cached briefs")
