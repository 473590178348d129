"""Sent every morning, exactly once: a real SMTP server on loopback receives what the job
sends, also when the job is killed half way through a batch and run again."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from email import message_from_bytes, policy

import pytest
from conftest import invoke

from newsletter import store
from newsletter.ops.lock import run_lock

PEOPLE = [f"reader{i}@example.org" for i in range(6)]


def add_people():
    for address in PEOPLE:
        invoke("subscribers", "add", address, "--author", "Taiming Lu")


def controller(handler):
    from aiosmtpd.controller import Controller

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = Controller(handler, hostname="127.0.0.1", port=port)
    c.start()
    return c, f"smtp://127.0.0.1:{port}"


class Recorder:
    """Stores every message the server accepted (answered 250 to)."""

    def __init__(self):
        self.accepted = []
        self.data_seen = 0
        self.on_data = None  # called with the count before answering; may return a reply
        self.lock = threading.Lock()
        self.peers = set()  # every client connection that said EHLO

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.peers.add(session.peer)
        return responses

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.data_seen += 1
            n = self.data_seen
        if self.on_data:
            reply = self.on_data(n, server)
            if reply:
                return reply
        msg = message_from_bytes(envelope.content, policy=policy.default)
        self.accepted.append(msg)
        return "250 OK"


def received(rec):
    return sorted(str(m["To"].addresses[0].addr_spec) for m in rec.accepted)


def wait_recorded(db_path, sent, timeout=20.0):
    """Wait until the job has recorded ``sent`` deliveries as sent.

    With several connections, another connection may hold a 250 it has not yet written
    down when the job dies: that message would be sent again by the next run (the window
    every SMTP client has between the server's answer and its own record, one message per
    connection). The tests kill the job outside that window, as the one-connection test
    always did, by letting the job record what the server already accepted first."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(db_path, timeout=5) as conn:
                done = conn.execute("select count(*) from deliveries where status = 'sent'"
                                    ).fetchone()[0]
        except sqlite3.OperationalError:
            done = -1
        if done >= sent:
            return
        time.sleep(0.01)
    raise AssertionError(f"the job recorded fewer than {sent} sent deliveries")


@pytest.mark.parametrize("kill_at,connections,workers",
                         [(1, 1, 1), (4, 1, 2), (6, 1, 1), (1, 3, 2), (4, 3, 2), (6, 3, 2)])
