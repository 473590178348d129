"""What every command module shares: error handling, the settings options, the run's
database, settings and clock. Imports nothing from the command modules, so no cycle."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from click_default_group import DefaultGroup

from newsletter.config import SETTINGS, Settings, load_toml
from newsletter.errors import NewsletterError

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class ErrorsAsMessages(click.Group):
    """Turn domain errors into one-line ``Error: ...`` messages (exit 1).

    Set NEWSLETTER_RAISE_ERRORS=1 to see the traceback instead.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NewsletterError as e:
            if os.environ.get("NEWSLETTER_RAISE_ERRORS"):
                raise
            raise click.ClickException(str(e)) from e


class SubGroup(ErrorsAsMessages, DefaultGroup):
    pass


def load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    path = value or "newsletter.toml"
    try:
        ctx.default_map = {**(ctx.default_map or {}), **load_toml(path)}
    except NewsletterError as e:
        raise click.BadParameter(str(e)) from e
    return value


def settings_options(fn: F) -> F:
    for s in reversed(SETTINGS):
        fn = click.option(
            s.flag, s.name, envvar=s.envvar, show_envvar=True, type=s.type,
            default=s.default, show_default=not s.secret and s.default != "",
            help=s.help, metavar="TEXT" if s.type is str else None,
        )(fn)
    return fn


def get_settings(ctx: click.Context) -> Settings:
    obj: Settings = ctx.find_root().obj
    return obj


def get_db(ctx: click.Context) -> Any:
    from newsletter import store

    return store.open_db(get_settings(ctx).db)


def get_now() -> datetime:
    fixed = os.environ.get("NEWSLETTER_NOW")  # for reproducible demos and tests
    return datetime.fromisoformat(fixed) if fixed else datetime.now(UTC)


def json_option(help: str) -> Callable[[F], F]:
    """``--json``: print for a script to read instead of for a person."""
    option: Callable[[F], F] = click.option("--json", "as_json", is_flag=True, help=help)
    return option
