"""`make demo`: a throw-away database from the bundled sample, then the morning job."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from newsletter import pipeline, store
from newsletter.config import Settings
from newsletter.lists import roster
from newsletter.sources import sample


def run(settings: Settings, db_path: str, outbox: str, now: datetime) -> list[str]:
    for suffix in ("", "-wal", "-shm"):
        Path(db_path + suffix).unlink(missing_ok=True)
    shutil.rmtree(outbox, ignore_errors=True)
    settings = replace(settings, db=db_path, outbox=outbox, sources="sample", smtp_url="")
    db = store.open_db(db_path)
    for row in sample.load_subscribers():
        roster.add(db, **row)
    report = pipeline.run(db, settings, now, send_all=True)
    lines = [f"Fetched {f.new} sample papers" for f in report.fetched]
    for line in report.lines:
        html = line.detail.removesuffix(".eml") + ".html" if line.status == "sent" else ""
        lines.append(f"{line.email:<28} {line.papers:>3} papers  {line.detail}"
                     + (f"  {html}" if html else "") if line.status == "sent"
                     else f"{line.email:<28} {line.status}: {line.detail}")
    return lines
