"""A learned ranking per subscriber: TF-IDF over title and abstract, a linear SVM.

Positives are the reader's seed papers and the papers they marked relevant; negatives are
the papers they marked not relevant (weighted more) and the day's other papers (unlabelled,
as arxiv-sanity-lite treats them). One vectoriser is fitted per run over the day's papers
and every subscriber's labelled papers, so each subscriber costs one small fit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from newsletter.models import Paper

MODES = ("filters", "reorder", "like")
EXPLICIT_NEGATIVE_WEIGHT = 3.0
LIKE_THRESHOLD = 3.0  # blended score (in standard deviations) that counts as "like mine"
MAX_UNLABELLED = 2000  # the day's papers used as negatives, at most (sampled evenly)
_TEX = re.compile(r"\$[^$]*\$|\\[a-zA-Z]+")


def paper_text(paper: Paper) -> str:
    """What the model reads: the title (twice, it is the densest part) and the abstract,
    with LaTeX commands and inline maths removed."""
    return _TEX.sub(" ", f"{paper.title}. {paper.title}. {paper.abstract}")


@dataclass(frozen=True)
class Labels:
    """What one reader has told us: papers they like (seeds, relevant) and do not."""

    positives: tuple[Paper, ...] = ()
    negatives: tuple[Paper, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.positives)


@dataclass(frozen=True)
class Scored:
    """The learned score of one of the day's papers, and the seed it is most like."""

    score: float
    like: Paper | None
    similarity: float
    positive: bool = False  # the SVM puts it with the reader's papers, or it stands out


class Model:
    """One run's features: the day's papers and every labelled paper, vectorised once."""

    def __init__(self, day: Sequence[Paper], labelled: Sequence[Paper] = ()):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.day = list(day)
        extra = {p.id: p for p in labelled if p.id not in {d.id for d in self.day}}
        self._extra = list(extra.values())
        self.vectorizer = TfidfVectorizer(
            sublinear_tf=True, strip_accents="unicode", lowercase=True, stop_words="english",
            ngram_range=(1, 2), min_df=1, max_df=0.5 if len(self.day) > 50 else 1.0,
            max_features=50_000, dtype=_float32())
        texts = [paper_text(p) for p in self.day + self._extra]
        self.matrix: Any = self.vectorizer.fit_transform(texts) if texts else None
        self.row = {p.id: n for n, p in enumerate(self.day + self._extra)}

    def _rows(self, papers: Sequence[Paper]) -> Any:
        from scipy.sparse import vstack

        known = [self.matrix[self.row[p.id]] for p in papers if p.id in self.row]
        unknown = [p for p in papers if p.id not in self.row]
        parts = known + ([self.vectorizer.transform([paper_text(p) for p in unknown])]
                         if unknown else [])
        return vstack(parts) if parts else None

    def score(self, labels: Labels) -> list[Scored]:
        """A score per day paper (higher is more like the positives), in ``day`` order.

        The score is the SVM's margin plus the similarity to the positives, each
        standardised over the day (chosen on the evaluation's tuning split: the SVM alone
        and the similarity alone each rank a little worse; with feedback the SVM carries
        most of the gain)."""
        if not labels or not self.day or self.matrix is None:
            return [Scored(0.0, None, 0.0) for _ in self.day]
        from scipy.sparse import vstack
        from sklearn.svm import LinearSVC

        n_day = len(self.day)
        day_x = self.matrix[:n_day]
        pos_ids = {p.id for p in labels.positives}
        neg_ids = {p.id for p in labels.negatives} - pos_ids
        unlabelled = [n for n, p in enumerate(self.day) if p.id not in pos_ids | neg_ids]
        if len(unlabelled) > MAX_UNLABELLED:
            step = len(unlabelled) / MAX_UNLABELLED
            unlabelled = [unlabelled[int(i * step)] for i in range(MAX_UNLABELLED)]
        pos_x = self._rows(labels.positives)
        negatives = [p for p in labels.negatives if p.id not in pos_ids]
        neg_x = self._rows(negatives)
        blocks = [pos_x] + ([neg_x] if neg_x is not None else []) + (
            [day_x[unlabelled]] if unlabelled else [])
        n_pos, n_neg = pos_x.shape[0], (neg_x.shape[0] if neg_x is not None else 0)
        y = [1] * n_pos + [0] * (n_neg + len(unlabelled))
        weights = [1.0] * n_pos + [EXPLICIT_NEGATIVE_WEIGHT] * n_neg + [1.0] * len(unlabelled)
        sims = (day_x @ pos_x.T).toarray()
        similarity = self.similarity(labels.positives)
        if n_neg + len(unlabelled) == 0:
            margin = [0.0] * n_day
        else:
            svm = LinearSVC(class_weight="balanced", C=0.1, max_iter=10_000, tol=1e-6)
            svm.fit(vstack(blocks), y, sample_weight=weights)
            margin = svm.decision_function(day_x).tolist()
        # standardised over the day's other papers (the labelled ones would stretch the scale)
        others = [n for n, p in enumerate(self.day) if p.id not in pos_ids | neg_ids] or \
            list(range(n_day))
        blended = [a + b for a, b in zip(_standard(margin, others),
                                         _standard(similarity, others), strict=True)]
        out = []
        for n in range(n_day):
            best = int(sims[n].argmax())
            out.append(Scored(blended[n], labels.positives[best], float(sims[n, best]),
                              margin[n] > 0 or blended[n] > LIKE_THRESHOLD))
        return out

    def similarity(self, seeds: Sequence[Paper]) -> list[float]:
        """The baseline "similar to my library": mean cosine similarity to the seeds, the
        more recent seeds weighted more (as zotero-arxiv-daily weights its corpus)."""
        if not seeds or not self.day or self.matrix is None:
            return [0.0] * len(self.day)
        ordered = sorted(seeds, key=lambda p: p.published, reverse=True)
        weights = [1 / (1 + math.log10(i + 1)) for i in range(len(ordered))]
        total = sum(weights)
        sims = (self.matrix[: len(self.day)] @ self._rows(ordered).T).toarray()
        return [float(sum(w * s for w, s in zip(weights, row, strict=True)) / total)
                for row in sims]


