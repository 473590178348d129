"""`newsletter state pull|push|keygen|watch`: the list's state, encrypted, on a git branch
of its own, carried between the scheduled job, a laptop and the web endpoint."""

from __future__ import annotations

from typing import Any, TypeVar

import click

from newsletter.cli._common import SubGroup, get_now, get_settings

F = TypeVar("F", bound=Any)


@click.group(cls=SubGroup)
def state() -> None:
    """Carry the database between machines through a git remote, encrypted
    (NEWSLETTER_STATE_KEY), on a branch of its own (--state-branch, default
    newsletter-state)."""


def where(fn: F) -> F:
    """--remote and --branch on each command (the same as the global --state-remote and
    --state-branch, which also read NEWSLETTER_STATE_REMOTE and NEWSLETTER_STATE_BRANCH)."""
    fn = click.option("--branch", help="Branch of the state [default: --state-branch].")(fn)
    return click.option("--remote", help="Git remote of the state: a remote name, a URL or a "
                        "path [default: --state-remote].")(fn)


def _target(ctx: click.Context, remote: str | None, branch: str | None) -> tuple[str, str, str]:
    s = get_settings(ctx)
    return remote or s.state_remote, branch or s.state_branch, s.state_key


@state.command(name="pull")
@where
@click.pass_context
def state_pull(ctx: click.Context, remote: str | None, branch: str | None) -> None:
    """Fetch the state from --state-remote, decrypt it and merge it into the database
    (made if missing). The scheduled job's first step; also how a person inspects the list
    on a laptop.

    \b
    Example:
        NEWSLETTER_STATE_KEY=... newsletter state pull --remote git@github.com:me/list.git
    """
    from newsletter.ops import statesync

    remote, branch, key = _target(ctx, remote, branch)
    click.echo(statesync.pull(get_settings(ctx).db, remote, branch, key))


@state.command(name="push")
@click.option("--message", "-m", default="", help="Start of the commit message; what changed "
              "is added to it (\"Morning run: 3 sent, 1 unsubscribed\").")
@click.option("--new-history", is_flag=True,
              help="Replace the branch by one commit (after rotating the key: the commits "
              "made with the old key are no longer on the branch). Asks first.")
@click.option("--yes", is_flag=True, help="Do not ask before --new-history.")
@where
@click.pass_context
def state_push(ctx: click.Context, message: str, new_history: bool, yes: bool,
               remote: str | None, branch: str | None) -> None:
    """Merge what the remote has now into the database, prune what is older than
    --state-retention-days, encrypt and push: one commit, only if something changed, saying
    what changed. The scheduled job's last step.

    \b
    Example:
        newsletter state push -m "Morning run"
    """
    from newsletter.ops import statesync

    s = get_settings(ctx)
    remote, branch, key = _target(ctx, remote, branch)
    if s.state_retention_days < 1:
        raise click.BadParameter("must be at least 1 (days)",
                                 param_hint="--state-retention-days")
    if new_history and not yes:
        click.confirm(f"Replace branch {branch} on {remote} by this database "
                      "alone (changes pushed by others since your last pull are lost)?",
                      abort=True)
    click.echo(statesync.push(s.db, remote, branch, key, message=message,
                              retention_days=s.state_retention_days, now=get_now(),
                              new_history=new_history))


@state.command(name="keygen")
def state_keygen() -> None:
    """Print a new random state key, for the NEWSLETTER_STATE_KEY secret. Keep a copy
    somewhere safe: without it the state cannot be read.

    \b
    Example:
        newsletter state keygen | gh secret set NEWSLETTER_STATE_KEY
    """
    from newsletter.ops import statesync

    click.echo(statesync.new_key())


@state.command(name="watch")
@click.option("--interval", default=5.0, show_default=True,
              help="Seconds between looks for changes to push.")
@click.option("--pull-every", default=300.0, show_default=True,
              help="Seconds between pulls of the scheduled job's state.")
@where
@click.pass_context
def state_watch(ctx: click.Context, interval: float, pull_every: float, remote: str | None,
                branch: str | None) -> None:
    """Run next to "newsletter serve" (same NEWSLETTER_DB): pull the state now and every
    --pull-every seconds, and push every change the endpoint makes (unsubscribes,
    confirmations, pauses) within --interval seconds, so the next scheduled run, which pulls
    first, honours it. Stop with Ctrl-C.

    \b
    Example:
        newsletter state watch & newsletter serve --port 8025
    """
    from newsletter.ops import statesync

    s = get_settings(ctx)
    remote, branch, key = _target(ctx, remote, branch)
    try:
        statesync.watch(s.db, remote, branch, key,
                        say=lambda line: click.echo(line, err=True), interval=interval,
                        pull_every=pull_every, retention_days=s.state_retention_days)
    except KeyboardInterrupt:
        pass
