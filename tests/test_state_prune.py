"""Pruning: old delivery rows, briefs and the papers nothing refers to go, with their
full-text index entries; what a delivery, a brief or an unfinished issue refers to stays."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import date, datetime, timedelta

from conftest import invoke

from newsletter import store

DAY1 = datetime.fromisoformat("2026-11-22T09:00:00+00:00")


def _papers_and_index(db):
    papers = {r[0] for r in db.execute("select id from papers")}
    indexed = db.execute("select count(*) from papers_fts").fetchone()[0]
    return papers, indexed


def test_prune_keeps_what_is_referred_to_and_drops_the_rest_with_its_index():
    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu")
    invoke("subscribers", "add", "bob@example.org", "--topic", "CRISPR")
    invoke("run", "--all")  # day 1: the sample's 43 papers, one issue each
    db = store.open_db(os.environ["NEWSLETTER_DB"])
    papers, indexed = _papers_and_index(db)
    assert len(papers) == 43 and indexed == 43
    first = {d["email"]: json.loads(d["paper_ids"]) for d in
             db.query("select s.email, d.paper_ids from deliveries d join subscribers s"
                      " on s.id = d.subscriber_id")}
    # 60 days later Ada gets a second issue (one old paper in it), Bob's is still unfinished
    later = DAY1 + timedelta(days=60)
    again = first["ada@example.org"][:1]
    row = store.begin_delivery(db, "ada@example.org", later.date(), "<m2@x>", again, later)
    store.finish_delivery(db, row["id"], "sent", now=later)
    store.begin_delivery(db, "bob@example.org", later.date(), "<m3@x>",
                         first["bob@example.org"][-1:], later)
    # within the retention nothing goes
    assert store.prune(db, 90, DAY1 + timedelta(days=80))["papers"] == 0
    # 100 days after day 1: Ada's first issue is older than 90 days and not her latest
    dropped = store.prune(db, 90, DAY1 + timedelta(days=100))
    assert dropped["deliveries"] == 1
    papers, indexed = _papers_and_index(db)
    kept = set(again) | set(first["bob@example.org"])  # Bob's latest sent, and his pending
    assert papers == kept and indexed == len(kept)
    assert dropped["papers"] == 43 - len(kept)
    gone = sorted(set(first["ada@example.org"]) - kept)[0]
    assert db.execute("select count(*) from papers where id = ?", [gone]).fetchone()[0] == 0
    word = store.get_paper(db, sorted(kept)[0]).title.split()[0]
    assert set(store.fts_search(db, f'"{word}"')) <= kept
    assert [dict(r) for r in db.query("select * from pruned_deliveries")] == [
        {"issue_date": "2026-11-22", "status": "sent", "count": 1}]
    assert store.last_issue_date(db, "ada@example.org") == later.date()
    assert store.last_issue_date(db, "bob@example.org") == date(2026, 11, 22)


def test_push_prunes_with_the_retention_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_STATE_REMOTE", str(tmp_path / "state.git"))
    from newsletter.ops import statesync

    monkeypatch.setenv("NEWSLETTER_STATE_KEY", statesync.new_key())
    invoke("subscribers", "add", "ada@example.org", "--topic", "nothing-x")
    invoke("run", "--all")  # fetches the sample's 43 papers; none matches, nothing is sent
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "state.git")], check=True)
    assert "43 papers" in invoke("state", "push").output
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-12-10T09:00:00+00:00")
    monkeypatch.setenv("NEWSLETTER_STATE_RETENTION_DAYS", "10")
    assert invoke("state", "push").output.endswith(": 43 papers pruned\n")
    out = invoke("--state-retention-days", "0", "state", "push", ok=False).output
    assert "must be at least 1" in out
