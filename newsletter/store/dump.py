"""The database as a set of chunks: what ``state push`` encrypts and ``state pull`` reads.

Every ordinary table is written as JSON lines (the column names, then one array per row, in
row order); tables that grow with time are cut into one chunk per hour of their immutable
time column (``deliveries/2026-11/30/07``), so a chunk from a past hour never changes again
and git stores it once. Full-text indexes are not written: they are rebuilt from the papers
on restore. SQLite's own file format never leaves the machine.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlite_utils import Database

from newsletter.errors import NewsletterError
from newsletter.store.db import transaction

TIMED = {"deliveries": "created", "papers": "first_seen", "subscriber_events": "created",
         "llm_calls": "created", "brief_hits": "created", "briefs": "created",
         "brief_fallbacks": "created"}
_SKIP = ("_sqlite_migrations",)


def _tables(db: Database) -> list[str]:
    rows = db.execute("select name, sql from sqlite_master where type = 'table'"
                      " and name not like 'sqlite_%' order by name").fetchall()
    virtual = [n for n, sql in rows if (sql or "").upper().startswith("CREATE VIRTUAL")]
    return [n for n, _ in rows if n not in _SKIP and n not in virtual
            and not any(n.startswith(v + "_") for v in virtual)]


def _chunk_name(table: str, stamp: Any) -> str:
    if table not in TIMED:
        return table
    text = str(stamp or "")
    if len(text) < 13:
        return f"{table}/undated"
    return f"{table}/{text[:7]}/{text[8:10]}/{text[11:13]}"


def dump_chunks(db: Database) -> dict[str, bytes]:
    """{chunk name: JSON-lines bytes} for every non-empty table; the same database gives the
    same bytes. SQLite writes each row's JSON itself (json_array), which keeps a push of a
    year-old list fast."""
    out: dict[str, list[str]] = {}
    for table in _tables(db):
        columns = [c.name for c in db.table(table).columns]
        header = json.dumps(columns)
        stamp = f'"{TIMED[table]}"' if table in TIMED else "null"
        cursor = db.execute(
            f"select {stamp}, json_array({', '.join(f'{chr(34)}{c}{chr(34)}' for c in columns)})"
            f' from "{table}" order by rowid')
        for at, line in cursor:
            name = _chunk_name(table, at)
            lines = out.get(name)
            if lines is None:
                lines = out[name] = [header]
            lines.append(line)
    return {name: ("\n".join(lines) + "\n").encode() for name, lines in out.items()}


def restore_chunks(db: Database, chunks: Mapping[str, bytes]) -> None:
    """Replace the contents of a (freshly migrated) database by CHUNKS."""
    known = set(_tables(db))
    by_table: dict[str, list[bytes]] = {}
    for name, data in chunks.items():
        table = name.split("/", 1)[0]
        if table not in known:
            raise NewsletterError(f"the state holds a table {table!r} this version does not "
                                  "know - upgrade newsletter (git pull, make install)")
        by_table.setdefault(table, []).append(data)
    with transaction(db):
        db.execute("PRAGMA defer_foreign_keys = ON")
        for table in known:
            db.execute(f'delete from "{table}"')
        for table, parts in by_table.items():
            have = {c.name for c in db.table(table).columns}
            for data in parts:
                lines = data.decode().splitlines()
                columns = json.loads(lines[0])
                missing = set(columns) - have
                if missing:
                    raise NewsletterError(
                        f"the state's {table} has a column {sorted(missing)[0]!r} this version "
                        "does not know - upgrade newsletter (git pull, make install)")
                cols = ", ".join(f'"{c}"' for c in columns)
                marks = ", ".join("?" * len(columns))
                db.conn.executemany(f'insert into "{table}" ({cols}) values ({marks})',
                                    (json.loads(line) for line in lines[1:]))


__all__ = ["TIMED", "dump_chunks", "restore_chunks"]
