"""`make bench`: speed and memory figures, printed (not a timed test).

Each section measures one stage or scenario named in the issues. Wall time is
time.perf_counter; "peak RSS" is the process's maximum resident set size (ru_maxrss) when
the step ends, so it includes native memory (MRML, lxml) and everything loaded before.
Run `make bench` on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from newsletter import pipeline, render, send, store, subscribers  # noqa: E402
from newsletter.config import Settings  # noqa: E402
from newsletter.sources import sample  # noqa: E402

NOW = datetime(2026, 11, 22, 9, tzinfo=UTC)
RESULTS: list[tuple[str, str]] = []


@contextmanager
def measure(label: str) -> Iterator[dict[str, float]]:
    out: dict[str, float] = {}
    started = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - started
        out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  {label:<48} {out['seconds']:8.3f} s   peak RSS {out['peak_mb']:6.0f} MB",
              flush=True)


def bench_demo(tmp: Path) -> None:
    print("Demo morning job, stage by stage (bundled sample, 4 subscribers, outbox):")
    settings = Settings(db=str(tmp / "demo.db"), outbox=str(tmp / "outbox"), sources="sample")
    total = time.perf_counter()
    with measure("open database + add subscribers"):
        db = store.open_db(settings.db)
        for row in sample.load_subscribers():
            subscribers.add(db, **row)
    with measure("fetch (sample source -> store)"):
        pipeline.fetch(db, settings, NOW)
    subs = store.list_subscribers(db)
    with measure("match (index + 4 issues)"):
        index = pipeline.build_index(db, min(pipeline.window_start(db, s, settings, NOW)
                                             for s in subs))
        issues = [pipeline.plan_issue(db, s, settings, NOW, index) for s in subs]
    with measure("brief (extractive)"):
        report = pipeline.RunReport()
        briefs = pipeline.write_briefs(
            db, [(tuple(m.paper for m in i.matches), i.subscriber.language) for i in issues],
            settings, NOW, report)
        issues = [pipeline.with_brief(i, briefs) for i in issues]
    with measure("render (Jinja2 -> MJML -> premailer + text)"):
        rendered = [render.render(i, settings) for i in issues]
    with measure("send (outbox)"):
        with send.Outbox(settings.outbox) as box:
            for i, r in zip(issues, rendered, strict=True):
                box.send(render.build_message(i, r, settings, NOW), i.subscriber.email,
                         i.issue_date.isoformat(), r.html)
    print(f"  {'whole demo':<44} {time.perf_counter() - total:8.3f} s")


def bench_render(tmp: Path, count: int) -> None:
    print(f"Rendering {count} personalised issues of 10 papers (HTML, text, message):")
    papers = sample.load_papers()
    from newsletter.brief import extractive
    from newsletter.models import Issue, Match, Subscriber

    settings = Settings()
    with measure(f"{count} issues") as m:
        sizes = []
        for n in range(count):
            chosen = [papers[(n + k) % len(papers)] for k in range(10)]
            sub = Subscriber(f"reader{n}@example.org", name=f"Reader {n}",
                             language="zh" if n % 4 == 0 else "en", authors=("Taiming Lu",))
            issue = Issue(sub, NOW.date(), tuple(Match(p, 1.0, ("topic: x",)) for p in chosen),
                          (), extractive(chosen))
            r = render.render(issue, settings)
            sizes.append(len(bytes(render.build_message(issue, r, settings, NOW))))
    print(f"  -> {count / m['seconds']:.1f} emails/s; message size mean "
          f"{sum(sizes) / len(sizes) / 1024:.1f} KiB, max {max(sizes) / 1024:.1f} KiB")


MORE_MATCHES = 20  # as in pipeline.MORE_MATCHES
EXTRA_TOPICS = ["graph neural network*", "protein", '"language model" AND evaluation',
                "CRISPR", "quantum", "(vision OR image) AND transformer*", "single-cell",
                "reinforcement learning NOT game*", "causal", "climate"]


def bench_match(subs_n: int = 1000, papers_n: int = 5000) -> None:
    """1,000 subscribers against 5,000 new papers (issue 4's target: < 5 s, < 300 MB)."""
    import json
    import random

    from newsletter.match import Index, rank
    from newsletter.models import Paper, Subscriber

    print(f"Matching {subs_n} subscribers against {papers_n} new papers:")
    rng = random.Random(7)
    root = Path(__file__).resolve().parent.parent
    base = json.loads((root / "tests" / "eval" / "papers.json").read_text())
    profiles = json.loads((root / "tests" / "eval" / "profiles.json").read_text())
    words = " ".join(p["abstract"] for p in base).split()
    names = sorted({a for p in base for a in p["authors"]})
    papers = []
    for i in range(papers_n):
        src = base[i % len(base)]
        abstract = " ".join(rng.choice(words) for _ in range(120))
        papers.append(Paper(
            id=f"9{i:04d}.{i:05d}", source="arxiv", title=src["title"] + f" ({i})",
            authors=tuple(rng.sample(names, 6)), abstract=src["abstract"] + " " + abstract,
            url="", published=NOW, categories=tuple(src["categories"])))
    subs = []
    for i in range(subs_n):
        prof = profiles[i % len(profiles)]
        subs.append(Subscriber(
            f"s{i}@example.org", authors=tuple(rng.sample(names, 3)),
            topics=tuple(prof["topics"]) + (rng.choice(EXTRA_TOPICS),),
            categories=tuple(prof["categories"]), exclude=tuple(prof["exclude"])))
    with measure("index 5,000 papers + match 1,000 subscribers") as m:
        index = Index(papers)
        total = sum(rank(s, index, limit=s.max_papers + MORE_MATCHES)[1] for s in subs)
    print(f"  -> {total} matches; {m['seconds'] * 1000 / subs_n:.2f} ms per subscriber "
          f"(target: whole run < 5 s and < 300 MB)")


def bench_arxiv() -> None:
    """200 subscribers following 300 distinct authors and 20 categories: how many arXiv
    requests one fetch makes, against one request per author per subscriber (issue 3)."""
    import math
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from newsletter.models import Subscriber
    from newsletter.sources import arxiv

    root = Path(__file__).resolve().parent.parent / "tests" / "data"
    empty_api = (root / "arxiv" / "query-empty.atom").read_bytes()
    empty_rss = (root / "feeds" / "empty.rss").read_bytes()
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits.append(self.path)
            body = empty_api if self.path.startswith("/api") else empty_rss
            self.send_response(200)
            self.send_header("Content-Type", "application/atom+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    authors = [f"Given{i} Family{i}" for i in range(300)]
    cats = ["cs.CL", "cs.LG", "cs.CV", "cs.AI", "stat.ML", "q-bio.NC", "q-bio.GN", "quant-ph",
            "astro-ph.GA", "cond-mat.stat-mech", "physics.bio-ph", "math.OC", "eess.IV",
            "econ.EM", "cs.RO", "cs.IR", "cs.CR", "hep-th", "gr-qc", "nlin.AO"]
    subs = [Subscriber(f"s{i}@example.org",
                       authors=tuple(authors[(i * 3 + k) % 300] for k in range(3)),
                       categories=(cats[i % 20], cats[(i + 7) % 20])) for i in range(200)]
    naive = sum(len(s.authors) for s in subs)
    settings = Settings(arxiv_api_url=base + "/api/query", arxiv_rss_url=base + "/rss",
                        arxiv_delay=0.0)
    print("arXiv requests for 200 subscribers, 300 distinct authors, 20 categories:")
    with measure("one fetch (loopback server, pacing off)"):
        result = arxiv.fetch(settings, subs, NOW.replace(day=21), NOW)
    server.shutdown()
    bound = math.ceil(300 / arxiv.AUTHOR_BATCH) + 20
    print(f"  -> {result.requests} requests ({len(hits)} seen by the server), against {naive} "
          f"for one per author per subscriber: ratio {result.requests / naive:.3f}; "
          f"target <= ceil(300/{arxiv.AUTHOR_BATCH}) + 20 = {bound}")
    print(f"  -> at arXiv's pace of one request per 3 s: {result.requests * 3 / 60:.1f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--render", type=int, default=200, help="issues to render")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_demo(Path(tmp))
        bench_arxiv()
        bench_match()
        bench_render(Path(tmp), args.render)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"Process peak RSS: {rss:.0f} MB")


if __name__ == "__main__":
    main()
