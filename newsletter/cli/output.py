"""How a command talks: one JSON document for scripts, lines for people, a progress bar on
a terminal, and a question before destroying anything.

With ``--json`` standard output holds exactly one JSON document (its shape is in
``docs/json/<command>.schema.json``) and every human line goes to standard error. A progress
bar is drawn only when both standard output and standard error are terminals, never with
``--json`` or ``--quiet``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


JSON_HELP = ("Print one JSON document on standard output (human lines go to standard "
             "error); the shape is in the README.")


def verbosity_options(fn: F) -> F:
    fn = click.option("-v", "--verbose", is_flag=True,
                      help="Print a line for every item, even on a terminal.")(fn)
    fn = click.option("-q", "--quiet", is_flag=True,
                      help="Print only the summary and problems; no progress bar.")(fn)
    return fn


def yes_option(fn: F) -> F:
    return click.option("--yes", "-y", is_flag=True,
                        help="Do it without asking (needed when not on a terminal).")(fn)


def confirm(yes: bool, question: str) -> None:
    """Ask before destroying data: on a terminal a y/N question (no aborts, exit 1); without
    a terminal, refuse unless ``--yes`` was given."""
    if yes:
        return
    if not _is_terminal(sys.stdin):
        raise click.ClickException(
            f"{question.rstrip('?')}: not asking, standard input is not a terminal - "
            "pass --yes to confirm")
    click.confirm(question, abort=True, err=True)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Console:
    """The lines of one command. ``line`` is ordinary output (hidden by --quiet), ``detail``
    only with --verbose, ``result`` always (the summary), ``warn`` always on standard
    error. With --json every line goes to standard error."""

    def __init__(self, as_json: bool = False, quiet: bool = False, verbose: bool = False):
        self.as_json, self.quiet, self.verbose = as_json, quiet, verbose
        self.interactive = (not as_json and not quiet and _is_terminal(sys.stdout)
                            and _is_terminal(sys.stderr))
        self._bar: Any = None

    def _echo(self, text: str, err: bool = False) -> None:
        err = err or self.as_json
        if self._bar is not None:  # clear the bar's line, print, redraw the bar
            click.echo("\r\033[K", nl=False, err=True)
            click.echo(text, err=err)
            self._bar.render_progress()
            return
        click.echo(text, err=err)

    def line(self, text: str, err: bool = False) -> None:
        if not self.quiet:
            self._echo(text, err)

    def detail(self, text: str, err: bool = False) -> None:
        if self.verbose:
            self._echo(text, err)

    def result(self, text: str, err: bool = False) -> None:
        self._echo(text, err)

    def warn(self, text: str) -> None:
        self._echo(text, err=True)

    def document(self, doc: Any) -> None:
        """Print the command's JSON document (only with --json)."""
        if self.as_json:
            click.echo(json.dumps(doc, indent=2, ensure_ascii=False))

    @contextmanager
    def progress(self, length: int, label: str) -> Iterator[Progress]:
        """A bar on standard error with ``length`` steps, shown only on a terminal."""
        if not self.interactive or length <= 0:
            yield Progress(None)
            return
        stderr = sys.stderr
        bar: Any = click.progressbar(  # redrawn at most ~200 times
            length=length, label=label, file=stderr, show_pos=True, show_percent=True,
            show_eta=True, width=24,
            item_show_func=_show, update_min_steps=max(1, length // 200))
        with bar:
            self._bar = bar
            try:
                yield Progress(bar)
            finally:
                self._bar = None

    @contextmanager
    def ticker(self, label: str) -> Iterator[Callable[[int], None]]:
        """A ``tick`` for a library loop: ``tick(total)`` once, then ``tick(0)`` per item."""
        with ExitStack() as stack:
            bar: list[Progress] = []

            def tick(n: int) -> None:
                if bar:
                    bar[0].advance(1)
                else:
                    bar.append(stack.enter_context(self.progress(n, label)))

            yield tick


def _show(item: str | None) -> str | None:
    return item


class Progress:
    def __init__(self, bar: Any):
        self.bar = bar

    def advance(self, steps: int = 1, item: str | None = None) -> None:
        if self.bar is not None:
            self.bar.update(steps, item)

    def to(self, position: int, item: str | None = None) -> None:
        """Move to ``position`` (steps done so far), showing ``item`` as the current one."""
        if self.bar is not None:
            self.bar.update(max(0, position - self.bar.pos), item)
