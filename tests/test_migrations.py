import re

from sqlite_utils import Database

from newsletter import store
from newsletter.store import migrations as migrations_module
from newsletter.store.migrations import migrations

EXPECTED_SUBSCRIBERS = {
    "id": int, "email": str, "name": str, "language": str, "timezone": str, "send_hour": int,
    "frequency": str, "max_papers": int, "status": str, "created": str, "updated": str,
    "weekday": str, "confirmed_at": str, "confirm_hash": str, "status_changed": str,
    "link_generation": int,
    "ranking": str, "like_cap": int,
}


def test_blank_database_gets_every_table():
    db = store.open_db(":memory:")
    assert db["subscribers"].columns_dict == EXPECTED_SUBSCRIBERS
    for table in ("filters", "papers", "papers_fts", "deliveries", "briefs", "llm_calls",
                  "sources", "subscriber_events", "forgotten_deliveries", "brief_hits",
                  "feedback"):
        assert db[table].exists(), table
    assert [m.name for m in migrations.applied(db)] == [m.name for m in migrations._migrations]
    assert migrations.pending(db) == []


def test_numbers_are_unique_gap_free_and_increasing():
    names = [m.name for m in migrations._migrations]
    numbers = [int(re.match(r"m(\d{3})_", n).group(1)) for n in names]
    assert numbers == list(range(1, len(numbers) + 1))


def test_reopening_applies_nothing_twice_and_keeps_data(tmp_path):
    path = tmp_path / "n.db"
    db = store.open_db(path)
    db["subscribers"].insert({"email": "a@example.org", "language": "en", "timezone": "UTC",
                              "status": "active"})
    db.close()
    again = store.open_db(path)
    assert again["subscribers"].count == 1
    applied = Database(path)["_sqlite_migrations"].count
    assert applied == len(migrations._migrations)


def test_migrations_file_is_self_contained():
    source = open(migrations_module.__file__).read()
    assert "from newsletter" not in source and "from ." not in source


def test_feedback_table_for_the_ranking_work():
    db = store.open_db(":memory:")
    assert db["feedback"].columns_dict == {"id": int, "subscriber_id": int, "paper_id": str,
                                           "verdict": str, "origin": str, "created": str}
    assert [fk.other_table for fk in db["feedback"].foreign_keys] == ["subscribers"]
