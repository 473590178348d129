"""The folder is the pipeline: who may import what, and help that stays cheap."""

import ast
from pathlib import Path

import click
import pytest
from conftest import invoke

from newsletter.cli import cli

PACKAGE = Path(__file__).resolve().parent.parent / "newsletter"


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_import_boundaries(path):
    used = imports(path)
    name = str(path.relative_to(PACKAGE))
    if name != "brief.py":
        assert "litellm" not in used, f"{name} imports litellm; only brief.py may"
    # these take a Database handle to pass to the store; none of them writes SQL
    handles_db = ("pipeline.py", "lists/roster.py", "ops/demo.py", "lists/mailbox.py",
                  "lists/listio.py", "ops/source_admin.py")
    if not name.startswith("store/") and name not in handles_db:
        assert "sqlite_utils" not in used and "sqlite3" not in used, \
            f"{name} talks to the database; only store.py may"
    if name.startswith("cli/"):  # --help stays cheap: heavy libraries load inside commands
        assert not used & {"mjml", "premailer", "arxiv", "feedparser", "jinja2", "litellm"}


def test_only_store_writes_sql():
    for path in modules():
        if "store" in path.parts or path.name == "migrations.py":
            continue
        text = path.read_text().lower()
        for verb in ("select ", "insert into", "update ", "delete from"):
            assert f'"{verb}' not in text and f"'{verb}" not in text, (path, verb)


def _commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


@pytest.mark.parametrize("path", [p for p, _ in _commands(cli)], ids=" ".join)
def test_every_command_has_help_with_an_example(path):
    command = cli
    for part in path:
        command = command.commands[part]
    assert command.help, f"{path} has no help"
    out = invoke(*path, "--help").output
    assert out.startswith("Usage: ")
    if not isinstance(command, click.Group):
        assert "Example:" in out, f"{' '.join(path)} --help shows no example"
