"""A learned ranking per subscriber: TF-IDF over title and abstract, a linear SVM.

Positives are the reader's seed papers and the papers they marked relevant; negatives are
the papers they marked not relevant (weighted more) and the day's other papers (unlabelled,
as arxiv-sanity-lite treats them). One vectoriser is fitted per run over the day's papers
and every subscriber's labelled papers, so each subscriber costs one small fit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from newsletter.models import Paper

EXPLICIT_NEGATIVE_WEIGHT = 3.0
LIKE_THRESHOLD = 3.0  # blended score (in standard deviations) that counts as "like mine"
MAX_UNLABELLED = 500  # the day's papers used as negatives, at most (sampled evenly)
NGRAMS = (1, 2)  # words and pairs of words
MAX_FEATURES = 50_000
SVM_TOL = 1e-4
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
            ngram_range=NGRAMS, min_df=1, max_df=0.5 if len(self.day) > 50 else 1.0,
            max_features=MAX_FEATURES, dtype=_float32())
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

    def score(self, labels: Labels) -> Scores:
        """A score per day paper (higher is more like the positives), in ``day`` order.

        The score is the SVM's margin plus the similarity to the positives, each
        standardised over the day's unlabelled papers (chosen on the evaluation's tuning
        split: with seeds alone the two rank about equally well and their sum a little
        better; feedback adds most through the SVM)."""
        import numpy as np

        n_day = len(self.day)
        if not labels or not n_day or self.matrix is None:
            return Scores(self, (), np.zeros(n_day), np.zeros(n_day, bool), np.zeros(n_day, int))
        from scipy.sparse import vstack
        from sklearn.svm import LinearSVC

        day_x = self.matrix[:n_day]
        pos_ids = {p.id for p in labels.positives}
        neg_ids = {p.id for p in labels.negatives} - pos_ids
        labelled = np.zeros(n_day, bool)
        for pid in pos_ids | neg_ids:
            if self.row.get(pid, n_day) < n_day:
                labelled[self.row[pid]] = True
        unlabelled = np.flatnonzero(~labelled)
        if len(unlabelled) > MAX_UNLABELLED:  # sampled evenly, the same every run
            unlabelled = unlabelled[np.linspace(0, len(unlabelled) - 1, MAX_UNLABELLED,
                                                dtype=int)]
        ordered = sorted(labels.positives, key=lambda p: p.published, reverse=True)
        pos_x = self._rows(ordered)
        negatives = [p for p in labels.negatives if p.id not in pos_ids]
        neg_x = self._rows(negatives)
        n_pos, n_neg = pos_x.shape[0], (neg_x.shape[0] if neg_x is not None else 0)
        sims = (day_x @ pos_x.T).toarray()
        similarity = sims @ _recency_weights(n_pos)
        if n_neg + len(unlabelled) == 0:
            margin = np.zeros(n_day)
        else:
            blocks = [pos_x] + ([neg_x] if n_neg else []) + [day_x[unlabelled]]
            y = np.r_[np.ones(n_pos), np.zeros(n_neg + len(unlabelled))]
            w = np.r_[np.ones(n_pos), np.full(n_neg, EXPLICIT_NEGATIVE_WEIGHT),
                      np.ones(len(unlabelled))]
            svm = LinearSVC(class_weight="balanced", C=0.1, max_iter=10_000, tol=SVM_TOL)
            svm.fit(vstack(blocks), y, sample_weight=w)
            margin = svm.decision_function(day_x)
        over = ~labelled if (~labelled).any() else np.ones(n_day, bool)
        blended = _standard(margin, over) + _standard(similarity, over)
        positive = (margin > 0) | (blended > LIKE_THRESHOLD)
        return Scores(self, tuple(ordered), blended, positive, sims.argmax(axis=1))

    def similarity(self, seeds: Sequence[Paper]) -> list[float]:
        """The baseline "similar to my library": mean cosine similarity to the seeds, the
        more recent seeds weighted more (as zotero-arxiv-daily weights its corpus)."""

        if not seeds or not self.day or self.matrix is None:
            return [0.0] * len(self.day)
        ordered = sorted(seeds, key=lambda p: p.published, reverse=True)
        sims = (self.matrix[: len(self.day)] @ self._rows(ordered).T).toarray()
        return (sims @ _recency_weights(len(ordered))).tolist()


class Scores:
    """The learned scores of one subscriber over the day's papers (arrays, in ``day``
    order); ``scores[n]`` is paper n's :class:`Scored`."""

    def __init__(self, model: Model, positives: tuple[Paper, ...], score: Any, positive: Any,
                 like: Any) -> None:
        self.model, self.positives = model, positives
        self.score, self.positive, self.like = score, positive, like

    def __len__(self) -> int:
        return len(self.model.day)

    def __getitem__(self, n: int) -> Scored:
        if not self.positives:
            return Scored(0.0, None, 0.0)
        return Scored(float(self.score[n]), self.positives[int(self.like[n])], 0.0,
                      bool(self.positive[n]))

    def of(self, paper_id: str) -> Scored | None:
        n = self.model.row.get(paper_id)
        return self[n] if n is not None and n < len(self) else None

    def best(self, exclude: set[str], count: int) -> list[tuple[Paper, Scored]]:
        """Up to ``count`` papers the SVM puts with the reader's (or that stand out), best
        first, leaving out ``exclude``."""
        import numpy as np

        out: list[tuple[Paper, Scored]] = []
        if not self.positives or count <= 0:
            return out
        for n in np.argsort(-self.score, kind="stable"):
            if len(out) >= count:
                break
            paper = self.model.day[int(n)]
            if self.positive[n] and paper.id not in exclude:
                out.append((paper, self[int(n)]))
        return out


