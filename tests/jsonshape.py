"""Check a --json document against its documented shape (docs/json/<command>.schema.json).

The schemas are JSON Schema (2020-12) using a small subset: type, enum, properties,
required, additionalProperties: false, items, minimum, anyOf, description. This checker
implements exactly that subset and refuses any other keyword, so a schema cannot use
something that is silently not checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "json"
KNOWN = {"$schema", "$id", "title", "description", "type", "enum", "properties", "required",
         "additionalProperties", "items", "minimum", "anyOf"}
TYPES: dict[str, Any] = {"object": dict, "array": list, "string": str, "boolean": bool,
                         "null": type(None), "integer": int, "number": (int, float)}


def schema_for(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))


def problems(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Every way VALUE breaks SCHEMA, as "path: what" lines (empty when it fits)."""
    unknown = set(schema) - KNOWN
    if unknown:
        raise ValueError(f"{where}: schema keyword(s) this checker does not implement: "
                         f"{sorted(unknown)}")
    if "anyOf" in schema:
        if all(problems(value, alt, where) for alt in schema["anyOf"]):
            return [f"{where}: matches none of the alternatives"]
    if "type" in schema and not _fits(value, schema["type"]):
        want = schema["type"] if isinstance(schema["type"], str) else "/".join(schema["type"])
        return [f"{where}: {type(value).__name__} {value!r:.60} is not {want}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    out: list[str] = []
    if "minimum" in schema and isinstance(value, int | float) and value < schema["minimum"]:
        out.append(f"{where}: {value} is below {schema['minimum']}")
    if isinstance(value, dict):
        out += _object_problems(value, schema, where)
    if isinstance(value, list) and "items" in schema:
        for n, item in enumerate(value):
            out += problems(item, schema["items"], f"{where}[{n}]")
    return out


def _fits(value: Any, types: str | list[str]) -> bool:
    for t in [types] if isinstance(types, str) else types:
        if isinstance(value, bool) and t in ("integer", "number"):
            continue
        if isinstance(value, TYPES[t]):
            return True
    return False


def _object_problems(value: dict[str, Any], schema: dict[str, Any], where: str) -> list[str]:
    out = [f"{where}: missing {key!r}" for key in schema.get("required", [])
           if key not in value]
    props = schema.get("properties", {})
    for key, item in value.items():
        if key in props:
            out += problems(item, props[key], f"{where}.{key}")
        elif schema.get("additionalProperties") is False:
            out.append(f"{where}: {key!r} is not documented")
    return out


def command_path(root: click.Group, args: list[str]) -> list[str]:
    """The subcommand names ARGS invoke, e.g. ["subscribers", "list"] (a group's default
    subcommand included)."""
    path: list[str] = []
    cmd: click.Command = root
    for arg in args:
        if not isinstance(cmd, click.Group) or arg not in cmd.commands:
            break
        path.append(arg)
        cmd = cmd.commands[arg]
    while isinstance(cmd, click.Group) and getattr(cmd, "default_cmd_name", None):
        name = cmd.default_cmd_name  # type: ignore[attr-defined]
        path.append(name)
        cmd = cmd.commands[name]
    return path


def check(root: click.Group, args: list[str], stdout: str) -> Any:
    """Parse a --json command's standard output and check it against its schema."""
    name = "-".join(command_path(root, args))
    doc = json.loads(stdout)  # exactly one JSON document: anything else fails here
    found = problems(doc, schema_for(name))
    assert not found, f"newsletter {' '.join(args)} --json breaks docs/json/{name}" \
                      f".schema.json:\n" + "\n".join(found[:20])
    return doc
