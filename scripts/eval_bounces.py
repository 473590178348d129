"""Agreement of lists/bounces.py with the outcomes real mail systems' test suites state.

Reads the corpus IN PLACE (other parties' data, never copied into this repository):
``$NEWSLETTER_BOUNCE_CORPUS`` or ``shared/eval/bounces`` beside the checkout (363 messages,
MANIFEST.json).

    python scripts/eval_bounces.py            # agreement per kind
    python scripts/eval_bounces.py --table    # plus one line per message: file, kind, outcome

What "agree" means, per source (the sources state different things):
- sisimai: per recipient a reason and a hard/soft flag. Expected outcome: complaint
  (reason feedback), ignore (vacation, delivered), hard (hard_bounce), else soft. Agree when
  the parser's outcome is the same for the message (hard wins over soft when recipients mix).
- mailman2: the addresses Mailman must register as permanent bounces. Agree when the parser
  finds exactly those addresses failed (hard or soft); for a message Mailman treats as a
  delay warning or where it finds no address, agree when the parser registers no hard bounce.
- listmonk: no stated outcome (counted as "no expectation").

Exit status 1 when a kind's agreement is below its floor (FLOORS), or when the corpus is
missing (unless --allow-missing: CI machines do not have it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.lists import bounces  # noqa: E402

# The agreement each kind must keep (measured, rounded down; issue 14's closing note explains
# each disagreement). `make eval` and tests/test_bounces.py fail below these.
FLOORS = {"DSN": 0.82, "ARF": 1.0, "non-standard": 0.83, "auto-reply": 1.0}

KIND_GROUP = {"dsn": "DSN", "dsn-global": "DSN", "arf": "ARF", "non-standard": "non-standard",
              "auto-reply": "auto-reply", "other": "other"}


def corpus_dir() -> Path:
    """$NEWSLETTER_BOUNCE_CORPUS, else ``shared/eval/bounces`` beside the checkout or beside
    any folder above it (a worktree sits deeper than the main checkout)."""
    env = os.environ.get("NEWSLETTER_BOUNCE_CORPUS")
    if env:
        return Path(env)
    for parent in ROOT.parents:
        candidate = parent / "shared" / "eval" / "bounces"
        if (candidate / "MANIFEST.json").exists():
            return candidate
    return ROOT.parent / "shared" / "eval" / "bounces"


def expected_outcome(entry: dict[str, Any]) -> str | None:
    exp = entry.get("expected")
    if not exp:
        return None
    if entry["source"] == "sisimai":
        if exp.get("complaint"):
            return "complaint"
        reasons = [r["reason"] for r in exp["recipients"]]
        if all(r in ("vacation", "delivered") for r in reasons):
            return "ignore"
        return "hard" if any(r["hard_bounce"] for r in exp["recipients"]) else "soft"
    if exp.get("bounced_addresses"):
        return "bounced " + ",".join(sorted(a.lower() for a in exp["bounced_addresses"]))
    return "no hard bounce"


def agrees(expected: str, report: bounces.Report) -> bool:
    if expected.startswith("bounced "):
        found = sorted({f.address for f in report.failures})
        return expected == "bounced " + ",".join(found)
    if expected == "no hard bounce":
        return report.outcome != "hard"
    return report.outcome == expected


def evaluate(folder: Path) -> list[dict[str, Any]]:
    manifest = json.loads((folder / "MANIFEST.json").read_text(encoding="utf-8"))
    rows = []
    for entry in manifest["messages"]:
        report = bounces.parse_bytes((folder / entry["file"]).read_bytes())
        expected = expected_outcome(entry)
        failed = ",".join(f"{f.address}({'hard' if f.hard else 'soft'} {f.status})"
                          for f in report.failures)
        rows.append({
            "file": entry["file"], "kind": entry["kind"], "group": KIND_GROUP[entry["kind"]],
            "parsed_kind": report.kind, "outcome": report.outcome, "expected": expected,
            "agree": None if expected is None else agrees(expected, report),
            "failed": failed, "complaints": ",".join(report.complaints),
        })
    return rows


def table(rows: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    per: dict[str, Counter[str]] = {}
    for r in rows:
        c = per.setdefault(r["group"], Counter())
        c["messages"] += 1
        if r["agree"] is None:
            c["no expectation"] += 1
        else:
            c["agree" if r["agree"] else "disagree"] += 1
    return per


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--table", action="store_true", help="one line per message")
    ap.add_argument("--disagreements", action="store_true", help="only the disagreements")
    ap.add_argument("--allow-missing", action="store_true")
    args = ap.parse_args()
    folder = corpus_dir()
    if not (folder / "MANIFEST.json").exists():
        print(f"bounce corpus not found at {folder} (set NEWSLETTER_BOUNCE_CORPUS)")
        return 0 if args.allow_missing else 1
    rows = evaluate(folder)
    if args.table or args.disagreements:
        print("| message | kind | outcome | stated | agree |")
        print("|---|---|---|---|---|")
        for r in rows:
            if args.disagreements and r["agree"] is not False:
                continue
            mark = {None: "-", True: "yes", False: "NO"}[r["agree"]]
            detail = r["failed"] or r["complaints"]
            print(f"| {r['file'].removeprefix('raw/')} | {r['kind']} | {r['outcome']}"
                  f"{' ' + detail if detail else ''} | {r['expected'] or '-'} | {mark} |")
        print()
    print("| kind | messages | with stated outcome | agree | disagree | agreement |")
    print("|---|---|---|---|---|---|")
    total: Counter[str] = Counter()
    for group in ("DSN", "ARF", "non-standard", "auto-reply", "other"):
        c = table(rows).get(group, Counter())
        total.update(c)
        stated = c["agree"] + c["disagree"]
        share = f"{100 * c['agree'] / stated:.1f}%" if stated else "-"
        print(f"| {group} | {c['messages']} | {stated} | {c['agree']} | {c['disagree']} | "
              f"{share} |")
    stated = total["agree"] + total["disagree"]
    print(f"| all | {total['messages']} | {stated} | {total['agree']} | {total['disagree']} | "
          f"{100 * total['agree'] / stated:.1f}% |")
    low = below_floors(rows)
    for group, share in low:
        print(f"agreement for {group} is {share:.1%}, below its floor of {FLOORS[group]:.0%}")
    return 1 if low else 0


def below_floors(rows: list[dict[str, Any]]) -> list[tuple[str, float]]:
    low = []
    for group, floor in FLOORS.items():
        stated = [r for r in rows if r["group"] == group and r["agree"] is not None]
        share = sum(r["agree"] for r in stated) / len(stated) if stated else 0.0
        if share < floor:
            low.append((group, share))
    return low


if __name__ == "__main__":
    sys.exit(main())
