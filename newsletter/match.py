"""Which papers belong in a subscriber's issue, in what order, and why.

Authors match on folded names (case, diacritics, hyphens, "Family, Given" order, middle names).
Topics are small queries: words, "quoted phrases", AND / OR / NOT, parentheses and prefix
wildcards (``transform*``), matched on word boundaries over title and abstract through an
inverted index built once per run, so a thousand subscribers cost one pass over the papers.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from newsletter.errors import InvalidFilter
from newsletter.models import Match, Paper, Subscriber

# --- text and names ----------------------------------------------------------------------

_WORD = re.compile(r"\w+", re.UNICODE)


def fold(text: str) -> str:
    """Lower-case and strip diacritics: "Jürgen" -> "jurgen"."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _stem(token: str) -> str:
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def tokens(text: str) -> list[str]:
    return [_stem(t) for t in _WORD.findall(fold(text))]


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
        raw = raw[1:] + raw[:1]
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


# --- topic queries -----------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    words: tuple[str, ...]  # one word, or a phrase (folded, plural-stemmed)
    prefix: bool = False
    text: str = ""  # as written (folded, not stemmed), for querying a search engine


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
    if not re.search(r'["()]|\b(AND|OR|NOT)\b|\*', stripped):
        words = tuple(tokens(stripped))
        if not words:
            raise InvalidFilter(f"topic {text!r} has no words to match")
        return Term(words, text=" ".join(_WORD.findall(fold(stripped))))
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


class _Parser:
    def __init__(self, text: str, items: list[tuple[str, str, int]]):
        self.text, self.items, self.i = text, items, 0

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
        item = self._peek()
        if item and item[0] == "word" and item[1] == "NOT":
            self.i += 1
            return Op("NOT", (self.parse_not(),))
        return self.parse_atom()

    def parse_atom(self) -> Node:
        item = self._peek()
        if item is None:
            raise self._fail("a word is missing")
        kind, value, _ = item
        if kind == "lp":
            self.i += 1
            node = self.parse_or()
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
        words = raw if prefix else tuple(_stem(w) for w in raw)
        return Term(words, prefix=prefix, text=" ".join(raw))


# --- the index ---------------------------------------------------------------------------


class Index:
    """An inverted index over the run's papers: word -> {paper number: positions}."""

    def __init__(self, papers: Sequence[Paper]):
        self.papers = list(papers)
        self.postings: dict[str, dict[int, list[int]]] = defaultdict(dict)
        self.title_words: list[set[str]] = []
        self.lengths: list[int] = []
        self.author_keys: list[list[tuple[str, ...]]] = []
        for n, p in enumerate(self.papers):
            title = tokens(p.title)
            body = title + ["\x00"] + tokens(p.abstract)  # a gap so phrases don't straddle
            for pos, word in enumerate(body):
                self.postings[word].setdefault(n, []).append(pos)
            self.title_words.append(set(title))
            self.lengths.append(len(body))
            self.author_keys.append([name_key(a) for a in p.authors])
        self._vocab = sorted(self.postings)
        self.avg_len = (sum(self.lengths) / len(self.lengths)) if self.lengths else 1.0
        self.all = set(range(len(self.papers)))

    def _prefix_words(self, prefix: str) -> list[str]:
        import bisect

        i = bisect.bisect_left(self._vocab, prefix)
        out = []
        while i < len(self._vocab) and self._vocab[i].startswith(prefix):
            out.append(self._vocab[i])
            i += 1
        return out

    def term_hits(self, term: Term) -> dict[int, int]:
        """Papers containing the term, with how often it occurs."""
        if len(term.words) == 1:
            words = self._prefix_words(term.words[0]) if term.prefix else [term.words[0]]
            hits: dict[int, int] = defaultdict(int)
            for w in words:
                for n, positions in self.postings.get(w, {}).items():
                    hits[n] += len(positions)
            return hits
        first, rest = term.words[0], term.words[1:]
        hits = {}
        for n, positions in self.postings.get(first, {}).items():
            count = 0
            for start in positions:
                if all(start + k + 1 in self.postings.get(w, {}).get(n, ()) for k, w in
                       enumerate(rest)):
                    count += 1
            if count:
                hits[n] = count
        return hits

    def evaluate(self, node: Node) -> set[int]:
        if isinstance(node, Term):
            return set(self.term_hits(node))
        if node.op == "NOT":
            return self.all - self.evaluate(node.args[0])
        sets = [self.evaluate(a) for a in node.args]
        if node.op == "AND":
            # positive operands first so NOT x narrows rather than widens
            return set.intersection(*sets)
        return set.union(*sets)

    def score(self, node: Node, n: int) -> float:
        """BM25-style relevance of paper n to the positive terms of a query."""
        total = 0.0
        for term in positive_terms(node):
            hits = self.term_hits(term).get(n, 0)
            if not hits:
                continue
            df = len(self.term_hits(term))
            idf = math.log(1 + (len(self.papers) - df + 0.5) / (df + 0.5))
            k1, b = 1.2, 0.75
            tf = hits * (k1 + 1) / (hits + k1 * (1 - b + b * self.lengths[n] / self.avg_len))
            in_title = all(w in self.title_words[n] for w in term.words) and not term.prefix
            total += idf * tf * (2.0 if in_title else 1.0)
        return total


