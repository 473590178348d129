"""Papers: stored once each, whatever the source."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlite_utils import Database
from sqlite_utils.db import NotFoundError

from newsletter.errors import PaperNotFound
from newsletter.models import Paper
from newsletter.store.db import iso, transaction, utcnow


def _paper_row(p: Paper) -> dict[str, Any]:
    return {
        "id": p.id,
        "source": p.source,
        "venue": p.venue,
        "title": p.title,
        "authors": json.dumps(list(p.authors), ensure_ascii=False),
        "abstract": p.abstract,
        "url": p.url,
        "pdf_url": p.pdf_url,
        "doi": p.doi,
        "categories": json.dumps(list(p.categories)),
        "published": iso(p.published),
        "updated": iso(p.updated),
        "code_url": p.code_url,
    }


def _to_paper(row: dict[str, Any]) -> Paper:
    return Paper(
        id=row["id"],
        source=row["source"],
        venue=row["venue"],
        title=row["title"],
        authors=tuple(json.loads(row["authors"] or "[]")),
        abstract=row["abstract"] or "",
        url=row["url"] or "",
        pdf_url=row["pdf_url"],
        doi=row["doi"],
        categories=tuple(json.loads(row["categories"] or "[]")),
        published=datetime.fromisoformat(row["published"]),
        updated=datetime.fromisoformat(row["updated"]) if row["updated"] else None,
        code_url=row["code_url"],
    )


def title_key(p: Paper) -> str:
    """Normalised title + first author's family name: the last-resort identity of a paper."""
    import re

    from newsletter.text import fold

    def norm(text: str) -> str:
        return re.sub(r"[^\w]+", " ", fold(text)).strip()

    family = norm(p.authors[0]).split()[-1] if p.authors and norm(p.authors[0]) else ""
    return f"{norm(p.title)}|{family}"


def _find_same(db: Database, p: Paper, key: str) -> dict[str, Any] | None:
    """The stored record of the same paper: by id, then DOI, then title + first author."""
    for where, arg in (("id = ?", p.id), ("doi = ?", p.doi), ("title_key = ?", key)):
        if arg:
            rows = list(db.table("papers").rows_where(where, [arg], limit=1))
            if rows:
                return rows[0]
    return None


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Fill what the stored record lacks; union the categories; an arXiv record keeps its
    id and links, a journal adds its venue and DOI."""
    changes: dict[str, Any] = {}
    for k, v in new.items():
        if k in ("id", "first_seen") or v in (None, "", "[]"):
            continue
        if k == "categories":
            merged = list(dict.fromkeys(json.loads(old.get(k) or "[]") + json.loads(v)))
            if merged != json.loads(old.get(k) or "[]"):
                changes[k] = json.dumps(merged)
        elif old.get(k) in (None, "", "[]"):
            changes[k] = v
        elif k in ("abstract",) and len(v) > len(old[k] or ""):
            changes[k] = v  # a fuller abstract wins over a teaser
        elif k in ("updated",) and v > (old.get(k) or ""):
            changes[k] = v
    return changes


def upsert_papers(db: Database, papers: Iterable[Paper], now: datetime | None = None
                  ) -> tuple[int, int]:
    """Store each paper once, however many sources carry it; returns (new, updated).
    ``first_seen`` never moves, so a paper is new only once."""
    seen = iso(now or utcnow())
    new = updated = 0
    with transaction(db):
        for p in papers:
            row = _paper_row(p)
            row["title_key"] = title_key(p)
            old = _find_same(db, p, row["title_key"])
            if old is None:
                db.table("papers").insert({**row, "first_seen": seen})
                new += 1
            else:
                changes = _merge(old, row)
                if changes:
                    db.table("papers").update(old["id"], changes)
                    updated += 1
    return new, updated


def list_papers(db: Database, source: str | None = None, since: datetime | None = None,
                limit: int | None = None) -> list[Paper]:
    where: list[str] = []
    args: list[Any] = []
    if source:
        where.append("source = ?")
        args.append(source)
    if since:
        where.append("first_seen >= ?")
        args.append(iso(since))
    rows = db.table("papers").rows_where(" and ".join(where) or None, args,
                                         order_by="first_seen desc, published desc",
                                         limit=limit)
    return [_to_paper(r) for r in rows]


def papers_first_seen_since(db: Database, since: datetime
                            ) -> tuple[list[Paper], list[datetime]]:
    """Papers first seen since ``since``, with when each was first seen."""
    rows = list(db.table("papers").rows_where("first_seen >= ?", [iso(since)],
                                              order_by="published desc"))
    return [_to_paper(r) for r in rows], [datetime.fromisoformat(r["first_seen"]) for r in rows]


def get_paper(db: Database, paper_id: str) -> Paper:
    try:
        return _to_paper(db.table("papers").get(paper_id))
    except NotFoundError:
        raise PaperNotFound(f"no paper {paper_id} - see \"newsletter papers list\"") from None


def get_papers(db: Database, paper_ids: Sequence[str]) -> list[Paper]:
    """The papers with these ids, in that order, in one query; ids no longer stored (pruned)
    are left out."""
    found: dict[str, Paper] = {}
    for start in range(0, len(paper_ids), 500):
        chunk = list(paper_ids[start:start + 500])
        marks = ",".join("?" * len(chunk))
        for row in db.query(f"select * from papers where id in ({marks})", chunk):
            found[row["id"]] = _to_paper(row)
    return [found[i] for i in paper_ids if i in found]


def papers_with_dois(db: Database, dois: Iterable[str]) -> list[Paper]:
    """Stored papers whose DOI is one of ``dois`` (lower case)."""
    wanted = list(dict.fromkeys(dois))
    if not wanted:
        return []
    return [_to_paper(r) for r in db.query(
        "select * from papers where doi in (select value from json_each(?))",
        [json.dumps(wanted)])]


def paper_id_for(db: Database, key: str, is_doi: bool) -> str:
    """The stored id of the paper with this arXiv id or DOI (after it was upserted under
    another record's id, the merge keeps the first)."""
    row = db.execute("select id from papers where id = ? or (? and doi = ?) limit 1",
                     (key, is_doi, key)).fetchone()
    if row is None:
        raise PaperNotFound(f"no paper {key} - see \"newsletter papers list\"")
    return str(row[0])


def fts_search(db: Database, expression: str, since: datetime | None = None,
               ids: Iterable[str] | None = None) -> dict[str, float]:
    """Papers matching an FTS5 expression over title and abstract, with their relevance
    (bm25, title weighted twice; higher is better), optionally only those first seen since
    ``since`` or among ``ids``."""
    sql = ("select p.id, -bm25(papers_fts, 2.0, 1.0) as score from papers_fts"
           " join papers p on p.rowid = papers_fts.rowid where papers_fts match ?")
    args: list[Any] = [expression]
    if since is not None:
        sql += " and p.first_seen >= ?"
        args.append(iso(since))
    if ids is not None:
        wanted = list(ids)
        sql += f" and p.id in ({','.join('?' * len(wanted))})"
        args.extend(wanted)
    return {row[0]: float(row[1]) for row in db.execute(sql, args).fetchall()}
