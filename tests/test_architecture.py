"""The folder is the pipeline: who may import what, and help that stays cheap.

Each rule is a function from one module's source to the violations in it; the rule runs
over every module of the package, and a second test plants a violation to show that the
rule catches it (a rule that cannot fail is no check).
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Callable, Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

import click
import pytest
from conftest import invoke

from newsletter.cli import cli

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "newsletter"

# Modules that take a Database handle to pass to the store (for type hints and calls into
# it); none of them writes SQL or calls the database itself.
HANDLES_DB = ("pipeline.py", "lists/roster.py", "ops/demo.py", "lists/mailbox.py",
              "lists/listio.py", "ops/source_admin.py")
# The network modules: only these may import what opens a socket (or runs git, which does).
NETWORK = ("sources/arxiv.py", "sources/doi.py", "sources/feeds.py", "send.py",
           "lists/mailbox.py", "brief.py", "ops/statesync.py", "ops/doctor.py", "web/",
           "safety/deadline.py")
OPENS_SOCKETS = {"socket", "ssl", "smtplib", "imaplib", "poplib", "ftplib", "http.client",
                 "http.server", "socketserver", "urllib.request", "requests", "urllib3",
                 "httpx", "aiohttp", "uvicorn", "litellm", "arxiv", "feedparser",
                 "subprocess", "asyncio", "dns.resolver"}
DB_CALLS = {"execute", "executemany", "executescript", "query", "table", "insert",
            "insert_all", "upsert", "upsert_all"}
HEAVY = {"mjml", "premailer", "arxiv", "feedparser", "jinja2", "litellm"}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def rel(path: Path) -> str:
    return str(path.relative_to(PACKAGE))


def dotted(name: str) -> str:
    """``store/db.py`` -> ``newsletter.store.db``; ``store/__init__.py`` -> ``newsletter.store``."""
    parts = ["newsletter", *Path(name).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(name: str) -> str:
    here = dotted(name)
    return here if name.endswith("__init__.py") else here.rsplit(".", 1)[0]


def imported(tree: ast.AST, name: str) -> Iterator[tuple[str, list[str]]]:
    """(module, [names]) for every import anywhere in the module, relative ones resolved."""
    here = dotted(name).split(".")
    package = here if name.endswith("__init__.py") else here[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package[:len(package) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            yield base, [a.name for a in node.names]


def _in(module: str, names: set[str]) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


# --- the rules: (module path relative to newsletter/, its AST) -> violations -------------

def rule_litellm(name: str, tree: ast.AST) -> list[str]:
    if name == "brief.py":
        return []
    return [f"{name} imports litellm; only brief.py may"
            for mod, _ in imported(tree, name) if _in(mod, {"litellm"})]


def rule_database_imports(name: str, tree: ast.AST) -> list[str]:
    if name.startswith("store/") or name in HANDLES_DB:
        return []
    return [f"{name} imports {mod}; only store/ talks to the database"
            for mod, _ in imported(tree, name) if _in(mod, {"sqlite_utils", "sqlite3"})]


def rule_database_calls(name: str, tree: ast.AST) -> list[str]:
    if name.startswith("store/"):
        return []
    return [f"{name}:{node.lineno} calls .{node.func.attr}(); only store/ may"
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in DB_CALLS]


def rule_sql_text(name: str, tree: ast.AST) -> list[str]:
    if name.startswith("store/"):
        return []
    verbs = ("select ", "insert into", "update ", "delete from", "create table")
    return [f"{name}:{node.lineno} holds SQL ({node.value[:30]!r}); only store/ may"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value.lower().lstrip().startswith(verbs)]


def rule_sockets(name: str, tree: ast.AST) -> list[str]:
    if any(name == n or (n.endswith("/") and name.startswith(n)) for n in NETWORK):
        return []
    found = []
    for mod, names in imported(tree, name):
        full = {mod} | {f"{mod}.{n}" for n in names}
        if any(_in(m, OPENS_SOCKETS) for m in full):
            found.append(f"{name} imports {mod}; only the network modules open sockets")
    return found


def rule_cli_light(name: str, tree: ast.AST) -> list[str]:
    if not name.startswith("cli/"):  # --help stays cheap: heavy libraries load in commands
        return []
    return [f"{name} imports {mod}, which is heavy"
            for mod, _ in imported(tree, name) if _in(mod, HEAVY)]


def rule_private_names(name: str, tree: ast.AST) -> list[str]:
    """No module uses another module's underscore names: not imported by name, not read as
    an attribute of an imported module, and no name-mangled (``_Class__x``) attribute."""
    found, bound = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            bound.update(a.asname or a.name for a in node.names)
            found += [f"{name} imports {a.name} from {node.module}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
            parts = (node.module or "").split(".")
            private = [i for i, p in enumerate(parts) if p.startswith("_")
                       and not p.startswith("__")]
            # a package's private module (cli/_common.py) is for that package's modules
            if private and ".".join(parts[:private[0]]) != package_of(name):
                found.append(f"{name} imports from private module {node.module}")
    return found + _private_attributes(name, tree, bound)


def _private_attributes(name: str, tree: ast.AST, bound: set[str]) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or node.attr.startswith("__"):
            continue
        if "__" in node.attr[1:] and node.attr.startswith("_"):
            found.append(f"{name}:{node.lineno} uses the name-mangled {node.attr}")
        elif node.attr.startswith("_"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                found.append(f"{name}:{node.lineno} uses {ast.unparse(node)}")
    return found


def declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = set()
    for req in project["dependencies"]:
        for stop in "<>=!~[; ":
            req = req.split(stop)[0]
        names.add(req.lower().replace("_", "-"))
    return names


DECLARED = declared_distributions()
DISTRIBUTIONS = packages_distributions()


def rule_declared(name: str, tree: ast.AST) -> list[str]:
    found = []
    for mod, _ in imported(tree, name):
        top = mod.split(".")[0]
        if not top or top == "newsletter" or top in sys.stdlib_module_names:
            continue
        dists = {d.lower().replace("_", "-") for d in DISTRIBUTIONS.get(top, [])}
        if not dists & DECLARED:
            found.append(f"{name} imports {top}, which is no declared dependency "
                         f"(pyproject.toml [project] dependencies)")
    return found


RULES: list[Callable[[str, ast.AST], list[str]]] = [
    rule_litellm, rule_database_imports, rule_database_calls, rule_sql_text, rule_sockets,
    rule_cli_light, rule_private_names, rule_declared]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.__name__)
def test_rule_holds_for_every_module(rule):
    found = [v for p in modules() for v in rule(rel(p), ast.parse(p.read_text()))]
    assert found == []


PLANTED = [
    (rule_litellm, "match.py", "def f():\n    import litellm\n", "brief.py"),
    (rule_database_imports, "render.py", "from sqlite_utils import Database\n",
     "store/papers.py"),
    (rule_database_calls, "lists/roster.py", "def f(db):\n    db.execute('x')\n",
     "store/db.py"),
    (rule_database_calls, "pipeline.py", "def f(db):\n    return db.query('x')\n",
     "store/db.py"),
    (rule_database_calls, "ops/demo.py", "def f(db):\n    db.table('p').insert({})\n",
     "store/db.py"),
    (rule_database_calls, "ops/demo.py", "def f(db):\n    db['p'].upsert({}, pk='id')\n",
     "store/db.py"),
    (rule_sql_text, "match.py", "Q = 'SELECT id FROM papers'\n", "store/papers.py"),
    (rule_sockets, "render.py", "import socket\n", "send.py"),
    (rule_sockets, "match.py", "from urllib import request\n", "sources/feeds.py"),
    (rule_sockets, "lists/roster.py", "def f():\n    import smtplib\n", "web/endpoint.py"),
    (rule_cli_light, "cli/papers.py", "import jinja2\n", "render.py"),
    (rule_private_names, "pipeline.py", "from newsletter.store.db import _iso\n", None),
    (rule_private_names, "sources/feeds.py",
     "import feedparser.datetimes\nx = feedparser.datetimes._parse_date\n", None),
    (rule_private_names, "sources/feeds.py", "import feedparser\nx = feedparser._x\n", None),
    (rule_private_names, "sources/arxiv.py", "def f(self):\n    self._Client__try()\n", None),
    (rule_private_names, "pipeline.py", "from newsletter.cli._common import get_db\n",
     "cli/papers.py"),
    (rule_declared, "match.py", "import yaml_but_not_declared\n", None),
    (rule_declared, "render.py", "import pytest\n", None),
]


@pytest.mark.parametrize("rule,name,source,allowed_in", PLANTED,
                         ids=[f"{r.__name__}-{n}" for r, n, *_ in PLANTED])
def test_rule_catches_a_planted_violation(rule, name, source, allowed_in):
    assert rule(name, ast.parse(source)), f"{rule.__name__} missed a violation in {name}"
    if allowed_in:  # and lets the module that may do it do it
        assert rule(allowed_in, ast.parse(source)) == []


def shared_names(paths: list[str]) -> dict[str, list[str]]:
    """Module and package names used by three or more modules (``__init__`` aside)."""
    by_name: dict[str, list[str]] = {}
    for name in paths:
        path = Path(name)
        stem = path.parent.name if path.stem == "__init__" else path.stem
        if stem and stem != "__main__":
            by_name.setdefault(stem, []).append(name)
    return {k: v for k, v in by_name.items() if len(v) >= 3}


def test_no_three_modules_share_a_name():
    assert shared_names([rel(p) for p in modules()]) == {}


def test_shared_name_check_catches_three_namesakes():
    planted = ["sources/__init__.py", "store/sources.py", "cli/sources.py", "store/papers.py",
               "cli/papers.py"]
    assert shared_names(planted) == {
        "sources": ["sources/__init__.py", "store/sources.py", "cli/sources.py"]}


# --- import cycles ------------------------------------------------------------------------

def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (also inside functions)."""
    known = {dotted(n) for n in sources}
    graph: dict[str, set[str]] = {}
    for name, text in sources.items():
        edges = set()
        for mod, names in imported(ast.parse(text), name):
            for target in [f"{mod}.{n}" for n in names] or [mod]:
                if target in known:
                    edges.add(target)
                elif mod in known:
                    edges.add(mod)
        graph[dotted(name)] = edges - {dotted(name)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    graph = import_graph({rel(p): p.read_text() for p in modules()})
    assert find_cycle(graph) is None


def test_cycle_check_catches_a_planted_cycle():
    planted = {"store/events.py": "def f():\n    from newsletter.store.subscribers import g\n",
               "store/subscribers.py": "from newsletter.store import events\n",
               "store/db.py": ""}
    assert find_cycle(import_graph(planted)) == [
        "newsletter.store.events", "newsletter.store.subscribers", "newsletter.store.events"]
    planted["store/subscribers.py"] = "from newsletter.store import db\n"
    assert find_cycle(import_graph(planted)) is None


# --- help ----------------------------------------------------------------------------------

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
