"""Plain data passed between pipeline stages. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

# The vocabulary every stage shares: one list of each, used by the CLI's choices, the
# list management's checks, the store and the schedule.
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # date.weekday() order
FREQUENCIES = ("daily", "weekdays", "weekly")
STATUSES = ("active", "paused", "pending", "unsubscribed", "bounced")  # a subscriber's
DELIVERY_STATUSES = ("pending", "sending", "sent", "deferred", "failed")  # a delivery's


@dataclass(frozen=True)
class Paper:
    id: str
    source: str
    title: str
    authors: tuple[str, ...]
    abstract: str
    url: str
    published: datetime
    pdf_url: str | None = None
    doi: str | None = None
    categories: tuple[str, ...] = ()
    venue: str | None = None
    code_url: str | None = None
    updated: datetime | None = None

    @property
    def badge(self) -> str:
        """The source badge shown on a paper card, e.g. ``arXiv (cs.CL)`` or ``Nature``."""
        if self.source == "arxiv":
            return f"arXiv ({self.categories[0]})" if self.categories else "arXiv"
        return self.venue or self.source

    @property
    def field(self) -> str:
        """A coarse field name, used to group papers in the extractive digest."""
        if self.categories:
            return self.categories[0].split(".")[0]
        return self.venue or self.source


@dataclass(frozen=True)
class Subscriber:
    email: str
    name: str = ""
    language: str = "en"
    timezone: str = "UTC"
    send_hour: int = 7
    frequency: str = "daily"
    max_papers: int = 10
    status: str = "active"
    authors: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    weekday: str | None = None  # mon..sun when frequency is "weekly"
    confirmed_at: datetime | None = None  # when they confirmed (double opt-in), if they did
    link_generation: int = 0  # in their page links; raised to revoke the links handed out
    likes: tuple[str, ...] = ()  # seed papers ("papers like mine"): arXiv ids, doi:... keys
    ranking: str = "auto"  # filters, reorder, like; auto = reorder once there are signals
    like_cap: int = 3  # in "like" mode, how many papers the filters missed may be added


@dataclass(frozen=True)
class Match:
    """One paper in one subscriber's issue, with why it is there."""

    paper: Paper
    score: float
    reasons: tuple[str, ...]
    followed_authors: tuple[str, ...] = ()
    learned: float | None = None  # the learned ranking's score, when one was used
    like: str | None = None  # title of the seed paper this one is most like (learned ranking)


@dataclass(frozen=True)
class Theme:
    """One claim of a brief (a theme, or with an empty title a cross-field connection): the
    papers it cites and, for a model's claim, one checked verbatim quote per cited paper."""

    title: str
    text: str
    cites: tuple[int, ...] = ()
    quotes: tuple[str, ...] = ()  # quotes[i] is from the abstract of paper cites[i]


@dataclass(frozen=True)
class Brief:
    kind: str  # "llm" or "extractive"
    headline: str
    themes: tuple[Theme, ...]
    connections: tuple[Theme, ...]  # cross-field connections, each with its evidence
    # per paper: the opening sentence (extractive digest) or the model's note ("" if none)
    per_paper: tuple[str, ...]
    model: str | None = None
    note: str = ""  # why a fallback was used, if it was: for the operator, never the reader
    dropped: int = 0  # claims the model made whose quotes were missing or not found


@dataclass(frozen=True)
class Issue:
    subscriber: Subscriber
    issue_date: date
    matches: tuple[Match, ...]
    more: tuple[Match, ...] = ()
    brief: Brief | None = None

    @property
    def paper_ids(self) -> tuple[str, ...]:
        return tuple(m.paper.id for m in self.matches + self.more)


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str
    mjml: str
    preheader: str


@dataclass(frozen=True)
class SourceResult:
    name: str
    papers: tuple[Paper, ...] = ()
    requests: int = 0
    error: str | None = None  # why the source (or part of it) failed
    not_modified: bool = False
    partial: bool = False  # some requests failed, the papers of the others are here
    note: str | None = None  # e.g. a quiet day, a salvaged malformed feed
    state: dict[str, str | None] = field(default_factory=dict)
