"""`make eval`: matching quality on the hand-labelled set in tests/eval/.

For each of the profiles, runs the real matcher over all papers and compares with the
labels. Authors: precision and recall of the papers matched through author filters.
Topics (topic and category filters): precision at 10 over the ranked topic matches
(relevant among the top min(10, matched) results), and recall.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from newsletter.match import match_subscriber  # noqa: E402
from newsletter.models import Paper, Subscriber  # noqa: E402
from newsletter.pipeline import index_papers  # noqa: E402

EVAL = Path(__file__).resolve().parent.parent / "tests" / "eval"


def load() -> tuple[list[Paper], list[dict], dict]:
    papers = [
        Paper(id=d["id"], source=d.get("source", "arxiv"), title=d["title"],
              authors=tuple(d["authors"]), abstract=d.get("abstract", ""),
              url="", published=datetime.fromisoformat(d["published"]).replace(tzinfo=UTC),
              categories=tuple(d.get("categories") or ()))
        for d in json.loads((EVAL / "papers.json").read_text())
    ]
    profiles = json.loads((EVAL / "profiles.json").read_text())
    labels = json.loads((EVAL / "labels.json").read_text())
    return papers, profiles, labels


def evaluate(verbose: bool = False, pinned: bool = False) -> dict[str, float]:
    papers, profiles, labels = load()
    index = index_papers(papers)
    a_tp = a_fp = a_fn = 0
    t_hits = t_den = t_tp = t_rel = 0
    rows = []
    for prof in profiles:
        authors = prof.get("authors_pinned" if pinned and "authors_pinned" in prof
                           else "authors", [])
        sub = Subscriber(prof["name"] + "@eval.example", authors=tuple(authors),
                         topics=tuple(prof.get("topics", [])),
                         categories=tuple(prof.get("categories", [])),
                         exclude=tuple(prof.get("exclude", [])))
        matches = match_subscriber(sub, index)
        want = labels.get(prof["name"], {})
        if sub.authors:
            got = {m.paper.id for m in matches if any(r.startswith("author:")
                                                      for r in m.reasons)}
            rel = set(want.get("author", []))
            a_tp += len(got & rel)
            a_fp += len(got - rel)
            a_fn += len(rel - got)
            if verbose and (got - rel or rel - got):
                rows.append(f"  {prof['name']} authors: false+ {sorted(got - rel)} "
                            f"missed {sorted(rel - got)}")
        if sub.topics or sub.categories:
            ranked = [m.paper.id for m in matches
                      if any(r.startswith(("topic:", "category:")) for r in m.reasons)]
            ranked = [pid for pid in ranked]  # already best first
            rel = set(want.get("topic", []))
            top = ranked[:10]
            t_hits += len(set(top) & rel)
            t_den += len(top)
            t_tp += len(set(ranked) & rel)
            t_rel += len(rel)
            if verbose:
                wrong = [pid for pid in top if pid not in rel]
                missed = sorted(rel - set(ranked))
                if wrong or missed:
                    rows.append(f"  {prof['name']} topics: wrong in top 10 {wrong} "
                                f"missed {missed}")
    result = {
        "author_precision": a_tp / max(1, a_tp + a_fp),
        "author_recall": a_tp / max(1, a_tp + a_fn),
        "topic_precision_at_10": t_hits / max(1, t_den),
        "topic_recall": t_tp / max(1, t_rel),
    }
    for row in rows:
        print(row)
    return result


# Every target printed is asserted (make eval exits 1 when one is missed), and every target
# asserted is printed. Author precision with names as given has no target: two people who
# share a full name cannot be told apart from the name alone; pinned by a co-author
# ("; with: ..."), they are, and that is where the precision target is.
TARGETS = (  # (what, which run, metric, at least)
    ("authors, names as given: recall", "as_given", "author_recall", 0.98),
    ("authors, namesakes pinned by co-author: precision", "pinned", "author_precision", 0.99),
    ("authors, namesakes pinned by co-author: recall", "pinned", "author_recall", 0.98),
    ("topics: precision@10", "as_given", "topic_precision_at_10", 0.90),
)
REPORTED = (  # printed as figures, no target
    ("authors, names as given: precision", "as_given", "author_precision"),
    ("topics: recall", "as_given", "topic_recall"),
)


def missed(runs: dict[str, dict[str, float]]) -> list[str]:
    """The targets the runs do not meet, one line each."""
    return [f"{what} {runs[run][key]:.3f} < {least}" for what, run, key, least in TARGETS
            if runs[run][key] < least]


def main() -> None:
    verbose = "-v" in sys.argv
    papers, profiles, _ = load()
    runs = {"as_given": evaluate(verbose), "pinned": evaluate(pinned=True)}
    if "--json" in sys.argv:
        print(json.dumps({"papers": len(papers), "profiles": len(profiles), **runs,
                          "targets": [list(t) for t in TARGETS], "missed": missed(runs)}))
        return
    print(f"Labelled set: {len(papers)} papers, {len(profiles)} profiles")
    for what, run, key, least in TARGETS:
        ok = "ok" if runs[run][key] >= least else "MISSED"
        print(f"{what:<52} {runs[run][key]:.3f}  (target >= {least:.2f}: {ok})")
    for what, run, key in REPORTED:
        print(f"{what:<52} {runs[run][key]:.3f}  (no target)")
    if missed(runs):
        sys.exit("missed: " + "; ".join(missed(runs)))


if __name__ == "__main__":
    main()
