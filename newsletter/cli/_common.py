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
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as e:  # a database or file problem met mid-command: one line too
            if os.environ.get("NEWSLETTER_RAISE_ERRORS"):
                raise
            from newsletter.store.db import database_message

            root = ctx.find_root().obj
            message = database_message(root.db if isinstance(root, Settings) else "?", e)
            if message is not None:
                raise click.ClickException(message) from e
            if isinstance(e, OSError):
                raise click.ClickException(one_line(
                    f"{e.strerror or e} ({e.filename}) - check the path and its permissions"
                    if e.filename else f"{type(e).__name__}: {e}")) from e
            raise


def one_line(text: str) -> str:
    return " ".join(text.split())


class SubGroup(ErrorsAsMessages, DefaultGroup):
    pass


def load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    path = value or "newsletter.toml"
    try:
        ctx.default_map = {**(ctx.default_map or {}), **load_toml(path)}
    except NewsletterError as e:
        if os.environ.get("NEWSLETTER_RAISE_ERRORS"):
            raise
        raise BadConfig(str(e)) from e  # one line, not a usage screen
    return value


class BadConfig(click.ClickException):
    exit_code = 2  # the settings file is unusable, like a bad option


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