def positive_terms(node: Node) -> Iterable[Term]:
    if isinstance(node, Term):
        yield node
    elif node.op != "NOT":
        for a in node.args:
            yield from positive_terms(a)


def category_matches(pattern: str, categories: Iterable[str]) -> bool:
    return any(fnmatchcase(c.lower(), pattern.lower()) for c in categories)


# --- matching a subscriber ---------------------------------------------------------------


def validate_filters(sub: Subscriber) -> None:
    """Refuse a filter that cannot compile, at add/edit time, not at send time."""
    for topic in sub.topics:
        compile_query(topic)
    for ex in sub.exclude:
        if not ex.lower().startswith("author:"):
            compile_query(ex)
    for author in sub.authors:
        if len(name_key(author)) < 2:
            raise InvalidFilter(
                f"author {author!r}: give a full name such as \"Taiming Lu\""
            )


def match_subscriber(sub: Subscriber, index: Index,
                     already_sent: set[str] | frozenset[str] = frozenset()
                     ) -> list[Match]:
    """All papers in the index for this subscriber, best first."""
    found: dict[int, tuple[float, list[str], list[str]]] = {}

    def add(n: int, score: float, reason: str, author: str | None = None) -> None:
        s, reasons, authors = found.get(n, (0.0, [], []))
        reasons.append(reason)
        if author:
            authors.append(author)
        found[n] = (s + score, reasons, authors)

    for followed in sub.authors:
        key = name_key(followed)
        for n, keys in enumerate(index.author_keys):
            for k, written in zip(keys, index.papers[n].authors, strict=True):
                if same_author(key, k):
                    add(n, 1000.0, f"author: {followed}", written)
                    break
    for topic in sub.topics:
        node = compile_query(topic)
        for n in index.evaluate(node):
            add(n, 1.0 + index.score(node, n), f"topic: {topic}")
    for pattern in sub.categories:
        for n, p in enumerate(index.papers):
            if category_matches(pattern, p.categories):
                add(n, 0.5, f"category: {pattern}")

    excluded: set[int] = set()
    for ex in sub.exclude:
        if ex.lower().startswith("author:"):
            key = name_key(ex.split(":", 1)[1])
            excluded.update(n for n, keys in enumerate(index.author_keys)
                            if any(same_author(key, k) for k in keys))
        else:
            excluded.update(index.evaluate(compile_query(ex)))

    matches = [
        Match(paper=index.papers[n], score=round(s, 4), reasons=tuple(r),
              followed_authors=tuple(a))
        for n, (s, r, a) in found.items()
        if n not in excluded and index.papers[n].id not in already_sent
    ]
    matches.sort(key=lambda m: (-m.score, -m.paper.published.timestamp(), m.paper.id))
    return matches