def _recency_weights(n: int) -> Any:
    """Weights summing to 1 for n papers newest first: recent ones weigh more, as
    zotero-arxiv-daily weights a library (1 / (1 + log10(rank)))."""
    import numpy as np

    weights = 1 / (1 + np.log10(np.arange(n) + 1))
    return weights / weights.sum()


def _scored(m: Any, s: Scored) -> Any:
    from dataclasses import replace

    return replace(m, learned=round(s.score, 4), like=s.like.title if s.like else None)


def _standard(values: Any, over: Any) -> Any:
    """Standardise to mean 0 and standard deviation 1 as measured where ``over`` is true;
    all zeros when those values are all equal."""
    import numpy as np

    sample = np.asarray(values, dtype=float)[over]
    spread = sample.std()
    if spread <= 1e-12:
        return np.zeros(len(values))
    return (np.asarray(values, dtype=float) - sample.mean()) / spread


def _float32() -> Any:
    import numpy

    return numpy.float32


def rerank(matches: Sequence[Any], scores: Scores, mode: str, cap: int,
           exclude: set[str] | frozenset[str] = frozenset()) -> list[Any]:
    """The issue's order under a ranking mode.

    ``filters``: the filters' order, unchanged. ``reorder``: papers by a followed author
    first (the reader asked for them by name), then the rest by learned score. ``like``:
    as ``reorder``, plus up to ``cap`` papers the filters did not match that the SVM puts
    with the reader's papers (or that stand out above the day by ``LIKE_THRESHOLD``), each
    labelled with the seed it is most like. Matches are :class:`newsletter.models.Match`.
    """
    from newsletter.models import Match

    if mode == "filters" or not scores.positives:
        return list(matches)
    learned = []
    for m in matches:
        s = scores.of(m.paper.id)
        learned.append(_scored(m, s) if s is not None else m)
    if mode == "like" and cap > 0:
        taken = {m.paper.id for m in matches} | set(exclude)
        for paper, s in scores.best(taken, cap):
            assert s.like is not None
            learned.append(Match(paper=paper, score=0.0, reasons=(f"like: {s.like.title}",),
                                 learned=round(s.score, 4), like=s.like.title))

    def order(m: Match) -> tuple[int, float, str]:
        return (0 if m.followed_authors else 1,
                -(m.learned if m.learned is not None else -1e9), m.paper.id)

    return sorted(learned, key=order)
