"""The brief cache, the log of every model call, and the usage read back from them.

Every row carries ``created`` (UTC, ISO 8601): the time of the run that wrote it, so a day's
spend and a day's report agree with the day the job believed it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlite_utils import Database
from sqlite_utils.db import NotFoundError

from newsletter.store.db import iso, transaction, utcnow


def get_brief(db: Database, key: str) -> dict[str, Any] | None:
    try:
        return dict(db.table("briefs").get(key))
    except NotFoundError:
        return None


def get_briefs(db: Database, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The cached briefs among ``keys`` (a run's batch asks for all of its own at once)."""
    out: dict[str, dict[str, Any]] = {}
    keys = list(dict.fromkeys(keys))
    for i in range(0, len(keys), 500):
        chunk = keys[i:i + 500]
        cursor = db.execute(f"select * from briefs where key in ({','.join('?' * len(chunk))})",
                            chunk)
        out.update((row["key"], row) for row in _dicts(cursor))
    return out


def put_brief(db: Database, row: dict[str, Any], at: datetime | None = None) -> None:
    with transaction(db):
        db.table("briefs").insert({**row, "created": iso(at or utcnow())}, replace=True)


def log_llm_call(db: Database, row: dict[str, Any], at: datetime | None = None) -> None:
    with transaction(db):
        db.table("llm_calls").insert({**row, "created": iso(at or utcnow())})


def log_brief_uses(db: Database, hits: Sequence[tuple[str, str, str]],
                   fallbacks: Sequence[tuple[str, str, str, str]],
                   at: datetime | None = None) -> None:
    """A batch's briefs served from the cache, (key, model, language), and those that went
    out as the extractive digest, (key, model, language, reason), in one transaction."""
    if not hits and not fallbacks:
        return
    stamp = iso(at or utcnow())
    with transaction(db):
        db.conn.executemany("insert into brief_hits (brief_key, model, language, created)"
                            " values (?,?,?,?)", [(*h, stamp) for h in hits])
        db.conn.executemany("insert into brief_fallbacks (brief_key, model, language, reason,"
                            " created) values (?,?,?,?,?)",
                            [(k, m, lang, why[:500], stamp) for k, m, lang, why in fallbacks])


def _dicts(cursor: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def llm_spend_since(db: Database, since: datetime) -> float:
    got = db.execute("select coalesce(sum(cost_usd), 0) from llm_calls where created >= ?",
                     [iso(since)]).fetchone()[0]
    return float(got)


_USAGE = """
select day, model, sum(calls) as calls, sum(ok) as ok, sum(failed) as failed,
       sum(input_tokens) as input_tokens, sum(output_tokens) as output_tokens,
       sum(cost_usd) as cost_usd, sum(hits) as cache_hits, sum(claims) as claims,
       sum(dropped) as dropped_claims, sum(fallbacks) as fallbacks
from (
  select substr(created, 1, 10) as day, model, 1 as calls, error is null as ok,
         error is not null as failed, coalesce(input_tokens, 0) as input_tokens,
         coalesce(output_tokens, 0) as output_tokens, cost_usd, 0 as hits,
         coalesce(claims, 0) as claims, coalesce(dropped_claims, 0) as dropped,
         0 as fallbacks
  from llm_calls where created >= :since
  union all
  select substr(created, 1, 10), model, 0, 0, 0, 0, 0, null, 1, 0, 0, 0
  from brief_hits where created >= :since
  union all
  select substr(created, 1, 10), model, 0, 0, 0, 0, 0, null, 0, 0, 0, 1
  from brief_fallbacks where created >= :since
)
group by day, model
order by day, model
"""


def llm_usage(db: Database, since: date | None = None) -> list[dict[str, Any]]:
    """Per day (UTC) and model: calls, ok, failed, input/output tokens, cost_usd (None when
    no call had a known price), cache_hits (briefs served without a call), claims (made by
    the model), dropped_claims (no supporting quote found) and fallbacks (briefs that went
    out as the extractive digest)."""
    start = since.isoformat() if since else ""
    return _dicts(db.execute(_USAGE, {"since": start}))


def brief_fallback_reasons(db: Database, since: date | None = None
                           ) -> list[dict[str, Any]]:
    """Why briefs fell back to the digest: per day, model and reason, how many."""
    return _dicts(db.execute(
        "select substr(created, 1, 10) as day, model, reason, count(*) as briefs "
        "from brief_fallbacks where created >= ? group by day, model, reason "
        "order by day, model, briefs desc, reason", [since.isoformat() if since else ""]))


_LIST = """
select b.key, b.created, b.kind, b.language, b.model, b.prompt_version, b.paper_ids,
       b.input_tokens, b.output_tokens, b.cost_usd,
       (select count(*) from brief_hits h where h.brief_key = b.key) as cache_hits
from briefs b
order by b.created desc, b.key
"""


def list_briefs(db: Database, limit: int | None = None) -> list[dict[str, Any]]:
    """The cached briefs, newest first, without their text."""
    sql = _LIST + (" limit ?" if limit is not None else "")
    return _dicts(db.execute(sql, [limit] if limit is not None else []))


__all__ = ["brief_fallback_reasons", "get_brief", "get_briefs", "list_briefs",
           "llm_spend_since", "llm_usage", "log_brief_uses", "log_llm_call", "put_brief"]
