"""One story for the web endpoint and the scheduled job: `newsletter serve` runs on its own
machine next to `newsletter state watch`; a one-click unsubscribe POST (RFC 8058) to the
link in a real issue is pushed to the state branch, and the next scheduled run, which pulls
first, sends that person nothing. Everything here is a real process: the endpoint and the
watcher are started as commands and reached over loopback HTTP and a bare git remote."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from email import message_from_bytes, policy
from pathlib import Path

from conftest import invoke

from newsletter import store
from newsletter.ops import statesync

NEWSLETTER = str(Path(sys.executable).parent / "newsletter")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check, what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _head(remote: Path) -> str:
    return subprocess.run(["git", "-C", str(remote), "rev-parse", "newsletter-state"],
                          capture_output=True, text=True).stdout.strip()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_one_click_unsubscribe_reaches_the_next_scheduled_run(tmp_path, monkeypatch):
    remote = tmp_path / "state.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    port = _free_port()
    env = {"NEWSLETTER_STATE_KEY": statesync.new_key(), "NEWSLETTER_STATE_REMOTE": str(remote),
           "NEWSLETTER_SECRET": "a-long-random-secret-for-the-links",
           "NEWSLETTER_UNSUBSCRIBE_URL": f"http://127.0.0.1:{port}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # the list is set up on a laptop and pushed
    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu")
    invoke("subscribers", "add", "bob@example.org", "--topic", "CRISPR")
    invoke("state", "push", "-m", "first subscribers")
    # the web machine: the watcher pulls the state, then the endpoint serves it
    server_env = {**os.environ, **env, "NEWSLETTER_DB": str(tmp_path / "web" / "n.db")}
    server_env.pop("NEWSLETTER_NOW")
    procs = [subprocess.Popen([NEWSLETTER, "state", "watch", "--interval", "0.2"],
                              env=server_env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, cwd=tmp_path)]
    try:
        _wait(lambda: (tmp_path / "web" / "n.db.state").exists(), "the first pull")
        procs.append(subprocess.Popen([NEWSLETTER, "serve", "--port", str(port)],
                                      env=server_env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, cwd=tmp_path))
        _wait(lambda: _listening(port), "the endpoint")
        # the scheduled job (its own database): pull, send, push
        monkeypatch.setenv("NEWSLETTER_DB", str(tmp_path / "job" / "n.db"))
        invoke("state", "pull")
        assert "2 sent" in invoke("run", "--all").output
        invoke("state", "push", "-m", "Morning run")
        raw = next((tmp_path / "outbox").glob("*ada@example.org.eml")).read_bytes()
        msg = message_from_bytes(raw, policy=policy.default)
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = re.search(r"<(http://[^>]+)>", str(msg["List-Unsubscribe"])).group(1)
        # Ada's mail provider sends the one-click POST (RFC 8058: no cookie, no page)
        before = _head(remote)
        request = urllib.request.Request(
            url, data=b"List-Unsubscribe=One-Click", method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
        _wait(lambda: _head(remote) != before, "the watcher's push")
        log = subprocess.run(["git", "-C", str(remote), "log", "-1", "--format=%s",
                              "newsletter-state"], capture_output=True, text=True).stdout
        assert log.startswith("web changes: ") and "1 unsubscribed" in log
        # the next morning's run pulls first and sends Ada nothing
        invoke("state", "pull")
        monkeypatch.setenv("NEWSLETTER_NOW", "2026-11-23T09:00:00+00:00")
        out = invoke("run", "--all").output
        db = store.open_db(tmp_path / "job" / "n.db")
        assert store.get_subscriber(db, "ada@example.org").status == "unsubscribed"
        sent = {d["email"] for d in store.list_deliveries(db) if d["issue_date"] ==
                "2026-11-23"}
        assert "ada@example.org" not in sent, out
        assert "ada@example.org" not in [line.split()[1] for line in out.splitlines()
                                         if line.startswith("sent")]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
