"""The bundled sample corpus: real papers shipped with the package, no network needed."""

from __future__ import annotations

import json
from datetime import datetime
from importlib import resources
from typing import Any

from newsletter.models import Paper, SourceResult


def paper_from_dict(d: dict[str, Any]) -> Paper:
    return Paper(
        id=d["id"],
        source=d["source"],
        venue=d.get("venue"),
        title=d["title"],
        authors=tuple(d["authors"]),
        abstract=d.get("abstract") or "",
        url=d.get("url") or "",
        pdf_url=d.get("pdf_url"),
        doi=d.get("doi"),
        categories=tuple(d.get("categories") or ()),
        published=datetime.fromisoformat(d["published"].replace("Z", "+00:00")),
        code_url=d.get("code_url"),
    )


def load_papers() -> list[Paper]:
    text = resources.files("newsletter").joinpath("data/sample/papers.json").read_text("utf-8")
    return [paper_from_dict(d) for d in json.loads(text)]


def load_subscribers() -> list[dict[str, Any]]:
    text = resources.files("newsletter").joinpath("data/sample/subscribers.json").read_text(
        "utf-8")
    data: list[dict[str, Any]] = json.loads(text)
    return data


def fetch() -> SourceResult:
    return SourceResult(name="sample", papers=tuple(load_papers()))