def _scored(m: Any, s: Scored) -> Any:
    from dataclasses import replace

    return replace(m, learned=round(s.score, 4), like=s.like.title if s.like else None)


def _standard(values: Sequence[float], over: Sequence[int]) -> list[float]:
    """Standardise to mean 0 and standard deviation 1 as measured over ``over`` (indexes);
    all zeros when those values are all equal."""
    sample = [values[i] for i in over]
    mean = sum(sample) / len(sample)
    spread = math.sqrt(sum((v - mean) ** 2 for v in sample) / len(sample))
    return [(v - mean) / spread if spread > 1e-12 else 0.0 for v in values]


def _float32() -> Any:
    import numpy

    return numpy.float32


def rerank(matches: Sequence[Any], day: Sequence[Paper], scored: Sequence[Scored], mode: str,
           cap: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[Any]:
    """The issue's order under a ranking mode.

    ``filters``: the filters' order, unchanged. ``reorder``: papers by a followed author
    first (the reader asked for them by name), then the rest by learned score. ``like``:
    as ``reorder``, plus up to ``cap`` papers the filters did not match whose learned score
    is positive (the SVM puts them with the reader's papers), each labelled with the seed
    it is most like. Matches are :class:`newsletter.models.Match`.
    """
    from newsletter.models import Match

    if mode == "filters" or not any(s.like for s in scored):
        return list(matches)
    by_id = {p.id: s for p, s in zip(day, scored, strict=True)}
    learned = [_scored(m, by_id[m.paper.id]) if m.paper.id in by_id else m for m in matches]
    if mode == "like" and cap > 0:
        taken = {m.paper.id for m in matches} | set(exclude)
        extra = sorted((s.score, p.id, p, s) for p, s in zip(day, scored, strict=True)
                       if p.id not in taken and s.positive and s.like is not None)
        for score, _, paper, s in sorted(extra, key=lambda t: (-t[0], t[1]))[:cap]:
            assert s.like is not None
            learned.append(Match(paper=paper, score=0.0, reasons=(f"like: {s.like.title}",),
                                 learned=round(score, 4), like=s.like.title))

    def order(m: Match) -> tuple[int, float, str]:
        return (0 if m.followed_authors else 1,
                -(m.learned if m.learned is not None else -1e9), m.paper.id)

    return sorted(learned, key=order)
