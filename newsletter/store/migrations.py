"""Numbered schema migrations, applied by ``store.open_db`` every time the database opens.

Self-contained on purpose (no relative imports), so that
``sqlite-utils migrate subscribers/newsletter.db newsletter/store/migrations.py --list`` works.
Never edit a migration that has shipped: add the next number instead.
"""

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("newsletter")


@migrations()
def m001_subscribers(db: Database) -> None:
    db.table("subscribers").create(
        {
            "id": int,
            "email": str,
            "name": str,
            "language": str,
            "timezone": str,
            "send_hour": int,
            "frequency": str,
            "max_papers": int,
            "status": str,
            "created": str,
            "updated": str,
        },
        pk="id",
        not_null={"email", "language", "timezone", "status"},
        defaults={
            "name": "",
            "language": "en",
            "timezone": "UTC",
            "send_hour": 7,
            "frequency": "daily",
            "max_papers": 10,
            "status": "active",
        },
    )
    db.table("subscribers").create_index(["email"], unique=True)


@migrations()
def m002_filters(db: Database) -> None:
    db.table("filters").create(
        {"id": int, "subscriber_id": int, "kind": str, "value": str, "options": str},
        pk="id",
        foreign_keys=[("subscriber_id", "subscribers", "id")],
        not_null={"subscriber_id", "kind", "value"},
        defaults={"options": "{}"},
    )
    db.table("filters").create_index(["subscriber_id", "kind", "value"], unique=True)


@migrations()
def m003_papers(db: Database) -> None:
    db.table("papers").create(
        {
            "id": str,
            "source": str,
            "venue": str,
            "title": str,
            "authors": str,  # JSON list
            "abstract": str,
            "url": str,
            "pdf_url": str,
            "doi": str,
            "categories": str,  # JSON list
            "published": str,
            "updated": str,
            "code_url": str,
            "first_seen": str,
        },
        pk="id",
        not_null={"source", "title", "first_seen"},
    )
    db.table("papers").create_index(["first_seen"])
    db.table("papers").create_index(["doi"])
    db.table("papers").enable_fts(["title", "abstract"], fts_version="FTS5", create_triggers=True)


@migrations()
def m004_deliveries(db: Database) -> None:
    db.table("deliveries").create(
        {
            "id": int,
            "subscriber_id": int,
            "issue_date": str,
            "status": str,  # pending, sent, failed, skipped
            "message_id": str,
            "paper_ids": str,  # JSON list
            "attempts": int,
            "error": str,
            "path": str,
            "created": str,
            "sent_at": str,
        },
        pk="id",
        foreign_keys=[("subscriber_id", "subscribers", "id")],
        not_null={"subscriber_id", "issue_date", "status"},
        defaults={"attempts": 0},
    )
    db.table("deliveries").create_index(["subscriber_id", "issue_date"], unique=True)


@migrations()
def m005_briefs_and_llm_calls(db: Database) -> None:
    db.table("briefs").create(
        {
            "key": str,
            "kind": str,
            "language": str,
            "model": str,
            "prompt_version": int,
            "paper_ids": str,
            "data": str,  # JSON of the Brief
            "input_tokens": int,
            "output_tokens": int,
            "cost_usd": float,
            "created": str,
        },
        pk="key",
    )
    db.table("llm_calls").create(
        {
            "id": int,
            "brief_key": str,
            "model": str,
            "input_tokens": int,
            "output_tokens": int,
            "cost_usd": float,
            "duration_ms": int,
            "error": str,
            "created": str,
        },
        pk="id",
    )


@migrations()
def m006_sources(db: Database) -> None:
    db.table("sources").create(
        {
            "name": str,
            "kind": str,  # arxiv, feed, sample
            "url": str,
            "label": str,
            "enabled": int,
            "etag": str,
            "last_modified": str,
            "last_fetched": str,
            "last_success": str,
            "last_status": str,
            "last_error": str,
            "last_new": int,
        },
        pk="name",
        defaults={"enabled": 1},
    )


@migrations()
def m007_paper_identity_and_source_notes(db: Database) -> None:
    """A normalised title + first-author key, so the same paper from a journal feed and from
    arXiv is stored once; and what the last fetch of each source noted."""
    db.table("papers").add_column("title_key", str)
    db.table("papers").create_index(["title_key"])
    db.table("sources").add_column("last_requests", int)
    db.table("sources").add_column("last_note", str)
    db.table("sources").add_column("retry_from", str)  # start of a window not yet fetched


