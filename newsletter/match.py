"""Which papers belong in a subscriber's issue, in what order, and why.

Authors match on folded names (case, diacritics, hyphens, "Family, Given" order, middle names).
Topics are small queries: words, "quoted phrases", AND / OR / NOT, parentheses and prefix
wildcards (``transform*``), looked up in SQLite's FTS5 index over title and abstract (bm25
relevance), each distinct term once per run, so a thousand subscribers sharing topics cost
one lookup per topic.
"""

from __future__ import annotations

import re
from array import array
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from itertools import islice
from typing import Any

from newsletter.errors import InvalidFilter
from newsletter.models import Match, Paper, Subscriber
from newsletter.text import fold

# --- text and names ----------------------------------------------------------------------

_WORD = re.compile(r"\w+", re.UNICODE)


def name_key(name: str) -> tuple[str, ...]:
    """Tokens of a personal name in Given ... Family order, folded.

    Handles "Lu, Taiming", "LU Taiming" (family name in capitals first), hyphens, dots.
    """
    name = re.sub(r"<[^>]+>", " ", name).strip()
    if "," in name:
        family, _, given = name.partition(",")
        name = f"{given} {family}"
    raw = [t for t in re.split(r"[\s\-.]+", name) if t]
    if len(raw) >= 2 and len(raw[0]) > 1 and raw[0].isupper() and not raw[1].isupper():
        raw = raw[1:] + raw[:1]  # "LU Taiming": the family name in capitals comes first
    elif len(raw) >= 2 and len(raw[0]) > 1 and all(len(t) == 1 for t in raw[1:]):
        raw = raw[1:] + raw[:1]  # "Lu T." / "Lu TM": family name, then initials
    return tuple(fold(t) for t in raw if t)


def same_author(followed: Sequence[str], candidate: Sequence[str]) -> bool:
    """Strict match: same given name and same family name; middle names may differ or be
    missing on either side, but a middle initial present on both sides must agree."""
    if len(followed) < 2 or len(candidate) < 2:
        return tuple(followed) == tuple(candidate)
    if followed[0] != candidate[0] or followed[-1] != candidate[-1]:
        # "van der Maaten": the family name may span several tokens
        return False
    fm, cm = followed[1:-1], candidate[1:-1]
    for a, b in zip(fm, cm, strict=False):
        if a[0] != b[0]:
            return False
    return True


@dataclass(frozen=True)
class AuthorFilter:
    """A followed author: ``"Taiming Lu"``, with options after semicolons:
    ``"Taiming Lu; initials"`` also accepts "T. Lu" / "Lu T."; ``"Yang Liu; with: Maosong
    Sun, Yong Cheng"`` accepts a paper only if one of those co-authors is on it too, which
    tells apart people who share a full name."""

    name: str
    key: tuple[str, ...]
    initials: bool = False
    with_: tuple[tuple[str, ...], ...] = ()


def parse_author(value: str) -> AuthorFilter:
    name, *options = [part.strip() for part in value.split(";")]
    initials = False
    with_: tuple[tuple[str, ...], ...] = ()
    for opt in options:
        head, _, rest = opt.partition(":")
        head = head.strip().lower()
        if head == "initials" and not rest:
            initials = True
        elif head == "with" and rest.strip():
            with_ = tuple(name_key(n) for n in rest.split(",") if n.strip())
        else:
            raise InvalidFilter(f"author {value!r}: unknown option {opt!r} - use "
                                "'; initials' or '; with: Co Author, Other Author'")
    key = name_key(name)
    if len(key) < 2:
        raise InvalidFilter(f"author {name!r}: give a full name such as \"Taiming Lu\"")
    return AuthorFilter(name, key, initials, with_)


def initials_match(followed: Sequence[str], candidate: Sequence[str]) -> bool:
    """"T. Lu" / "Lu T." / "T. A. Lu" for "Taiming Lu": family names equal, and the
    candidate's given names are initials agreeing with the followed ones."""
    if len(candidate) < 2 or followed[-1] != candidate[-1]:
        return False
    given = candidate[:-1]
    return (all(len(g) == 1 for g in given) and given[0] == followed[0][0])


