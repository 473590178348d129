"""`make eval`, part two: does the learned ranking find the papers a reader wants?

Built only from real arXiv records (``../shared/eval/arxiv/papers.jsonl``, read in place; see
its README for provenance). For each real author with four or more papers there, their
earlier papers are the seeds ("papers like mine"), and their later papers are the ones to
find, hidden among the other real papers of the same period (same topical collection, so
hard) and a real day's multi-category listing (arXiv 0704.0001-0704.0200).

The later papers are split in time: the first half sits in a "feedback day" where the
simulated reader marks what they are shown (three rounds: each round the top 10 not yet
judged; their own papers relevant, the rest not relevant), the second half in the "test
day" on which everything is measured. Authors are split by a hash of their name into a
tuning half (``dev``) and a held-out half (``test``) that no setting was chosen on; the
table and the targets are on ``test``.

The simulated keyword profile: the three words of the seed titles with the highest TF-IDF
against the whole collection (a rule fixed before looking at results).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from newsletter.match import rank  # noqa: E402
from newsletter.models import Paper, Subscriber  # noqa: E402
from newsletter.pipeline import index_papers  # noqa: E402
from newsletter.relevance.learned import Labels, Model, rerank  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# the shared real-records set: $NEWSLETTER_EVAL_DATA, else ../shared/eval beside the checkout
DATA = Path(os.environ.get("NEWSLETTER_EVAL_DATA") or next(
    (p / "shared" / "eval" for p in ROOT.parents if (p / "shared" / "eval").is_dir()),
    ROOT.parent / "shared" / "eval")) / "arxiv"
K = 10
DISTRACTORS = 150
LIKE_CAP = 5
MIN_AUTHORS = 20
FEEDBACK = " + 3 rounds of feedback"


def load(path: Path) -> list[Paper]:
    out = []
    for line in path.read_text("utf-8").splitlines():
        d = json.loads(line)
        out.append(Paper(id=d["id"], source="arxiv", title=d["title"],
                         authors=tuple(d["authors"]), abstract=d["abstract"], url="",
                         published=datetime.fromisoformat(d["published"]).replace(tzinfo=UTC),
                         categories=tuple(d.get("categories") or ())))
    return out


def split_of(author: str) -> str:
    return "test" if hashlib.sha256(author.encode()).digest()[0] % 2 else "dev"


def keywords(seeds: list[Paper], df: dict[str, int], n_docs: int) -> tuple[str, ...]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    counts: dict[str, int] = defaultdict(int)
    for p in seeds:
        for w in {w.strip(".,:;()[]{}\"'$\\").lower() for w in p.title.split()}:
            if len(w) >= 4 and w.isalpha() and w not in ENGLISH_STOP_WORDS:
                counts[w] += 1
    scored = sorted(counts, key=lambda w: (-counts[w] * math.log(n_docs / (1 + df.get(w, 0))),
                                           w))
    return tuple(scored[:3])


def metrics(ranked: list[str], relevant: set[str]) -> tuple[float, float]:
    top = ranked[:K]
    hits = [1 if pid in relevant else 0 for pid in top]
    recall = sum(hits) / len(relevant)
    dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
    ideal = sum(1 / math.log2(i + 2) for i in range(min(K, len(relevant))))
    return recall, dcg / ideal


def cases(papers: list[Paper]) -> list[dict]:
    """One case per author: seeds, feedback day, test day."""
    string = [p for p in papers if p.published.year < 2025 and p.id[:4] != "0704"]
    day_listing = [p for p in papers if p.id.startswith("0704.")]
    by_author: dict[str, list[Paper]] = defaultdict(list)
    for p in string:
        for a in p.authors:
            by_author[a].append(p)
    out = []
    for author, own in sorted(by_author.items()):
        own = sorted(own, key=lambda p: (p.published, p.id))
        if len(own) < 4:
            continue
        n_seed = len(own) // 2
        seeds, later = own[:n_seed], own[n_seed:]
        half = max(1, len(later) // 2)
        fb_pos, test_pos = later[:half], later[half:]
        if not test_pos:
            continue
        mine = {p.id for p in own}
        rng = random.Random(author)
        cut, test_from = seeds[-1].published, test_pos[0].published
        fb_pool = [p for p in string if p.id not in mine and cut <= p.published < test_from]
        test_pool = [p for p in string if p.id not in mine and p.published >= test_from]
        if len(fb_pool) < DISTRACTORS or len(test_pool) < DISTRACTORS:
            # too late in the collection for a full day: take the nearest papers in time
            rest = sorted((p for p in string if p.id not in mine and p.published >= cut),
                          key=lambda p: p.published)
            fb_pool = rest[: len(rest) // 2]
            test_pool = rest[len(rest) // 2:]
        fb_day = fb_pos + rng.sample(fb_pool, min(DISTRACTORS, len(fb_pool))) + day_listing
        test_day = test_pos + rng.sample(test_pool, min(DISTRACTORS, len(test_pool))) \
            + day_listing
        out.append({"author": author, "split": split_of(author), "seeds": seeds,
                    "fb_day": fb_day, "fb_pos": {p.id for p in fb_pos},
                    "test_day": test_day, "test_pos": {p.id for p in test_pos}})
    return out


def run_case(case: dict, df: dict[str, int], n_docs: int) -> dict[str, tuple[float, float]]:
    seeds = case["seeds"]
    sub = Subscriber(f"{abs(hash(case['author']))}@eval.example",
                     topics=keywords(seeds, df, n_docs))
    test_day = case["test_day"]
    index = index_papers(test_day)
    matches, _ = rank(sub, index)
    rel = case["test_pos"]
    results = {"keyword filters alone": metrics([m.paper.id for m in matches], rel)}

    model = Model(test_day, seeds)
    sim = model.similarity(seeds)
    order = sorted(range(len(test_day)), key=lambda n: (-sim[n], test_day[n].id))
    results["similarity to seed papers"] = metrics([test_day[n].id for n in order], rel)

    def learned(labels: Labels) -> None:
        scored = model.score(labels)
        order = sorted(range(len(test_day)), key=lambda n: (-scored.score[n], test_day[n].id))
        results["learned ranking" + suffix] = metrics([test_day[n].id for n in order], rel)
        for mode, name in (("reorder", "mode: filters, reordered"),
                           ("like", "mode: filters plus papers like mine")):
            got = rerank(matches, scored, mode, LIKE_CAP)
            results[name + suffix] = metrics([m.paper.id for m in got], rel)

    suffix = ""
    learned(Labels(tuple(seeds)))
    # three rounds of feedback on the feedback day
    fb_day, fb_pos = case["fb_day"], case["fb_pos"]
    fb_model = Model(fb_day, seeds)
    fb_index = index_papers(fb_day)
    fb_matches, _ = rank(sub, fb_index)
    positives, negatives, judged = list(seeds), [], set()
    for _ in range(3):
        scored = fb_model.score(Labels(tuple(positives), tuple(negatives)))
        shown = [m.paper for m in rerank(fb_matches, scored, "like", LIKE_CAP)
                 if m.paper.id not in judged][:K]
        for p in shown:
            judged.add(p.id)
            (positives if p.id in fb_pos else negatives).append(p)
    model = Model(test_day, positives + negatives)
    suffix = FEEDBACK
    learned(Labels(tuple(positives), tuple(negatives)))
    return results


def evaluate(split: str = "test", verbose: bool = False) -> dict[str, tuple[float, float, int]]:
    papers = load(DATA / "papers.jsonl")
    df: dict[str, int] = defaultdict(int)
    for p in papers:
        for w in {w.strip(".,:;()[]{}\"'$\\").lower() for w in p.title.split()}:
            df[w] += 1
    chosen = [c for c in cases(papers) if c["split"] == split]
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for case in chosen:
        for name, (r, n) in run_case(case, df, len(papers)).items():
            sums[name][0] += r
            sums[name][1] += n
        if verbose:
            print(f"  {case['author']}: {len(case['seeds'])} seeds, "
                  f"{len(case['test_pos'])} to find", file=sys.stderr)
    return {name: (r / len(chosen), n / len(chosen), len(chosen))
            for name, (r, n) in sums.items()}


def main() -> int:
    if not (DATA / "papers.jsonl").exists():
        print(f"relevance evaluation: {DATA} not found (the shared real-records set)")
        return 1
    split = sys.argv[1] if len(sys.argv) > 1 else "test"
    table = evaluate(split, "-v" in sys.argv)
    n = next(iter(table.values()))[2]
    print(f"\nLearned ranking on real arXiv records, {split} split ({n} authors), "
          f"recall@{K} and nDCG@{K}:")
    for name, (r, nd, _) in table.items():
        print(f"  {name:<58} recall@{K} {r:.3f}  nDCG@{K} {nd:.3f}")
    ok = True
    if split == "test":
        learned, feedback = table["learned ranking"], table["learned ranking" + FEEDBACK]
        checks = [
            (f"at least {MIN_AUTHORS} held-out authors", n >= MIN_AUTHORS),
            ("learned ranking beats keyword filters alone (nDCG@10)",
             learned[1] > table["keyword filters alone"][1]),
            ("learned ranking beats similarity to seed papers (nDCG@10)",
             learned[1] > table["similarity to seed papers"][1]),
            ("three rounds of feedback improve the learned ranking (nDCG@10)",
             feedback[1] > learned[1]),
            ("three rounds of feedback improve the issue in mode 'like' (nDCG@10)",
             table["mode: filters plus papers like mine" + FEEDBACK][1]
             > table["mode: filters plus papers like mine"][1]),
        ]
        for name, passed in checks:
            print(f"  {'ok  ' if passed else 'FAIL'} {name}")
            ok = ok and passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