def test_killed_half_way_then_rerun_sends_each_exactly_once(isolated, kill_at, connections,
                                                            workers):
    add_people()
    invoke("fetch")
    rec = Recorder()
    c, url = controller(rec)
    env = {**os.environ, "NEWSLETTER_SMTP_URL": url,
           "NEWSLETTER_SMTP_CONNECTIONS": str(connections),
           "NEWSLETTER_RENDER_WORKERS": str(workers)}
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "run", "--all", "--no-fetch"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def kill(n, server):
        if n == kill_at:  # the job dies while handing over message n: it is never accepted
            wait_recorded(isolated / "newsletter.db", len(rec.accepted))
            os.kill(proc.pid, signal.SIGKILL)
        if n >= kill_at:  # other connections' messages: their sender is dead
            return "451 4.3.0 connection lost"
        return None

    rec.on_data = kill
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # a dead job's connection may still have a whole message in the server's buffer: the
    # server reads it after the job died, and it is refused as every message after the
    # kill is (one the server accepted would be the accept-then-record window, on purpose
    # kept out of this test: see wait_recorded)
    dead = set(rec.peers)
    rec.on_data = lambda n, server: "451 4.3.0 connection lost" \
        if server.session.peer in dead else None
    assert len(rec.accepted) == kill_at - 1
    try:
        result = subprocess.run([sys.executable, "-m", "newsletter", "run", "--all",
                                 "--no-fetch"], env=env, capture_output=True, text=True,
                                timeout=60)
    finally:
        c.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert received(rec) == sorted(PEOPLE), result.stdout
    ids = {}
    for m in rec.accepted:
        ids.setdefault(m["Message-ID"], 0)
        ids[m["Message-ID"]] += 1
    assert set(ids.values()) == {1}
    db = store.open_db(isolated / "newsletter.db")
    rows = store.list_deliveries(db)
    assert [(r["email"], r["status"]) for r in rows] == [(p, "sent") for p in sorted(PEOPLE)]
    # a third run sends nothing more
    third = subprocess.run([sys.executable, "-m", "newsletter", "run", "--all", "--no-fetch"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert "6 skipped (6 already sent today)" in third.stdout


def test_a_second_run_at_once_refuses_to_send(isolated, smtp_server, monkeypatch):
    add_people()
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", smtp_server.url)
    with run_lock(str(isolated / "newsletter.db")):
        result = invoke("run", "--all", ok=False)
        assert result.exit_code == 1
        assert result.output.startswith(f"Error: another run is in progress (pid {os.getpid()}")
        started = time.monotonic()
        result = invoke("run", "--all", "--wait", "0.5", ok=False)
        assert result.exit_code == 1 and time.monotonic() - started >= 0.5
    assert smtp_server.messages == []
    assert "6 sent" in invoke("run", "--all").output


def test_temporary_refusal_is_retried_and_a_hang_up_reconnects(isolated, monkeypatch):
    add_people()
    rec = Recorder()
    state = {"refused": 0}

    def flaky(n, server):
        if n == 2 and not state["refused"]:
            state["refused"] = 1
            return "451 4.7.1 greylisted, try again"
        if n == 4:
            server.transport.close()  # the server hangs up mid-batch
            return "421 closing"
        return None

    rec.on_data = flaky
    c, url = controller(rec)
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", url)
    try:
        out = invoke("run", "--all").output
    finally:
        c.stop()
    assert "Summary: 6 due, 6 sent" in out
    assert received(rec) == sorted(PEOPLE)


def test_permanent_failure_is_recorded_and_the_others_still_go(isolated, monkeypatch):
    add_people()
    rec = Recorder()
    rec.on_data = lambda n, server: "554 5.7.1 rejected as spam" if n == 3 else None
    c, url = controller(rec)
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", url)
    try:
        result = invoke("run", "--all", ok=False)
    finally:
        c.stop()
    assert result.exit_code == 1
    assert "5 sent, 1 failed (1 554 5.7.1 rejected as spam)" in result.output
    failed = invoke("deliveries", "list", "--status", "failed").output
    assert "554 5.7.1 rejected as spam" in failed and failed.rstrip().endswith("1 deliveries")


def test_rate_limit_paces_messages(isolated, smtp_server, monkeypatch):
    add_people()
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", smtp_server.url)
    monkeypatch.setenv("NEWSLETTER_SMTP_RATE", "20")
    started = time.monotonic()
    invoke("run", "--all")
    assert time.monotonic() - started >= 5 / 20
    assert len(smtp_server.messages) == 6


def test_secrets_are_redacted_in_dry_run(isolated, monkeypatch):
    add_people()
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", "smtps://me:hunter2@mail.example.org:465")
    out = invoke("run", "--all", "--dry-run").output
    assert "Transport: smtps://me:***@mail.example.org:465 (dry run: nothing sent)" in out
    assert "hunter2" not in out
    config = invoke("config").output
    assert "hunter2" not in config and "smtps://me:***@mail.example.org:465" in config


def test_temporary_failure_is_deferred_and_sent_by_the_next_run(isolated, monkeypatch):
    add_people()
    rec = Recorder()
    rec.on_data = lambda n, server: "452 4.2.2 mailbox full" if n >= 2 else None
    c, url = controller(rec)
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", url)
    try:
        first = invoke("run", "--all", ok=False)
        assert first.exit_code == 1
        assert "1 sent, 5 deferred (5 452 4.2.2 mailbox full)" in first.output
        assert invoke("deliveries", "list", "--status", "deferred").output.rstrip().endswith(
            "5 deliveries")
        rec.on_data = None
        second = invoke("run", "--all").output
    finally:
        c.stop()
    assert "5 sent, 1 skipped (1 already sent today)" in second
    assert received(rec) == sorted(PEOPLE)