def author_verdict(af: AuthorFilter, keys: Sequence[tuple[str, ...]]
                   ) -> tuple[int | None, str | None]:
    """(index of the matching author, None) or (None, why a near miss was rejected)."""
    near: str | None = None
    for i, k in enumerate(keys):
        strict = same_author(af.key, k)
        loose = not strict and initials_match(af.key, k)
        if not strict and not loose:
            if (len(k) >= 2 and k[-1] == af.key[-1] and k[0][:1] == af.key[0][:1]
                    and near is None):
                near = f"{' '.join(k)}: same family name and initial, different given name"
            continue
        if loose and not af.initials:
            near = near or f"{' '.join(k)}: initials only (add '; initials' to accept)"
            continue
        if af.with_ and not any(same_author(c, other) for c in af.with_
                                for j, other in enumerate(keys) if j != i):
            near = near or f"{' '.join(k)}: none of the pinned co-authors is on the paper"
            continue
        return i, None
    return None, near


# --- topic queries -----------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One word or a phrase, folded, as FTS5 and the arXiv API are asked for it."""

    text: str
    prefix: bool = False


@dataclass(frozen=True)
class Op:
    op: str  # AND, OR, NOT
    args: tuple[Node, ...]


Node = Term | Op

_TOKEN = re.compile(r'\s*(?:(?P<lp>\()|(?P<rp>\))|"(?P<phrase>[^"]*)"|(?P<word>[^\s()"]+))')


def compile_query(text: str) -> Node:
    """Parse a topic filter. A plain multi-word filter without operators is a phrase.

    Raises InvalidFilter naming the position of the mistake.
    """
    stripped = text.strip()
    if not stripped:
        raise InvalidFilter("empty topic filter - give a word, a \"phrase\" or a query")
    if len(stripped) > MAX_QUERY_CHARS:
        raise InvalidFilter(f"topic filter of {len(stripped)} characters is too long - keep "
                            f"it under {MAX_QUERY_CHARS} (split it into several topics)")
    if not re.search(r'["()]|\b(AND|OR|NOT)\b|\*', stripped):
        words = _WORD.findall(fold(stripped))
        if not words:
            raise InvalidFilter(f"topic {text!r} has no words to match")
        return Term(" ".join(words))
    items: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise InvalidFilter(f"topic {text!r}: unclosed quote at position {pos + 1}")
        kind = m.lastgroup or ""
        start = m.start(kind)
        items.append((kind, m.group(kind), start))
        pos = m.end()
    parser = _Parser(text, items)
    node = parser.parse_or()
    if parser.i < len(items):
        raise InvalidFilter(f"topic {text!r}: unexpected {items[parser.i][1]!r} at position "
                            f"{items[parser.i][2] + 1}")
    return node


MAX_QUERY_CHARS = 1000
MAX_QUERY_DEPTH = 20  # nested parentheses


class _Parser:
    def __init__(self, text: str, items: list[tuple[str, str, int]]):
        self.text, self.items, self.i = text, items, 0
        self.depth = 0

    def _peek(self) -> tuple[str, str, int] | None:
        return self.items[self.i] if self.i < len(self.items) else None

    def _fail(self, what: str) -> InvalidFilter:
        item = self._peek()
        where = item[2] + 1 if item else len(self.text) + 1
        return InvalidFilter(f"topic {self.text!r}: {what} at position {where}")

    def parse_or(self) -> Node:
        args = [self.parse_and()]
        while (item := self._peek()) and item[0] == "word" and item[1] == "OR":
            self.i += 1
            args.append(self.parse_and())
        return args[0] if len(args) == 1 else Op("OR", tuple(args))

    def parse_and(self) -> Node:
        args = [self.parse_not()]
        while (item := self._peek()) and not (item[0] == "rp" or item[1] == "OR"):
            if item[0] == "word" and item[1] == "AND":
                self.i += 1
            args.append(self.parse_not())
        return args[0] if len(args) == 1 else Op("AND", tuple(args))

    def parse_not(self) -> Node:
        nots = 0  # counted, not recursed: "NOT NOT x" is x, however many there are
        while (item := self._peek()) and item[0] == "word" and item[1] == "NOT":
            self.i += 1
            nots += 1
        atom = self.parse_atom()
        return Op("NOT", (atom,)) if nots % 2 else atom

    def parse_atom(self) -> Node:
        item = self._peek()
        if item is None:
            raise self._fail("a word is missing")
        kind, value, _ = item
        if kind == "lp":
            self.depth += 1
            if self.depth > MAX_QUERY_DEPTH:
                raise self._fail(f"more than {MAX_QUERY_DEPTH} nested parentheses")
            self.i += 1
            node = self.parse_or()
            self.depth -= 1
            if not (close := self._peek()) or close[0] != "rp":
                raise self._fail("missing ')'")
            self.i += 1
            return node
        if kind == "rp" or (kind == "word" and value in ("AND", "OR")):
            raise self._fail(f"unexpected {value!r}")
        self.i += 1
        prefix = value.endswith("*")
        raw = tuple(_WORD.findall(fold(value.rstrip("*"))))
        if not raw:
            raise InvalidFilter(f"topic {self.text!r}: nothing to match at position {item[2] + 1}")
        return Term(" ".join(raw), prefix=prefix)