@migrations()
def m008_subscriber_lifecycle(db: Database) -> None:
    """Weekly issues on a chosen day; consent (pending until confirmed, the confirmation
    token kept only as a hash); the history of every change to a subscriber; and the
    anonymous delivery counts left behind when a subscriber is forgotten."""
    subscribers = db.table("subscribers")
    subscribers.add_column("weekday", str)  # mon..sun, for frequency = weekly
    subscribers.add_column("confirmed_at", str)
    subscribers.add_column("confirm_hash", str)  # sha256 of the token sent, until confirmed
    subscribers.add_column("status_changed", str)
    # every lookup is by address whatever its case: index that, not only the exact address
    db.execute("CREATE INDEX idx_subscribers_email_lower ON subscribers (lower(email))")
    db.table("subscriber_events").create(
        {
            "id": int,
            "subscriber_id": int,  # NULL once the subscriber is forgotten or removed
            "event": str,  # added, edited, paused, resumed, confirmed, forgotten, ...
            "origin": str,  # cli, import, unsubscribe, bounce, reply, web
            "detail": str,
            "created": str,
        },
        pk="id",
        foreign_keys=[("subscriber_id", "subscribers", "id")],
        not_null={"event", "origin", "created"},
        defaults={"detail": ""},
    )
    db.table("subscriber_events").create_index(["subscriber_id"])
    db.table("forgotten_deliveries").create(
        {"issue_date": str, "status": str, "count": int},
        pk=("issue_date", "status"),
        not_null={"count"},
        defaults={"count": 0},
    )


@migrations()
def m009_llm_usage(db: Database) -> None:
    """What `briefs stats` reports: the model that actually answered each call, and one row
    per brief served from the cache instead of a call; indexes for the daily budget."""
    db.table("llm_calls").add_column("resolved_model", str)
    db.table("llm_calls").add_column("language", str)
    db.table("llm_calls").create_index(["created"])
    db.table("brief_hits").create(
        {"id": int, "brief_key": str, "model": str, "language": str, "created": str},
        pk="id",
    )
    db.table("brief_hits").create_index(["created"])
    db.table("briefs").create_index(["created"])


@migrations()
def m010_papers_fts_stemmed(db: Database) -> None:
    """Topic filters run on the full-text index: rebuild it with the Porter stemmer (so
    "diffusion models" also finds "diffusion model") and with diacritics removed."""
    db.table("papers").disable_fts()
    db.table("papers").enable_fts(["title", "abstract"], fts_version="FTS5",
                                  create_triggers=True,
                                  tokenize="porter unicode61 remove_diacritics 2")
    db.table("papers").rebuild_fts()


@migrations()
def m011_tombstones_and_pruning(db: Database) -> None:
    """What a merge needs so that it never undoes an erasure or an unsubscribe: one
    tombstone per forgotten, expired, removed or unsubscribed address, holding a keyed hash
    of the address (HMAC-SHA256 with a random key of this list's own, never the address);
    and the delivery counts kept when old delivery rows are pruned."""
    import secrets
    from datetime import UTC, datetime

    db.table("tombstone_keys").create({"id": str, "key": str, "created": str}, pk="id")
    key = secrets.token_hex(32)
    db.table("tombstone_keys").insert({
        "id": key[:16], "key": key,
        "created": datetime.now(UTC).isoformat(timespec="seconds")})
    db.table("tombstones").create(
        {"digest": str, "key_id": str, "event": str, "created": str},
        pk="digest", not_null={"key_id", "event", "created"})
    db.table("pruned_deliveries").create(
        {"issue_date": str, "status": str, "count": int},
        pk=("issue_date", "status"), not_null={"count"}, defaults={"count": 0})


@migrations()
def m012_brief_grounding(db: Database) -> None:
    """Grounded briefs: per model call the claims it made and how many were dropped for a
    missing or unfound quote; per brief that fell back to the digest, the reason (for
    `briefs stats`; readers never see it)."""
    db.table("llm_calls").add_column("claims", int)
    db.table("llm_calls").add_column("dropped_claims", int)
    db.table("brief_fallbacks").create(
        {"id": int, "brief_key": str, "model": str, "language": str, "reason": str,
         "created": str},
        pk="id",
    )
    db.table("brief_fallbacks").create_index(["created"])


@migrations()
def m013_delivery_message_id_index(db: Database) -> None:
    """Bounces and complaints quote the Message-ID of the issue: find its delivery fast."""
    db.table("deliveries").create_index(["message_id"])


@migrations()
def m014_web_radar(db: Database) -> None:
    """The research radar page (`newsletter serve`): a generation number per subscriber in
    every page link (raising it revokes the links handed out so far), and the reader's
    relevant / not relevant verdicts on papers, with when and where from (web, mail, ...),
    for the ranking to learn from."""
    db.table("subscribers").add_column("link_generation", int, not_null_default=0)
    db.table("feedback").create(
        {
            "id": int,
            "subscriber_id": int,
            "paper_id": str,
            "verdict": str,  # relevant, not_relevant
            "origin": str,  # web, mail, cli
            "created": str,
        },
        pk="id",
        foreign_keys=[("subscriber_id", "subscribers", "id")],
        not_null={"subscriber_id", "paper_id", "verdict", "origin", "created"},
    )
    db.table("feedback").create_index(["subscriber_id", "paper_id"])


@migrations()
def m015_learned_ranking(db: Database) -> None:
    """The learned ranking: each subscriber's mode ("auto", "filters", "reorder", "like")
    and how many papers "like" may add. Seed papers are filters of kind "like" (their value
    the stored paper's id); verdicts are in ``feedback`` (m014)."""
    db.table("subscribers").add_column("ranking", str, not_null_default="auto")
    db.table("subscribers").add_column("like_cap", int, not_null_default=3)
