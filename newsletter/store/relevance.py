"""What a reader told us about papers: verdicts (feedback) and the papers behind their seeds."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlite_utils import Database

from newsletter.errors import NewsletterError
from newsletter.models import Paper
from newsletter.store.db import iso, transaction, utcnow
from newsletter.store.events import insert_event
from newsletter.store.papers import get_paper, get_papers
from newsletter.store.rows import subscriber_row

VERDICTS = ("relevant", "not_relevant")


def add_feedback(db: Database, email: str, paper_id: str, verdict: str, origin: str,
                 now: datetime | None = None) -> dict[str, Any]:
    """Store EMAIL's verdict on a stored paper (it replaces an earlier verdict on that
    paper), with an event in their history. Raises NewsletterError for an unknown verdict
    and PaperNotFound (with the fix) for an unknown paper."""
    if verdict not in VERDICTS:
        raise NewsletterError(f"verdict {verdict!r} is not one of: {', '.join(VERDICTS)}")
    sid = subscriber_row(db, email)["id"]
    get_paper(db, paper_id)
    stamp = iso(now or utcnow())
    with transaction(db):
        db.conn.execute("delete from feedback where subscriber_id = ? and paper_id = ?",
                        (sid, paper_id))
        db.conn.execute("insert into feedback (subscriber_id, paper_id, verdict, origin,"
                        " created) values (?,?,?,?,?)", (sid, paper_id, verdict, origin, stamp))
        insert_event(db.conn, sid, "feedback", origin,
                     f"{verdict.replace('_', ' ')}: {paper_id}", now)
    return {"email": email, "paper_id": paper_id, "verdict": verdict, "origin": origin,
            "created": stamp}


def feedback_for(db: Database, email: str) -> dict[str, str]:
    """EMAIL's verdict per paper id."""
    return {r["paper_id"]: r["verdict"] for r in feedback_rows(db, email)}


def with_feedback(db: Database, subscriber_ids: list[int]) -> set[int]:
    """Which of these subscribers have given any verdict (one query for a batch)."""
    if not subscriber_ids:
        return set()
    marks = ",".join("?" * len(subscriber_ids))
    return {r[0] for r in db.execute(f"select distinct subscriber_id from feedback where "
                                     f"subscriber_id in ({marks})", subscriber_ids)}


def feedback_rows(db: Database, email: str) -> list[dict[str, Any]]:
    """A reader's verdicts, oldest first: paper_id, verdict, origin, created."""
    sid = subscriber_row(db, email)["id"]
    return [dict(r) for r in db.query(
        "select paper_id, verdict, origin, created from feedback where subscriber_id = ?"
        " order by id", [sid])]


def replace_feedback(db: Database, email: str, rows: list[dict[str, Any]]) -> None:
    """Make a reader's verdicts exactly ``rows`` (an import); unknown papers are skipped."""
    sid = subscriber_row(db, email)["id"]
    known = {p.id for p in get_papers(db, [r["paper_id"] for r in rows])}
    with transaction(db):
        db.conn.execute("delete from feedback where subscriber_id = ?", (sid,))
        db.conn.executemany(
            "insert into feedback (subscriber_id, paper_id, verdict, origin, created)"
            " values (?,?,?,?,?)",
            [(sid, r["paper_id"], r["verdict"], r.get("origin") or "import",
              r.get("created") or iso(utcnow())) for r in rows
             if r["paper_id"] in known and r["verdict"] in VERDICTS])


def all_feedback(db: Database) -> dict[str, list[str]]:
    """Every subscriber's verdicts as ``paper_id:verdict``, oldest first (for export)."""
    out: dict[str, list[str]] = {}
    for r in db.query("select s.email, f.paper_id, f.verdict from feedback f join subscribers s"
                      " on s.id = f.subscriber_id order by f.id"):
        out.setdefault(r["email"], []).append(f"{r['paper_id']}:{r['verdict']}")
    return out


def labelled_papers(db: Database, email: str, likes: tuple[str, ...]
                    ) -> tuple[list[Paper], list[Paper]]:
    """(positives, negatives) for the learned ranking: the seed papers that are stored and
    the papers marked relevant; the papers marked not relevant."""
    verdicts = feedback_for(db, email)
    wanted = list(dict.fromkeys([*likes, *verdicts]))
    papers = {p.id: p for p in get_papers(db, wanted)}
    positives = [papers[k] for k in likes if k in papers]
    positives += [papers[k] for k, v in verdicts.items()
                  if v == "relevant" and k in papers and k not in likes]
    negatives = [papers[k] for k, v in verdicts.items() if v == "not_relevant" and k in papers]
    return positives, negatives

__all__ = ["VERDICTS", "add_feedback", "all_feedback", "feedback_for", "feedback_rows",
           "labelled_papers", "replace_feedback", "with_feedback"]
