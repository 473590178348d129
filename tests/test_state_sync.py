"""The database travels from run to run through the repository; a subscriber change pushed
while a run is in progress survives, and so do the run's deliveries."""

import subprocess

import pytest
from conftest import invoke

from newsletter import store


def git(cwd, *args):
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def repos(tmp_path, monkeypatch):
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "--quiet", "--bare", "-b", "main", str(origin))
    seed = tmp_path / "seed"
    git(tmp_path, "clone", "--quiet", str(origin), str(seed))
    for repo in (seed,):
        git(repo, "config", "user.email", "t@example.org")
        git(repo, "config", "user.name", "T")
    db = seed / "subscribers" / "newsletter.db"
    monkeypatch.setenv("NEWSLETTER_DB", str(db))
    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu")
    store.checkpoint(db)
    git(seed, "add", "-f", "subscribers/newsletter.db")
    git(seed, "commit", "--quiet", "-m", "first subscriber")
    git(seed, "push", "--quiet", "origin", "HEAD:main")
    clones = {}
    for name in ("runner", "person"):
        clone = tmp_path / name
        git(tmp_path, "clone", "--quiet", str(origin), str(clone))
        git(clone, "config", "user.email", f"{name}@example.org")
        git(clone, "config", "user.name", name)
        clones[name] = clone
    return origin, clones


def subscribers_and_deliveries(path):
    db = store.open_db(path)
    return ({s.email for s in store.list_subscribers(db)},
            {(d["email"], d["status"]) for d in store.list_deliveries(db)})


def test_person_change_during_a_run_survives_and_so_do_deliveries(repos, monkeypatch,
                                                                   tmp_path):
    origin, clones = repos
    runner_db = clones["runner"] / "subscribers" / "newsletter.db"
    person_db = clones["person"] / "subscribers" / "newsletter.db"
    # the run starts: it sends Ada her issue...
    monkeypatch.setenv("NEWSLETTER_DB", str(runner_db))
    assert "1 sent" in invoke("run", "--all").output
    # ...while a person adds Bob on a laptop and pushes first
    monkeypatch.setenv("NEWSLETTER_DB", str(person_db))
    invoke("subscribers", "add", "bob@example.org", "--topic", "CRISPR")
    store.checkpoint(person_db)
    git(clones["person"], "add", "-f", "subscribers/newsletter.db")
    git(clones["person"], "commit", "--quiet", "-m", "add bob")
    git(clones["person"], "push", "--quiet", "origin", "HEAD:main")
    # the run ends and carries its state back
    monkeypatch.setenv("NEWSLETTER_DB", str(runner_db))
    out = invoke("state", "push", "-m", "morning run").output
    assert out == "merged with newer work and pushed subscribers/newsletter.db to origin/main\n"
    check = tmp_path / "check"
    git(tmp_path, "clone", "--quiet", str(origin), str(check))
    subs, deliveries = subscribers_and_deliveries(check / "subscribers" / "newsletter.db")
    assert subs == {"ada@example.org", "bob@example.org"}
    assert deliveries == {("ada@example.org", "sent")}
    log = git(check, "log", "--format=%s")
    assert log.splitlines()[:2] == ["morning run", "add bob"]
    # the next run, from the merged database, does not send Ada a second issue today
    monkeypatch.setenv("NEWSLETTER_DB", str(check / "subscribers" / "newsletter.db"))
    out = invoke("run", "--all").output
    assert "sent       bob@example.org" in out
    assert "ada@example.org" in out and "already sent today" in out


def test_plain_push_when_nobody_else_pushed(repos, monkeypatch):
    origin, clones = repos
    runner_db = clones["runner"] / "subscribers" / "newsletter.db"
    monkeypatch.setenv("NEWSLETTER_DB", str(runner_db))
    invoke("run", "--all")
    assert invoke("state", "push").output == \
        "pushed subscribers/newsletter.db to origin/main\n"
    assert git(clones["runner"], "status", "--porcelain", "--untracked-files=no") == ""
