"""The only module that talks SQL. Everything else receives and returns models."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database
from sqlite_utils.db import NotFoundError

from newsletter.errors import (
    NewsletterError,
    PaperNotFound,
    SubscriberExists,
    SubscriberNotFound,
)
from newsletter.migrations import migrations
from newsletter.models import Paper, Subscriber

FILTER_KINDS = ("author", "topic", "category", "exclude")
_FILTER_FIELD = {"author": "authors", "topic": "topics", "category": "categories",
                 "exclude": "exclude"}


def utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat(timespec="seconds") if dt else None


def open_db(path: str | Path) -> Database:
    """Open (creating if needed) the database and apply pending migrations."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = Database(path)
        db.execute("PRAGMA journal_mode=WAL")
    else:
        db = Database(memory=True)
    db.execute("PRAGMA foreign_keys=ON")
    migrations.apply(db)
    return db


@contextmanager
def transaction(db: Database) -> Iterator[None]:
    with db.conn:
        yield


# --- subscribers -------------------------------------------------------------------------


def _subscriber_row(db: Database, email: str) -> dict[str, Any]:
    rows = list(db.table("subscribers").rows_where("lower(email) = lower(?)", [email], limit=1))
    if not rows:
        raise SubscriberNotFound(
            f"no subscriber {email} - see \"newsletter subscribers list\""
        )
    return rows[0]


def _to_subscriber(db: Database, row: dict[str, Any]) -> Subscriber:
    filters: dict[str, list[str]] = {k: [] for k in FILTER_KINDS}
    for f in db.table("filters").rows_where("subscriber_id = ?", [row["id"]], order_by="id"):
        filters.setdefault(f["kind"], []).append(f["value"])
    return Subscriber(
        email=row["email"],
        name=row["name"] or "",
        language=row["language"],
        timezone=row["timezone"],
        send_hour=row["send_hour"],
        frequency=row["frequency"],
        max_papers=row["max_papers"],
        status=row["status"],
        authors=tuple(filters["author"]),
        topics=tuple(filters["topic"]),
        categories=tuple(filters["category"]),
        exclude=tuple(filters["exclude"]),
    )


def add_subscriber(db: Database, sub: Subscriber) -> Subscriber:
    """Insert a subscriber with its filters in one transaction."""
    if list(db.table("subscribers").rows_where("lower(email) = lower(?)", [sub.email], limit=1)):
        raise SubscriberExists(
            f"subscriber {sub.email} already exists - use \"newsletter subscribers remove\" "
            "first to replace it"
        )
    now = _iso(utcnow())
    with transaction(db):
        cursor = db.conn.execute(
            "insert into subscribers (email, name, language, timezone, send_hour, frequency,"
            " max_papers, status, created, updated) values (?,?,?,?,?,?,?,?,?,?)",
            (sub.email, sub.name, sub.language, sub.timezone, sub.send_hour, sub.frequency,
             sub.max_papers, sub.status, now, now),
        )
        sid = cursor.lastrowid
        for kind in FILTER_KINDS:
            for value in dict.fromkeys(getattr(sub, _FILTER_FIELD[kind])):
                db.conn.execute(
                    "insert into filters (subscriber_id, kind, value) values (?,?,?)",
                    (sid, kind, value),
                )
    return get_subscriber(db, sub.email)


def get_subscriber(db: Database, email: str) -> Subscriber:
    return _to_subscriber(db, _subscriber_row(db, email))


def list_subscribers(db: Database, status: str | None = None) -> list[Subscriber]:
    where, args = ("status = ?", [status]) if status else (None, [])
    rows = db.table("subscribers").rows_where(where, args, order_by="email")
    return [_to_subscriber(db, r) for r in rows]


def remove_subscriber(db: Database, email: str) -> None:
    row = _subscriber_row(db, email)
    with transaction(db):
        db.conn.execute("delete from filters where subscriber_id = ?", (row["id"],))
        db.conn.execute("delete from deliveries where subscriber_id = ?", (row["id"],))
        db.conn.execute("delete from subscribers where id = ?", (row["id"],))


# --- papers ------------------------------------------------------------------------------


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
        "published": _iso(p.published),
        "updated": _iso(p.updated),
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
    import unicodedata

    def norm(text: str) -> str:
        text = unicodedata.normalize("NFKD", text)
        text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
        return re.sub(r"[^\w]+", " ", text).strip()

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
    seen = _iso(now or utcnow())
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
        args.append(_iso(since))
    rows = db.table("papers").rows_where(" and ".join(where) or None, args,
                                         order_by="first_seen desc, published desc",
                                         limit=limit)
    return [_to_paper(r) for r in rows]


def papers_first_seen_since(db: Database, since: datetime
                            ) -> tuple[list[Paper], list[datetime]]:
    """Papers first seen since ``since``, with when each was first seen."""
    rows = list(db.table("papers").rows_where("first_seen >= ?", [_iso(since)],
                                              order_by="published desc"))
    return [_to_paper(r) for r in rows], [datetime.fromisoformat(r["first_seen"]) for r in rows]


