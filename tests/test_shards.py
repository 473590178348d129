"""Beyond one runner: `run --shard K/N` as a GitHub Actions matrix would run it. Four shards,
each on its own machine (a directory of its own), pull the encrypted state from one bare
git remote, send, and push their deliveries back through `state push` (the same merge as
always); one shard is killed half way, pushes what it did (the workflow's `if: always()`
step), and is re-run on a fresh machine. A real SMTP server on loopback counts what
arrives."""

import os
import signal
import subprocess
import sys

from conftest import invoke
from test_exactly_once import Recorder, controller, wait_recorded

from newsletter import store
from newsletter.ops import statesync
from newsletter.pipeline import in_shard, parse_shard

KEY = statesync.new_key()

PEOPLE = [f"reader{i:02d}@example.org" for i in range(16)]
SHARDS = 4


def machine(tmp_path, name):
    path = tmp_path / name
    path.mkdir()
    return path


def cli(where, origin, url, *args):
    env = {**os.environ, "NEWSLETTER_DB": str(where / "newsletter.db"),
           "NEWSLETTER_STATE_KEY": KEY, "NEWSLETTER_STATE_REMOTE": str(origin),
           "GIT_COMMITTER_NAME": "runner", "GIT_COMMITTER_EMAIL": "runner@example.org",
           "GIT_AUTHOR_NAME": "runner", "GIT_AUTHOR_EMAIL": "runner@example.org",
           "NEWSLETTER_SMTP_URL": url, "NEWSLETTER_SMTP_CONNECTIONS": "2",
           "NEWSLETTER_RENDER_WORKERS": "2"}
    return subprocess.Popen([sys.executable, "-m", "newsletter", *args], env=env, cwd=where,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc):
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    return out


def test_shards_partition_the_list_stably():
    owners = {p: [k for k in range(1, SHARDS + 1) if in_shard(p, (k, SHARDS))] for p in PEOPLE}
    assert all(len(ks) == 1 for ks in owners.values())  # every address in exactly one shard
    assert len({ks[0] for ks in owners.values()}) == SHARDS  # and no shard is empty here
    assert in_shard("Reader03@Example.org ", (owners["reader03@example.org"][0], SHARDS))
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "2", "a/b", "2/"):
        result = invoke("run", "--all", "--shard", bad, ok=False)
        assert result.exit_code == 1 and "expected K/N with 1 <= K <= N" in result.output


def test_four_shards_one_killed_half_way_and_rerun_send_each_exactly_once(tmp_path):
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(origin)], check=True)
    seed = machine(tmp_path, "laptop")
    for address in PEOPLE:
        finish(cli(seed, origin, "", "subscribers", "add", address, "--author", "Taiming Lu"))
    finish(cli(seed, origin, "", "fetch"))
    finish(cli(seed, origin, "", "state", "push", "-m", "subscribers and papers"))

    members = {k: [p for p in PEOPLE if in_shard(p, (k, SHARDS))] for k in range(1, 5)}
    killed = max(members, key=lambda k: len(members[k]))  # the biggest shard dies
    assert len(members[killed]) >= 3
    rec = Recorder()
    c, url = controller(rec)
    runners = {k: machine(tmp_path, f"shard{k}") for k in range(1, SHARDS + 1)}
    try:
        for where in runners.values():  # every shard starts from the same state
            finish(cli(where, origin, url, "state", "pull"))
        for k, where in runners.items():
            if k != killed:
                out = finish(cli(where, origin, url, "run", "--all", "--shard",
                                 f"{k}/{SHARDS}"))
                assert f"{len(members[k])} sent" in out
                finish(cli(where, origin, url, "state", "push", "-m", f"shard {k}"))
                continue
            before = len(rec.accepted)
            proc = cli(where, origin, url, "run", "--all", "--shard", f"{k}/{SHARDS}")
            half = len(members[k]) // 2 + 1

            def kill(n, server, proc=proc, at=before + half, db=where / "newsletter.db",
                     before=before):
                if n == at:  # dies while handing over a message: it is never accepted
                    wait_recorded(db, len(rec.accepted) - before)
                    os.kill(proc.pid, signal.SIGKILL)
                if n >= at:
                    return "451 4.3.0 connection lost"
                return None

            rec.on_data = kill
            proc.wait(timeout=120)
            rec.on_data = None
            assert proc.returncode == -signal.SIGKILL
            assert len(rec.accepted) - before == half - 1  # half of the shard went out
            # the workflow's `if: always()` step carries what the dead shard did
            finish(cli(where, origin, url, "state", "push", "-m", f"shard {k} killed"))
        # the failed matrix job is re-run: a fresh machine pulls what the remote has now
        rerun = machine(tmp_path, f"shard{killed}-rerun")
        finish(cli(rerun, origin, url, "state", "pull"))
        out = finish(cli(rerun, origin, url, "run", "--all", "--shard", f"{killed}/{SHARDS}"))
        assert f"{len(members[killed]) - half + 1} sent" in out
        assert f"{half - 1} skipped ({half - 1} already sent today)" in out
        finish(cli(rerun, origin, url, "state", "push", "-m", f"shard {killed} re-run"))
    finally:
        c.stop()
    got = sorted(str(m["To"].addresses[0].addr_spec) for m in rec.accepted)
    assert got == sorted(PEOPLE)  # nothing lost, nothing twice
    assert len({m["Message-ID"] for m in rec.accepted}) == len(PEOPLE)
    check = machine(tmp_path, "check")
    finish(cli(check, origin, "", "state", "pull"))
    rows = store.list_deliveries(store.open_db(check / "newsletter.db"))
    assert sorted((r["email"], r["status"]) for r in rows) == [(p, "sent") for p in
                                                               sorted(PEOPLE)]
