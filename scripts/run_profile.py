"""Time or profile one `run --all` of the bench's population, for working on its speed.

    python scripts/run_profile.py 20000                  # time it; CPU per process
    python scripts/run_profile.py 20000 --llm            # with the bench's cached LLM briefs
    python scripts/run_profile.py 5000 --py-spy out.txt  # py-spy raw stacks, workers too

The population, feed and sink are `make bench`'s (scripts/bench_e2e.py). The database is
built once per size (import and fetch, in /tmp/run-profile-N) and copied for every
attempt, so attempts compare the run alone. Printed: wall time, emails/s, the run's own
CPU, its workers' (wait4's total minus the run's own), this process's (mostly the sink),
the idle share of the machine per second, and SQL statements per subscriber.
py-spy is not a dependency: install it in a scratch virtualenv and pass its path with
--py-spy-bin.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402
import bench_e2e  # noqa: E402


def _cpu_idle() -> tuple[int, int]:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return values[3] + values[4], sum(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("subscribers", type=int)
    ap.add_argument("--llm", action="store_true", help="cached LLM briefs, budget spent")
    ap.add_argument("--connections", type=int, default=bench.E2E_SMTP)
    ap.add_argument("--py-spy", metavar="OUT", help="record raw stacks to OUT")
    ap.add_argument("--py-spy-bin", default="py-spy")
    args = ap.parse_args()
    n = args.subscribers
    root = Path(f"/tmp/run-profile-{n}")
    rng = random.Random(n)
    papers, subs = bench._lab_population(rng, n, min(max(30, n // 40), 120), 2000)
    feed = bench_e2e.rss_feed(papers)
    url, httpd = bench_e2e.serve(lambda _: ("application/rss+xml", feed))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update({"NEWSLETTER_DB": str(root / "newsletter.db"),
                "NEWSLETTER_NOW": bench.NOW.isoformat(), "NEWSLETTER_SOURCES": "bench",
                "NEWSLETTER_OUTBOX": str(root / "outbox"),
                "NEWSLETTER_CONFIG": str(root / "none.toml"),
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "NEWSLETTER_SMTP_CONNECTIONS": str(args.connections)})
    if not (root / "base.db").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        bench_e2e.write_csv(root / "subscribers.csv", subs, rng)
        for step in (["sources", "add", "bench", url],
                     ["subscribers", "import", str(root / "subscribers.csv")], ["fetch"]):
            done = bench_e2e.run_child(step, env, root)
            assert done.returncode == 0, done.stderr[-2000:]
        with sqlite3.connect(root / "newsletter.db") as conn:
            conn.execute("pragma wal_checkpoint(TRUNCATE)")
        shutil.copy(root / "newsletter.db", root / "base.db")
    shutil.copy(root / "base.db", root / "newsletter.db")
    for extra in ("newsletter.db-wal", "newsletter.db-shm"):
        (root / extra).unlink(missing_ok=True)
    if args.llm:
        bench_e2e.seed_briefs(root / "newsletter.db", bench.NOW.isoformat())
        env.update({"NEWSLETTER_LLM_MODEL": bench_e2e.BENCH_MODEL,
                    "NEWSLETTER_LLM_BUDGET_USD": "0.5",
                    "NEWSLETTER_LLM_API_BASE": "http://127.0.0.1:9/v1",
                    "OPENAI_API_KEY": "bench"})
    sink = bench_e2e.Sink()
    env["NEWSLETTER_SMTP_URL"] = sink.url
    run = ["run", "--all", "--no-fetch"]
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    try:
        if args.py_spy:
            subprocess.run([args.py_spy_bin, "record", "-r", "200", "-o", args.py_spy,
                            "--format", "raw", "--threads", "--gil", "--subprocesses", "--",
                            sys.executable, "-m", "newsletter", *run], env=env, cwd=root,
                           stdout=subprocess.DEVNULL, check=True)
            print(f"{n} subscribers: {time.perf_counter() - started:.1f} s, {sink.count} "
                  f"sent; stacks in {args.py_spy}")
            return
        idle: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            last = _cpu_idle()
            while not stop.wait(1.0):
                now = _cpu_idle()
                idle.append(round(100 * (now[0] - last[0]) / max(1, now[1] - last[1])))
                last = now

        threading.Thread(target=sample, daemon=True).start()
        child = bench_e2e.run_child(run, env, root)
        stop.set()
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        own = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        assert child.returncode == 0, child.stderr[-3000:]
        print(f"{n} subscribers: {wall:.1f} s, {sink.count} sent, {sink.count / wall:.0f} "
              f"emails/s, first after {(sink.first or started) - started:.1f} s")
        print(f"CPU per email: run {child.main_cpu / n * 1000:.2f} ms, workers "
              f"{(child.tree_cpu - child.main_cpu) / n * 1000:.2f} ms, sink (this process) "
              f"{own / n * 1000:.2f} ms; SQL per subscriber {child.sql / n:.1f}; "
              f"tree PSS {child.tree_mb:.0f} MB")
        print("idle % per second:", idle)
    finally:
        sink.stop()
        httpd.shutdown()


if __name__ == "__main__":
    main()