# --- the index ---------------------------------------------------------------------------


Search = Callable[[str], dict[str, float]]


def fts5_expression(term: Term) -> str:
    """One query term as an FTS5 expression: a quoted phrase (FTS5 tokens are whole words,
    so "RAG" never matches "paragraph"), with ``*`` for a prefix."""
    return '"' + term.text.replace('"', " ") + '"' + (" *" if term.prefix else "")


Verdict = tuple[int, int | None, str | None]  # (paper, matching author's index, near miss)
RANKED_CACHE = 512  # filter sets whose ranking a run keeps (Index.ranked)
AUTHORS_KEPT = 8192  # followed authors whose verdicts a run keeps
TOPICS_KEPT = 1024  # topic queries (and terms) whose hits a run keeps


class _Kept(dict[Any, Any]):
    """A run's cache of answers (per distinct filter, or per reader's window), forgetting
    its oldest quarter when full: 100,000 readers may follow 300,000 different people, and
    a run must not keep an answer for each."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def __setitem__(self, key: Any, value: Any) -> None:
        if key not in self and len(self) >= self.size:
            for old in list(islice(self, max(1, self.size // 4))):
                del self[old]
        super().__setitem__(key, value)


@dataclass(frozen=True)
class Ranked:
    """The papers a set of filters matches: ``order`` (positions, best first), their
    ``scores`` (in the same order), the followed authors each matched as (filter, name on
    the paper), and the near misses strict author matching turned away. Arrays: a run
    keeps hundreds of these (3 KB each, not 19 KB as lists and a dict)."""

    order: array[int]
    scores: array[float]
    by_author: dict[int, list[tuple[str, str]]]
    near_misses: list[tuple[Paper, str]]


class Index:
    """The run's papers, indexed by author family name and category; topic terms are looked
    up in SQLite's FTS5 index over title and abstract (``search``: an FTS5 expression ->
    {paper id: bm25 relevance}), once per distinct term per run."""

    def __init__(self, papers: Sequence[Paper], search: Search,
                 first_seen: Sequence[datetime] | None = None):
        self.papers = list(papers)
        self._search = search
        self.first_seen = list(first_seen) if first_seen is not None else None
        self.author_keys: list[list[tuple[str, ...]]] = []
        self.by_family: dict[str, set[int]] = defaultdict(set)
        self.by_category: dict[str, set[int]] = defaultdict(set)
        for n, p in enumerate(self.papers):
            for c in p.categories:
                self.by_category[c.lower()].add(n)
            keys = [name_key(a) for a in p.authors]
            self.author_keys.append(keys)
            for k in keys:
                if k:
                    self.by_family[k[-1]].add(n)
        self.all = set(range(len(self.papers)))
        self.position = {p.id: n for n, p in enumerate(self.papers)}
        self.timestamps = [p.published.timestamp() for p in self.papers]
        self._categories: dict[str, set[int]] = _Kept(TOPICS_KEPT)
        self._hits: dict[Term, dict[int, float]] = _Kept(TOPICS_KEPT)
        self._queries: dict[str, Node] = _Kept(TOPICS_KEPT)
        self._searches: dict[str, dict[int, float]] = _Kept(TOPICS_KEPT)
        # subscribers last served by the same run share one answer
        self._seen: dict[datetime, frozenset[str]] = _Kept(64)
        self._authors: dict[str, tuple[AuthorFilter, list[Verdict]]] = _Kept(AUTHORS_KEPT)
        self._ranked: OrderedDict[tuple[tuple[str, ...], ...], Ranked] = OrderedDict()
        self.learned: Any = None  # the run's learned-ranking features, built on first use

    def author_verdicts(self, followed: str) -> tuple[AuthorFilter, list[Verdict]]:
        """A followed author's filter and (paper, matching author's index or None, why a
        near miss was rejected) for each paper with that family name (cached per run: a
        lab's members follow the same people)."""
        found = self._authors.get(followed)
        if found is None:
            af = parse_author(followed)
            found = self._authors[followed] = (af, [
                (n, *author_verdict(af, self.author_keys[n]))
                for n in self.candidates_by_family(af.key[-1])])
        return found

    def ranked(self, authors: tuple[str, ...], topics: tuple[str, ...],
               categories: tuple[str, ...]) -> Ranked:
        """What a set of filters matches, best first, before any reader's exclusions
        (cached per run, the most recent RANKED_CACHE sets: a lab's members share theirs)."""
        key = (authors, topics, categories)
        found = self._ranked.get(key)
        if found is not None:
            self._ranked.move_to_end(key)
            return found
        scores: dict[int, float] = defaultdict(float)
        by_author: dict[int, list[tuple[str, str]]] = defaultdict(list)
        near_misses: list[tuple[Paper, str]] = []
        for followed in authors:
            af, verdicts = self.author_verdicts(followed)
            for n, hit, near in verdicts:
                if hit is not None:
                    scores[n] += 1000.0
                    by_author[n].append((af.name, self.papers[n].authors[hit]))
                elif near:
                    near_misses.append((self.papers[n], f"author {af.name} rejected: {near}"))
        for topic in topics:
            for n, score in self.search(topic).items():
                scores[n] += 1.0 + score
        for pattern in categories:
            for n in self.in_category(pattern):
                scores[n] += 0.5
        ts, papers = self.timestamps, self.papers
        # (best score, newest, id): tuples compare in C, cheaper than a key function
        order = sorted((-round(score, 4), -ts[n], papers[n].id, n)
                       for n, score in scores.items())
        found = self._ranked[key] = Ranked(array("i", [k[-1] for k in order]),
                                           array("d", [scores[k[-1]] for k in order]),
                                           dict(by_author), near_misses)
        while len(self._ranked) > RANKED_CACHE:
            self._ranked.popitem(last=False)
        return found

    def search(self, text: str) -> dict[int, float]:
        """Papers matching a topic query, with their relevance (cached per run)."""
        found = self._searches.get(text)
        if found is None:
            node = self.compiled(text)
            found = self._searches[text] = {n: self.score(node, n)
                                            for n in self.evaluate(node)}
        return found

    def compiled(self, text: str) -> Node:
        """compile_query, cached: a lab's subscribers share many topics."""
        node = self._queries.get(text)
        if node is None:
            node = self._queries[text] = compile_query(text)
        return node

    def in_category(self, pattern: str) -> set[int]:
        """Papers with a category matching ``cs.CL``, ``cs.*`` or ``q-bio.NC``."""
        pattern = pattern.lower()
        if not any(ch in pattern for ch in "*?["):
            return self.by_category.get(pattern, set())
        found = self._categories.get(pattern)
        if found is None:
            found = self._categories[pattern] = set()
            for cat, papers in self.by_category.items():
                if fnmatchcase(cat, pattern):
                    found |= papers
        return found

    def seen_before(self, since: datetime) -> frozenset[str]:
        """Ids of indexed papers first seen before ``since`` (outside a later window)."""
        if self.first_seen is None:
            return frozenset()
        found = self._seen.get(since)
        if found is None:
            found = self._seen[since] = frozenset(
                p.id for p, seen in zip(self.papers, self.first_seen, strict=True)
                if seen < since)
        return found

    def candidates_by_family(self, family: str) -> list[int]:
        return sorted(self.by_family.get(family, ()))

    def term_hits(self, term: Term) -> dict[int, float]:
        """Indexed papers containing the term, with FTS5's bm25 for it (cached per run)."""
        cached = self._hits.get(term)
        if cached is None:
            found = self._search(fts5_expression(term))
            cached = self._hits[term] = {self.position[pid]: score
                                         for pid, score in found.items()
                                         if pid in self.position}
        return cached

    def evaluate(self, node: Node) -> set[int]:
        """AND / OR / NOT as set algebra over the terms' hits (FTS5 has no unary NOT)."""
        if isinstance(node, Term):
            return set(self.term_hits(node))
        if node.op == "NOT":
            return self.all - self.evaluate(node.args[0])
        sets = [self.evaluate(a) for a in node.args]
        if node.op == "AND":
            return set.intersection(*sets)
        return set.union(*sets)

    def score(self, node: Node, n: int) -> float:
        """Relevance of paper n: the sum of bm25 over the query's positive terms."""
        return sum(self.term_hits(t).get(n, 0.0) for t in positive_terms(node))


def positive_terms(node: Node) -> Iterable[Term]:
    if isinstance(node, Term):
        yield node
    elif node.op != "NOT":
        for a in node.args:
            yield from positive_terms(a)


# --- matching a subscriber ---------------------------------------------------------------


def validate_filters(sub: Subscriber) -> None:
    """Refuse a filter that cannot compile, at add/edit time, not at send time."""
    for topic in sub.topics:
        compile_query(topic)
    for ex in sub.exclude:
        if not ex.lower().startswith("author:"):
            compile_query(ex)
    for author in sub.authors:
        parse_author(author)


def match_subscriber(sub: Subscriber, index: Index,
                     already_sent: set[str] | frozenset[str] = frozenset(),
                     rejected: list[tuple[Paper, str]] | None = None) -> list[Match]:
    """All papers in the index for this subscriber, best first. Pass a list as
    ``rejected`` to collect the near misses strict author matching turned away."""
    return rank(sub, index, already_sent, None, rejected)[0]


def _excluded(sub: Subscriber, index: Index, already_sent: set[str] | frozenset[str]
              ) -> set[int]:
    """Positions of the papers already sent and of those the subscriber's excludes name."""
    position = index.position
    excluded: set[int] = ({position[pid] for pid in already_sent if pid in position}
                          if len(already_sent) < len(position)
                          else {n for pid, n in position.items() if pid in already_sent})
    for ex in sub.exclude:
        if ex.lower().startswith("author:"):
            key = name_key(ex.split(":", 1)[1])
            excluded.update(n for n in index.candidates_by_family(key[-1] if key else "")
                            if any(same_author(key, k) for k in index.author_keys[n]))
        else:
            excluded.update(index.evaluate(index.compiled(ex)))
    return excluded


def rank(sub: Subscriber, index: Index, already_sent: set[str] | frozenset[str] = frozenset(),
         limit: int | None = None, rejected: list[tuple[Paper, str]] | None = None
         ) -> tuple[list[Match], int]:
    """(the best ``limit`` matches, how many papers matched in all).

    Scores are summed per paper first; Match objects (with the reasons) are built only for
    the papers returned, so a broad category subscription stays cheap.
    Followed authors count 1000, a topic 1 + its BM25 relevance, a category 0.5; ties go to
    the newer paper.
    """
    ranked = index.ranked(sub.authors, sub.topics, sub.categories)
    by_author = ranked.by_author
    if rejected is not None:
        rejected.extend(ranked.near_misses)
    excluded = _excluded(sub, index, already_sent)
    places = range(len(ranked.order))
    if excluded:
        wanted = (i for i in places if ranked.order[i] not in excluded)
        top = list(islice(wanted, limit)) if limit is not None else list(wanted)
        count = len(ranked.order) - len(excluded.intersection(ranked.order))
    else:
        top = list(places[:limit] if limit is not None else places)
        count = len(ranked.order)
    matches = []
    for i in top:
        n = ranked.order[i]
        reasons = [f"author: {name}" for name, _ in by_author.get(n, ())]
        reasons += [f"topic: {t}" for t in sub.topics if n in index.search(t)]
        reasons += [f"category: {c}" for c in sub.categories if n in index.in_category(c)]
        matches.append(Match(paper=index.papers[n], score=round(ranked.scores[i], 4),
                             reasons=tuple(reasons),
                             followed_authors=tuple(w for _, w in by_author.get(n, ()))))
    return matches, count
