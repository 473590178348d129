"""The morning job end to end, through the real CLI, for `make bench` (scripts/bench.py).

A loopback HTTP server serves the day's papers as one RSS 2.0 feed, an aiosmtpd sink on
loopback accepts the email, and ``newsletter subscribers import`` then ``newsletter run
--all`` run as child processes, no LLM. Measured per child: wall time, messages the sink
accepted, peak RSS (the child's own ru_maxrss from wait4, and the sum over its process tree
sampled from /proc every 50 ms, which counts worker processes; PSS so that pages shared after a
fork count once), the main process's CPU
seconds, and the SQL statements it ran (a trace callback installed by a small wrapper).
"""

from __future__ import annotations

import csv
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent

# Run inside the child: count every top-level SQL statement on every connection.
WRAPPER = """
import atexit, os, sqlite3, sys
count = [0]
_connect = sqlite3.connect
def _counted(*a, **k):
    conn = _connect(*a, **k)
    def trace(sql):
        if not sql.startswith("--"):
            count[0] += 1
    conn.set_trace_callback(trace)
    return conn
sqlite3.connect = _counted
main_pid = os.getpid()
def _write():
    if os.getpid() == main_pid:
        with open(os.environ["BENCH_SQL_COUNT"], "w") as f:
            f.write(str(count[0]))
atexit.register(_write)
from newsletter.cli import cli
cli(prog_name="newsletter")
"""


@dataclass
class ChildRun:
    seconds: float
    returncode: int
    maxrss_mb: float  # wait4's peak: the largest of the child and its reaped workers
    tree_mb: float  # peak of the summed PSS over the child and its descendants (sampled)
    main_mb: float  # peak RSS of the child itself (sampled)
    worker_mb: float  # peak RSS of its largest worker process (sampled)
    main_cpu: float  # main process user+system seconds (last /proc sample)
    tree_cpu: float  # the child and its reaped worker processes, user+system (wait4)
    sql: int
    stdout: str
    stderr: str


def _tree(pid: int) -> list[int]:
    """pid and its descendants, from /proc/<pid>/task/*/children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _proc_kb(path: str, key: str) -> int:
    """A "Key:  N kB" figure from a /proc file (0 when the process is gone)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    """Proportional set size: pages shared by forked workers are counted once in a sum."""
    return _proc_kb(f"/proc/{pid}/smaps_rollup", "Pss:")


def _rss_kb(pid: int) -> int:
    return _proc_kb(f"/proc/{pid}/status", "VmRSS:")


def _cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def run_child(args: list[str], env: dict[str, str], tmp: Path) -> ChildRun:
    count_file = tmp / f"sql-{time.monotonic_ns()}.txt"
    env = {**env, "BENCH_SQL_COUNT": str(count_file)}
    out, err = tmp / "child.out", tmp / "child.err"
    started = time.perf_counter()
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([sys.executable, "-c", WRAPPER, *args], env=env, stdout=o,
                                stderr=e, cwd=tmp)
        peak, cpu, main_peak, worker_peak = 0, 0.0, 0, 0
        while True:
            done, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if done:
                break
            tree = _tree(proc.pid)
            peak = max(peak, sum(_pss_kb(p) for p in tree))
            main_peak = max(main_peak, _rss_kb(proc.pid))
            worker_peak = max([worker_peak, *(_rss_kb(p) for p in tree[1:])])
            cpu = _cpu(proc.pid) or cpu
            time.sleep(0.05)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    sql = int(count_file.read_text()) if count_file.exists() else -1
    return ChildRun(seconds, proc.returncode, usage.ru_maxrss / 1024,
                    peak / 1024, main_peak / 1024, worker_peak / 1024, cpu,
                    usage.ru_utime + usage.ru_stime, sql,
                    out.read_text(errors="replace"), err.read_text(errors="replace"))


def rss_feed(papers: list[Any]) -> bytes:
    items = []
    for p in papers:
        creators = "".join(f"<dc:creator>{escape(a)}</dc:creator>" for a in p.authors)
        items.append(
            f"<item><title>{escape(p.title)}</title><link>{escape(p.url)}</link>"
            f"<guid>{escape(p.url)}</guid><pubDate>{format_datetime(p.published)}</pubDate>"
            f"{creators}<description>{escape(p.abstract)}</description></item>")
    return ('<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>Bench preprints'
            '</title><link>https://example.org/</link><description>bench</description>'
            + "".join(items) + "</channel></rss>").encode()


def serve(respond: Callable[[bytes], tuple[str, bytes]]) -> tuple[str, ThreadingHTTPServer]:
    """A loopback HTTP server answering every GET and POST with ``respond(request body)``
    -> (content type, body)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            content_type, body = respond(self.rfile.read(length) if length else b"")
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}/feed.xml", httpd


class Sink:
    """An aiosmtpd server on loopback that accepts and counts every message."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.count = 0
        self.first: float | None = None
        self.lock = threading.Lock()
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                with sink.lock:
                    sink.count += 1
                    if sink.first is None:
                        sink.first = time.perf_counter()
                return "250 OK"

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=port)
        self.controller.start()
        self.url = f"smtp://127.0.0.1:{port}"

    def stop(self) -> None:
        self.controller.stop()


def write_csv(path: Path, subs: list[dict[str, Any]], rng: random.Random) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["email", "language", "max_papers", "authors", "topics"])
        for s in subs:
            w.writerow([s["email"], s["language"], rng.choice((3, 5, 8, 10, 10, 15)),
                        "|".join(s["authors"]), "|".join(s["topics"])])


BENCH_MODEL = "openai/gpt-4o-mini"  # priced in litellm's bundled list