def get_paper(db: Database, paper_id: str) -> Paper:
    try:
        return _to_paper(db.table("papers").get(paper_id))
    except NotFoundError:
        raise PaperNotFound(f"no paper {paper_id} - see \"newsletter papers list\"") from None


# --- deliveries --------------------------------------------------------------------------


def delivered_paper_ids(db: Database, email: str) -> set[str]:
    row = _subscriber_row(db, email)
    ids: set[str] = set()
    for d in db.table("deliveries").rows_where(
        "subscriber_id = ? and status = 'sent'", [row["id"]], select="paper_ids"
    ):
        ids.update(json.loads(d["paper_ids"] or "[]"))
    return ids


def last_sent_at(db: Database, email: str) -> datetime | None:
    row = _subscriber_row(db, email)
    got = db.execute(
        "select max(sent_at) from deliveries where subscriber_id = ? and status = 'sent'",
        [row["id"]],
    ).fetchone()[0]
    return datetime.fromisoformat(got) if got else None


def get_delivery(db: Database, email: str, issue_date: date) -> dict[str, Any] | None:
    row = _subscriber_row(db, email)
    rows = list(db.table("deliveries").rows_where(
        "subscriber_id = ? and issue_date = ?", [row["id"], issue_date.isoformat()], limit=1))
    return rows[0] if rows else None


def begin_delivery(db: Database, email: str, issue_date: date, message_id: str,
                   paper_ids: Iterable[str]) -> dict[str, Any]:
    """Create (or reuse) the one delivery row for (subscriber, issue date), marked pending."""
    sub = _subscriber_row(db, email)
    existing = get_delivery(db, email, issue_date)
    if existing is not None:
        return existing
    with transaction(db):
        db.table("deliveries").insert({
            "subscriber_id": sub["id"],
            "issue_date": issue_date.isoformat(),
            "status": "pending",
            "message_id": message_id,
            "paper_ids": json.dumps(list(paper_ids)),
            "attempts": 0,
            "created": _iso(utcnow()),
        })
    delivery = get_delivery(db, email, issue_date)
    assert delivery is not None
    return delivery


def finish_delivery(db: Database, delivery_id: int, status: str, *, error: str | None = None,
                    path: str | None = None) -> None:
    with transaction(db):
        db.conn.execute(
            "update deliveries set status = ?, error = ?, path = coalesce(?, path),"
            " attempts = attempts + 1, sent_at = case when ? = 'sent' then ? else sent_at end"
            " where id = ?",
            (status, error, path, status, _iso(utcnow()), delivery_id),
        )


def list_deliveries(db: Database, issue_date: date | None = None) -> list[dict[str, Any]]:
    sql = ("select s.email, d.issue_date, d.status, d.message_id, d.paper_ids, d.attempts,"
           " d.error, d.path, d.sent_at from deliveries d join subscribers s"
           " on s.id = d.subscriber_id")
    args: list[Any] = []
    if issue_date:
        sql += " where d.issue_date = ?"
        args.append(issue_date.isoformat())
    return [dict(r) for r in db.query(sql + " order by d.issue_date, s.email", args)]


# --- briefs ------------------------------------------------------------------------------


def get_brief(db: Database, key: str) -> dict[str, Any] | None:
    try:
        return dict(db.table("briefs").get(key))
    except NotFoundError:
        return None


def put_brief(db: Database, row: dict[str, Any]) -> None:
    with transaction(db):
        db.table("briefs").insert({**row, "created": _iso(utcnow())}, replace=True)


def log_llm_call(db: Database, row: dict[str, Any]) -> None:
    with transaction(db):
        db.table("llm_calls").insert({**row, "created": _iso(utcnow())})


def llm_spend_since(db: Database, since: datetime) -> float:
    got = db.execute("select coalesce(sum(cost_usd), 0) from llm_calls where created >= ?",
                     [_iso(since)]).fetchone()[0]
    return float(got)


# --- sources -----------------------------------------------------------------------------


def source_state(db: Database, name: str) -> dict[str, Any]:
    try:
        return dict(db.table("sources").get(name))
    except NotFoundError:
        return {}


def save_source_state(db: Database, name: str, **fields: Any) -> None:
    with transaction(db):
        db.table("sources").upsert({"name": name, **fields}, pk="name")


def add_feed(db: Database, name: str, url: str, label: str) -> None:
    if source_state(db, name).get("kind"):
        raise NewsletterError(f"source {name} already exists - use \"newsletter sources "
                              "remove\" first to replace it")
    save_source_state(db, name, kind="feed", url=url, label=label, enabled=1)


def list_sources(db: Database) -> list[dict[str, Any]]:
    return [dict(r) for r in db.table("sources").rows_where(order_by="name")]


def remove_source(db: Database, name: str) -> None:
    if not source_state(db, name):
        raise NewsletterError(f"no source {name} - see \"newsletter sources list\"")
    with transaction(db):
        db.conn.execute("delete from sources where name = ?", (name,))
