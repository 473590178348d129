"""The state travels between machines through a real git remote (a bare repository on disk),
encrypted, on a branch of its own; two clones change it at the same time and the merge keeps
every erasure and unsubscribe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, invoke, start_smtp

from newsletter import store
from newsletter.lists import roster
from newsletter.ops import statesync

KEY = statesync.new_key()
NEWSLETTER = str(Path(sys.executable).parent / "newsletter")


def git(cwd, *args):
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True,
                          text=True).stdout


class Clone:
    """A checkout of the repository whose `origin` is the bare remote; its own database."""

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = path
        self.db = path / "subscribers" / "newsletter.db"
        self.mp = monkeypatch

    def __call__(self, *args: str, now: str | None = None, ok: bool = True):
        self.mp.chdir(self.path)
        self.mp.setenv("NEWSLETTER_DB", str(self.db))
        if now:
            self.mp.setenv("NEWSLETTER_NOW", now)
        return invoke(*args, ok=ok)

    def open(self):
        return store.open_db(self.db)


@pytest.fixture
def remote(tmp_path, monkeypatch):
    """A bare remote whose main branch holds code, and whose state branch holds a list of
    three subscribers, pushed from a seed checkout; and two fresh clones of it."""
    monkeypatch.setenv("NEWSLETTER_STATE_KEY", KEY)
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "--quiet", "--bare", "-b", "main", str(origin))
    clones = {}
    for name in ("seed", "runner", "person"):
        path = tmp_path / name
        git(tmp_path, "clone", "--quiet", str(origin), str(path))
        git(path, "config", "user.email", f"{name}@example.org")
        git(path, "config", "user.name", name)
        clones[name] = Clone(path, monkeypatch)
        if name == "seed":
            (path / "README.md").write_text("code\n")
            git(path, "add", "README.md")
            git(path, "commit", "--quiet", "-m", "code")
            git(path, "push", "--quiet", "origin", "HEAD:main")
            seed = clones["seed"]
            for who, flag, value in (("ada@example.org", "--author", "Taiming Lu"),
                                     ("late@example.org", "--author", "Taiming Lu"),
                                     ("bob@example.org", "--topic", "CRISPR")):
                seed("subscribers", "add", who, flag, value, "--name",
                     who.split("@")[0].title() + " Quimby", now="2026-11-20T08:00:00+00:00")
            assert "pushed to origin branch newsletter-state" in seed("state", "push").output
    for name in ("runner", "person"):
        assert "pulled the state" in clones[name]("state", "pull").output
    return origin, clones["runner"], clones["person"]


def fresh(tmp_path, monkeypatch, name="check") -> Clone:
    path = tmp_path / name
    path.mkdir()
    clone = Clone(path, monkeypatch)  # not a checkout: the remote is given as a path
    out = clone("state", "pull", "--remote", str(tmp_path / "origin.git")).output
    assert "pulled the state" in out
    return clone


def emails(clone: Clone) -> set[str]:
    return set(store.subscriber_emails(clone.open()))


def state_log(origin: Path) -> list[str]:
    return git(origin, "log", "--format=%s", "newsletter-state").splitlines()


@pytest.mark.parametrize("first", ["person", "runner"])
def test_forget_during_a_run_is_not_undone(remote, tmp_path, monkeypatch, first):
    origin, runner, person = remote
    assert "3 sent" in runner("run", "--all", now="2026-11-22T09:00:00+00:00").output
    person("subscribers", "forget", "late@example.org", "--yes",
           now="2026-11-22T09:05:00+00:00")
    order = [person, runner] if first == "person" else [runner, person]
    for clone in order:
        clone("state", "push", "-m", "done")
    check = fresh(tmp_path, monkeypatch)
    assert emails(check) == {"ada@example.org", "bob@example.org"}
    db = check.open()
    assert store.find_text(db, "late@example.org") == []
    assert store.tombstone_for(db, "late@example.org")["event"] == "forgotten"
    assert {(d["email"], d["status"]) for d in store.list_deliveries(db)} == {
        ("ada@example.org", "sent"), ("bob@example.org", "sent")}
    log = state_log(origin)
    assert log[0].startswith("done: ") and len(log) == 3
    assert any("1 forgotten" in line for line in log)
    sent = "2 sent" if first == "person" else "3 sent"  # late's delivery erased with them
    assert any(sent in line for line in log), log
    # and whichever side pushed last, its own copy is erased too
    assert "late@example.org" not in emails(order[1])


@pytest.mark.parametrize("first", ["person", "runner"])
def test_unsubscribe_during_an_import_stays_unsubscribed(remote, tmp_path, monkeypatch,
                                                         first):
    origin, runner, person = remote
    monkeypatch.chdir(runner.path)
    roster.set_status(runner.open(), "bob@example.org", "unsubscribed", origin="unsubscribe",
                      now=store.utcnow().fromisoformat("2026-11-22T08:00:00+00:00"))
    csv = tmp_path / "list.csv"
    csv.write_text("email,name,authors,status\n"
                   "bob@example.org,Bob Quimby,Jennifer Doudna,active\n"
                   "cy@example.org,Cy,Taiming Lu,active\n")
    out = person("subscribers", "import", str(csv), now="2026-11-22T08:30:00+00:00").output
    assert "cy@example.org" in out
    for clone in ([person, runner] if first == "person" else [runner, person]):
        clone("state", "push")
    check = fresh(tmp_path, monkeypatch)
    db = check.open()
    bob = store.get_subscriber(db, "bob@example.org")
    assert bob.status == "unsubscribed"
    assert bob.authors == ("Jennifer Doudna",)  # the import's later edit of the filters stays
    assert store.get_subscriber(db, "cy@example.org").status == "active"
    events = [e["event"] for e in store.subscriber_history(db, "bob@example.org")]
    assert "unsubscribed" in events and "edited" in events
    out = check("run", "--all", now="2026-11-22T09:00:00+00:00").output
    assert "bob@example.org" not in [line.split()[1] for line in out.splitlines()
                                     if line.startswith("sent")]


def test_the_tombstone_wins_even_over_a_later_status_change(tmp_path):
    """Belt and braces: a copy that set the subscriber active after the unsubscribe (not by
    confirming anew) still ends unsubscribed; one who confirmed anew stays active."""
    a, b = store.open_db(tmp_path / "a.db"), store.open_db(tmp_path / "b.db")
    roster.add(a, "bob@example.org", topics=["x"],
               now=store.utcnow().fromisoformat("2026-11-01T00:00:00+00:00"))
    store.restore_chunks(b, store.dump_chunks(a))
    roster.set_status(a, "bob@example.org", "unsubscribed", "web",
                      now=store.utcnow().fromisoformat("2026-11-02T00:00:00+00:00"))
    roster.set_status(b, "bob@example.org", "paused", "cli",
                      now=store.utcnow().fromisoformat("2026-11-03T00:00:00+00:00"))
    counts = store.merge_state(b, a)
    assert counts["unsubscribed"] == 1
    assert store.get_subscriber(b, "bob@example.org").status == "unsubscribed"
    # confirming anew (after the unsubscribe) is the person's own choice, and stays
    b.execute("update subscribers set status = 'active', confirmed_at = ?,"
              " status_changed = ?", ["2026-11-04T00:00:00+00:00"] * 2)
    b.conn.commit()
    store.merge_state(b, a)
    assert store.get_subscriber(b, "bob@example.org").status == "active"


def test_edit_against_edit_last_writer_wins_and_both_are_in_the_history(remote, tmp_path,
                                                                        monkeypatch):
    origin, runner, person = remote
    person("subscribers", "edit", "ada@example.org", "--add-topic", "protein folding",
           now="2026-11-22T10:00:00+00:00")
    runner("subscribers", "edit", "ada@example.org", "--name", "Ada L.",
           now="2026-11-22T10:05:00+00:00")
    runner("state", "push")
    person("state", "push")  # pushes last, but edited first
    check = fresh(tmp_path, monkeypatch)
    db = check.open()
    ada = store.get_subscriber(db, "ada@example.org")
    assert ada.name == "Ada L." and ada.topics == ()
    edits = [e["detail"] for e in store.subscriber_history(db, "ada@example.org")
             if e["event"] == "edited"]
    assert edits == ["added topic: protein folding", "name: Ada Quimby -> Ada L."]
    # and the person's own copy now agrees
    assert store.get_subscriber(person.open(), "ada@example.org").name == "Ada L."


def test_only_changes_are_committed_and_the_message_says_what(remote, tmp_path, monkeypatch):
    origin, runner, _ = remote
    assert len(state_log(origin)) == 1
    runner("run", now="2026-11-22T09:00:00+00:00")  # send hour 7 UTC: all three are due
    out = runner("state", "push", "-m", "Morning run").output
    assert out == ("pushed to origin branch newsletter-state: Morning run: 3 sent, "
                   "43 papers\n")
    for hour in ("10", "11"):  # later runs the same day: nobody due, nothing fetched
        out = runner("run", now=f"2026-11-22T{hour}:07:00+00:00").output
        assert runner("state", "push", "-m", "Morning run").output == \
            "nothing changed: no commit to origin branch newsletter-state\n"
    assert len(state_log(origin)) == 2
    assert git(origin, "log", "--format=%s", "main").splitlines() == ["code"]


def test_what_leaves_the_machine_is_ciphertext_only(remote, tmp_path, monkeypatch):
    origin, runner, person = remote
    runner("run", "--all", now="2026-11-22T09:00:00+00:00")
    runner("state", "push")
    person("subscribers", "forget", "late@example.org", "--yes")
    person("state", "push")
    objects = subprocess.run(["git", "-C", str(origin), "cat-file", "--batch-all-objects",
                              "--batch"], check=True, capture_output=True).stdout
    assert len(objects) > 10_000
    for needle in (b"ada@example.org", b"late@example.org", b"bob@example.org",
                   b"Quimby", b"Taiming Lu", b"SQLite format 3"):
        assert needle not in objects, needle
    assert objects.count(b"NLS1") >= 10  # the chunks are there, encrypted


def test_without_the_right_key_it_says_so_in_one_line(remote, tmp_path, monkeypatch):
    _, runner, _ = remote
    monkeypatch.delenv("NEWSLETTER_STATE_KEY")
    out = runner("state", "pull", ok=False)
    assert out.exit_code == 1 and len(out.output.splitlines()) == 1
    assert "NEWSLETTER_STATE_KEY is not set" in out.output
    monkeypatch.setenv("NEWSLETTER_STATE_KEY", statesync.new_key())
    out = runner("state", "pull", ok=False)
    assert out.exit_code == 1 and "does not open this state" in out.output
    assert len(out.output.splitlines()) == 1
    monkeypatch.setenv("NEWSLETTER_STATE_KEY", "hunter2")
    out = runner("state", "push", ok=False)
    assert out.exit_code == 1 and "is not a state key" in out.output


def test_rotating_the_key_replaces_the_history(remote, tmp_path, monkeypatch):
    origin, runner, _ = remote
    new = statesync.new_key()
    monkeypatch.setenv("NEWSLETTER_STATE_KEY", new)
    out = runner("state", "push", "--new-history", "--yes").output
    assert "pushed to origin branch newsletter-state" in out
    assert len(state_log(origin)) == 1
    check = fresh(tmp_path, monkeypatch)
    assert len(emails(check)) == 3
    monkeypatch.setenv("NEWSLETTER_STATE_KEY", KEY)  # the old key no longer opens it
    assert "does not open" in runner("state", "pull", ok=False).output


@pytest.fixture
def stalling_smtp():
    """A loopback SMTP server that accepts the first message and holds the next ones (no
    answer to DATA) while ``stall`` is set."""
    import asyncio

    got: list[bytes] = []
    state = {"stall": True}

    class Handler:
        async def handle_DATA(self, srv, session, envelope):
            while state["stall"] and got:
                await asyncio.sleep(0.05)
            got.append(envelope.content)
            return "250 Message accepted"

    controller, port = start_smtp(Handler())
    try:
        yield f"smtp://127.0.0.1:{port}", got, state
    finally:
        state["stall"] = False
        controller.stop()


def test_a_run_killed_between_send_and_push_resends_nothing(remote, tmp_path, monkeypatch,
                                                            stalling_smtp):
    """The run is killed (SIGKILL) while the SMTP server holds its second message; the
    workflow's push step (``if: always()``) still carries what was sent; the next run, on
    another machine, pulls and sends nobody a second issue."""
    from email import message_from_bytes

    url, got, state = stalling_smtp
    _, runner, _ = remote
    env = {**os.environ, "NEWSLETTER_DB": str(runner.db), "NEWSLETTER_SMTP_URL": url,
           "NEWSLETTER_NOW": "2026-11-22T09:00:00+00:00"}
    proc = subprocess.Popen([NEWSLETTER, "run", "--all"], cwd=runner.path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the run records the first as sent and starts the second
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(got) == 1
    first = message_from_bytes(got[0])["To"]
    assert "1 sent" in runner("state", "push", "-m", "Morning run").output
    state["stall"] = False
    nxt = fresh(tmp_path, monkeypatch, "next")
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", url)
    out = nxt("run", "--all", now="2026-11-22T09:30:00+00:00").output
    to = [message_from_bytes(m)["To"] for m in got]
    assert to.count(first) == 1, out
    assert sorted(to) == sorted(set(to)) and len(to) == 3, out


def test_the_workflow_branch_is_not_main(remote):
    origin, _, _ = remote
    heads = git(origin, "for-each-ref", "--format=%(refname:short)", "refs/heads")
    assert heads.split() == ["main", "newsletter-state"]
    tree = git(origin, "ls-tree", "-r", "--name-only", "main").split()
    assert tree == ["README.md"]
    assert ROOT.exists()


def test_a_push_that_loses_the_race_merges_again_and_wins(remote, tmp_path, monkeypatch):
    """Someone else's state lands between this push's fetch and its push (a hook on the
    remote moves the branch and refuses the first attempt): the push fetches again, merges
    again, and both changes are on the branch."""
    origin, runner, person = remote
    person("subscribers", "forget", "late@example.org", "--yes")
    person("state", "push", "--branch", "elsewhere")
    hook = origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\nif [ ! -e raced ]; then touch raced;"
                    " env -u GIT_QUARANTINE_PATH git update-ref refs/heads/newsletter-state"
                    " refs/heads/elsewhere;"
                    " echo 'someone pushed first' >&2; exit 1; fi\n")
    hook.chmod(0o755)
    runner("subscribers", "add", "cy@example.org", "--author", "Taiming Lu")
    out = runner("state", "push", "-m", "race").output
    assert out.startswith("pushed to origin branch newsletter-state: race: ")
    assert (origin / "raced").exists()
    check = fresh(tmp_path, monkeypatch)
    assert emails(check) == {"ada@example.org", "bob@example.org", "cy@example.org"}


def test_expiry_and_removal_leave_tombstones_that_a_merge_applies(tmp_path):
    """Expiry (never confirmed) and removal erase on merge too, and the tombstone holds a
    keyed hash, not the address; someone added again after an erasure stays."""
    at = store.utcnow().fromisoformat
    a, b = store.open_db(tmp_path / "a.db"), store.open_db(tmp_path / "b.db")
    roster.add(a, "pending@example.org", topics=["x"], status="pending",
               now=at("2026-11-01T00:00:00+00:00"))
    roster.add(a, "gone@example.org", topics=["x"], now=at("2026-11-01T00:00:00+00:00"))
    store.restore_chunks(b, store.dump_chunks(a))
    assert roster.expire_pending(a, at("2026-11-10T00:00:00+00:00"), 7) == ["pending@example.org"]
    store.remove_subscriber(a, "gone@example.org", now=at("2026-11-10T00:00:00+00:00"))
    assert [r["event"] for r in a.query("select event from tombstones order by event")] == [
        "expired", "removed"]
    assert store.find_text(a, "example.org") == []  # no address anywhere, tombstones included
    counts = store.merge_state(b, a)
    assert counts["erased"] == 2 and store.subscriber_emails(b) == []
    # added again after the erasure (a new sign-up): the old tombstone does not touch it
    roster.add(b, "gone@example.org", topics=["x"], now=at("2026-11-12T00:00:00+00:00"))
    store.merge_state(b, a)
    store.merge_state(a, b)
    assert store.subscriber_emails(a) == store.subscriber_emails(b) == ["gone@example.org"]