def seed_briefs(db_path: Path, now: str, every: int = 2, most: int = 10_000) -> int:
    """Put an LLM brief into the cache for the issue of every ``every``-th subscriber (at
    most ``most``), as an earlier run with a model would have left it, and record a day's
    spend over the budget the timed run gets: then the timed run serves those briefs from
    the cache and gives every other issue the extractive digest (daily budget reached),
    calling no model. Returns how many briefs were cached."""
    from newsletter import brief as brief_mod
    from newsletter import pipeline, store
    from newsletter.config import Settings
    from newsletter.models import Brief, Theme

    when = datetime.fromisoformat(now)
    settings = Settings(llm_model=BENCH_MODEL)
    db = store.open_db(db_path)
    subs = store.list_subscribers(db, status="active")[::every][:most]
    index = pipeline.build_index(db, when - timedelta(days=settings.first_issue_days))
    keys: set[str] = set()
    for sub in subs:
        issue = pipeline.plan_issue(db, sub, settings, when, index)
        papers = [m.paper for m in issue.matches]
        if not papers:
            continue
        key = brief_mod.cache_key([p.id for p in papers], sub.language, BENCH_MODEL)
        if key in keys:
            continue
        keys.add(key)
        first = [brief_mod.first_sentence(p.abstract) for p in papers]
        brief = Brief(
            kind="llm", model=BENCH_MODEL,
            headline=f"What {len(papers)} new papers share, and where they disagree",
            themes=tuple(Theme(f"Theme {n}", f"A finding the papers share ({n}).", (n,),
                               (first[n - 1][:120],)) for n in range(1, len(papers) + 1)),
            connections=(Theme("", "Two of them meet on one method.", (1, len(papers)),
                               (first[0][:120], first[-1][:120])),),
            per_paper=tuple(f"The paper's own claim, in one line ({n})."
                            for n in range(1, len(papers) + 1)))
        store.put_brief(db, {
            "key": key, "kind": "llm", "language": sub.language, "model": BENCH_MODEL,
            "prompt_version": brief_mod.PROMPT_VERSION,
            "paper_ids": json.dumps([p.id for p in papers]),
            "data": brief_mod.brief_to_json(brief), "input_tokens": 2000,
            "output_tokens": 400, "cost_usd": 0.0005}, when)
    store.log_llm_call(db, {"brief_key": "bench", "language": "en", "model": BENCH_MODEL,
                            "cost_usd": 1.0}, when)  # the day's budget is spent
    db.close()
    return len(keys)


def brief_counts(db_path: Path) -> tuple[int, int]:
    """(briefs served from the cache, extractive digests) the timed run recorded."""
    import sqlite3

    with sqlite3.connect(db_path) as conn:
        hits = conn.execute("select count(*) from brief_hits").fetchone()[0]
        fallbacks = conn.execute("select count(*) from brief_fallbacks").fetchone()[0]
    return hits, fallbacks


@dataclass
class E2E:
    n: int
    papers: int
    import_s: float
    fetch_s: float
    run: ChildRun
    sent: int
    first_email_s: float | None
    cached: int = 0  # distinct LLM briefs put into the cache before the run
    llm_briefs: int = 0  # distinct briefs the run served from the cache
    extractive: int = 0  # distinct briefs that went out as the extractive digest


def end_to_end(tmp: Path, n: int, population: Any, now: str, papers_n: int = 2000,
               extra_env: dict[str, str] | None = None, run_args: tuple[str, ...] = (),
               llm: bool = True) -> E2E:
    """Import n subscribers, fetch papers_n papers from a loopback feed, (with ``llm``)
    put LLM briefs for half of them into the cache, then time run --all."""
    rng = random.Random(n)
    papers, subs = population(rng, n, min(max(30, n // 40), 120), papers_n)
    work = tmp / f"e2e-{n}"
    work.mkdir(parents=True, exist_ok=True)
    feed = rss_feed(papers)
    url, httpd = serve(lambda _: ("application/rss+xml", feed))
    write_csv(work / "subscribers.csv", subs, rng)
    sink = Sink()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update({"NEWSLETTER_DB": str(work / "newsletter.db"), "NEWSLETTER_NOW": now,
                "NEWSLETTER_SOURCES": "bench", "NEWSLETTER_OUTBOX": str(work / "outbox"),
                "NEWSLETTER_CONFIG": str(work / "none.toml"),
                "LITELLM_LOCAL_MODEL_COST_MAP": "True", **(extra_env or {})})
    try:
        added = run_child(["sources", "add", "bench", url], env, work)
        assert added.returncode == 0, added.stderr
        imported = run_child(["subscribers", "import", str(work / "subscribers.csv")], env,
                             work)
        assert imported.returncode == 0, imported.stderr[-2000:]
        fetched = run_child(["fetch"], env, work)
        assert fetched.returncode == 0, fetched.stderr[-2000:]
        cached = seed_briefs(work / "newsletter.db", now) if llm else 0
        model_env = {"NEWSLETTER_LLM_MODEL": BENCH_MODEL, "NEWSLETTER_LLM_BUDGET_USD": "0.5",
                     "NEWSLETTER_LLM_API_BASE": "http://127.0.0.1:9/v1",  # never called
                     "OPENAI_API_KEY": "bench"} if llm else {}
        started = time.perf_counter()
        ran = run_child(["run", "--all", "--no-fetch", *run_args],
                        {**env, **model_env, "NEWSLETTER_SMTP_URL": sink.url}, work)
        assert ran.returncode == 0, (ran.stdout[-2000:], ran.stderr[-2000:])
    finally:
        sink.stop()
        httpd.shutdown()
    first = sink.first - started if sink.first else None
    hits, fallbacks = brief_counts(work / "newsletter.db")
    return E2E(n, papers_n, imported.seconds, fetched.seconds, ran, sink.count, first,
               cached, hits, fallbacks)
