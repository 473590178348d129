"""`newsletter doctor`: will the mail arrive? One line per check."""

from __future__ import annotations

import json

import click

from newsletter.cli._common import get_settings


@click.command()
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds each network check may take.")
@click.option("--dkim-record", is_flag=True,
              help="Print the DNS TXT record for the DKIM key, and nothing else.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
@click.pass_context
def doctor(ctx: click.Context, timeout: float, dkim_record: bool, as_json: bool) -> None:
    """Check everything that makes mail arrive, without sending any: the From domain, the
    signing secret, SMTP (reachable, TLS, login), the From domain's SPF, DKIM and DMARC
    records, IMAP, the unsubscribe endpoint and the model. Exits 1 when a check fails.

    \b
    Example:
        newsletter doctor
        newsletter doctor --dkim-record   # the TXT record to publish
    """
    from newsletter.mail import signing
    from newsletter.ops import doctor as doctor_mod

    settings = get_settings(ctx)
    if dkim_record:
        key = signing.key_from_settings(settings)
        if key is None:
            raise click.ClickException("set NEWSLETTER_DKIM_SELECTOR and "
                                       "NEWSLETTER_DKIM_PRIVATE_KEY first")
        click.echo(f"{key.selector}._domainkey.{key.domain} TXT \"{signing.dns_record(key)}\"")
        return
    checks = doctor_mod.run_checks(settings, timeout)
    failed = [c for c in checks if c.state == doctor_mod.FAIL]
    if as_json:
        click.echo(json.dumps([{"check": c.name, "state": c.state, "message": c.message}
                               for c in checks], indent=2))
    else:
        for check in checks:
            click.echo(check.line)
        click.echo(f"{len(failed)} problems" if failed else "no problems found")
    if failed:
        ctx.exit(1)
