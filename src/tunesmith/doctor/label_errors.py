"""Likely label errors: out-of-fold probabilities of a fast baseline, ranked confident-learning style.

A TF-IDF (word 1-2-grams + character 2-5-grams, as in :mod:`tunesmith.classic.tfidf`) logistic
regression predicts every row from folds that did not train on it; copies of one (normalised) text
stay in one fold so a duplicate cannot vouch for its own label. Following confident learning
(Northcutt et al., 2021), each class gets a threshold, the mean probability the baseline gives the
class on rows labelled with it; a row is suspect when its given label's probability falls below that
label's threshold while another class clears its own. Suspects are ranked by how far the suggested
class's probability exceeds the given one's.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tunesmith.doctor.findings import MAX_EXAMPLES, Finding

if TYPE_CHECKING:
    from tunesmith.doctor.dataset import DoctorData

FOLDS = 5
MIN_ROWS = 20
"""Fewer labelled rows than this give no usable out-of-fold estimate."""
RANKED_ROWS = 200
"""Suspect row numbers kept in the evidence, best first."""


@dataclass
class Suspect:
    """A row whose given label the baseline doubts."""

    position: int
    given: str
    suggested: str
    given_probability: float
    suggested_probability: float

    @property
    def margin(self) -> float:
        return self.suggested_probability - self.given_probability


def out_of_fold_probabilities(
    texts: Sequence[str], labels: Sequence[str], groups: Sequence[int], *, folds: int = FOLDS, seed: int = 42
) -> tuple[np.ndarray, list[str]]:
    """Each row's class probabilities from a TF-IDF logistic regression that never saw the row's group.

    Returns:
        ``(probabilities, classes)``: an ``(n, n_classes)`` array with columns in ``classes`` order.
    """
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    classes = sorted(set(labels))
    y = np.array([classes.index(label) for label in labels])
    # The vectorisers see every text (no labels): fitting them once instead of per fold changes little and saves most of the time.
    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=100_000, dtype=np.float32)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2, max_features=100_000, dtype=np.float32)
    features = hstack([words.fit_transform(texts), chars.fit_transform(texts)]).tocsr()
    fold = group_folds(y, np.asarray(groups), folds, seed)
    probabilities = np.zeros((len(y), len(classes)))
    # One BLAS thread: these small fits gain nothing from more, and on a busy machine spinning threads cost 3x.
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        for k in range(fold.max() + 1):
            fit_idx, held_idx = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
            if len(held_idx) == 0 or len(np.unique(y[fit_idx])) < 2:
                continue
            # Weak regularisation: sharp probabilities put clean rows well above their class threshold, so flipped
            # rows stand out (on a planted 5% flip, C=100 finds about 90% of them where C=1 finds 80%).
            model = LogisticRegression(C=100.0, max_iter=1000)
            model.fit(features[fit_idx], y[fit_idx])
            probabilities[np.ix_(held_idx, model.classes_)] = model.predict_proba(features[held_idx])
    return probabilities, classes


def group_folds(y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number for each row: rows of one group share a fold, and each class's groups are dealt evenly over the folds.

    A group takes the class of its first row. (sklearn's StratifiedGroupKFold does this more exactly
    and 20 times slower; an even deal is all the out-of-fold estimate needs.)
    """
    rng = np.random.default_rng(seed)
    ids, first, row_group = np.unique(groups, return_index=True, return_inverse=True)
    folds = max(2, min(folds, len(ids)))
    group_fold = np.zeros(len(ids), dtype=np.int64)
    for c in np.unique(y[first]):
        members = np.flatnonzero(y[first] == c)
        rng.shuffle(members)
        group_fold[members] = (np.arange(len(members)) + rng.integers(folds)) % folds
    return group_fold[row_group]


def find_suspects(probabilities: np.ndarray, labels: Sequence[str], classes: Sequence[str]) -> tuple[list[Suspect], dict[str, float]]:
    """Confident-learning suspects, most doubtful first, and the per-class thresholds.

    A row labelled ``i`` is suspect when ``p_i < t_i`` and some other class ``j`` has ``p_j >= t_j``,
    where ``t_k`` is the mean ``p_k`` over rows labelled ``k``; the suggested label is the most probable such ``j``.
    """
    y = np.array([list(classes).index(label) for label in labels])
    thresholds = np.array([probabilities[y == k, k].mean() if (y == k).any() else 1.0 for k in range(len(classes))])
    suspects = []
    for row, (p, given) in enumerate(zip(probabilities, y)):
        if p[given] >= thresholds[given]:
            continue
        above = [k for k in range(len(classes)) if k != given and p[k] >= thresholds[k]]
        if not above:
            continue
        best = max(above, key=lambda k: p[k])
        if p[best] <= p[given]:
            continue
        suspects.append(Suspect(row, classes[given], classes[best], float(p[given]), float(p[best])))
    suspects.sort(key=lambda s: (-s.margin, s.position))
    return suspects, {c: round(float(t), 4) for c, t in zip(classes, thresholds)}


def check_label_errors(data: DoctorData) -> list[Finding]:
    """Rows whose label a cross-validated baseline confidently disagrees with."""
    labels = data.train.labels
    if labels is None:
        return []
    counts = Counter(labels)
    distinct = len(set(data.train.texts))
    if len(counts) < 2 or distinct < MIN_ROWS:
        return [
            Finding(
                check="label_errors",
                severity="info",
                message=f"skipped the label-error search: it needs at least {MIN_ROWS} distinct texts in 2 or more classes "
                f"(got {distinct} in {len(counts)} class{'es' if len(counts) != 1 else ''})",
                remedy="add labelled examples",
            )
        ]
    index = data.duplicate_index
    group = np.arange(len(labels)) + len(index.keys)  # texts that normalise to nothing stay on their own
    for key, members in enumerate(index.train_members):
        group[members] = key
    probabilities, classes = out_of_fold_probabilities(data.train.texts, labels, group.tolist(), seed=data.seed)
    suspects, thresholds = find_suspects(probabilities, labels, classes)
    accuracy = float((np.array(classes)[probabilities.argmax(1)] == np.array(labels)).mean())
    if not suspects:
        return []
    n = len(labels)
    examples = [
        data.example(
            s.position,
            suggested=s.suggested,
            confidence=round(s.suggested_probability, 3),
            given_probability=round(s.given_probability, 3),
        )
        for s in suspects[:MAX_EXAMPLES]
    ]
    flips = Counter((s.given, s.suggested) for s in suspects)
    return [
        Finding(
            check="label_errors",
            severity="warning",
            message=f"{len(suspects):,} of {n:,} rows ({len(suspects) / n:.1%}) may be mislabelled: a cross-validated TF-IDF baseline "
            f"({accuracy:.1%} accurate out of fold) confidently prefers another label; the top {min(len(suspects), MAX_EXAMPLES)} are listed",
            evidence={
                "suspects": len(suspects),
                "baseline_accuracy": round(accuracy, 4),
                "thresholds": thresholds,
                "given_to_suggested": {f"{g} -> {s}": c for (g, s), c in flips.most_common(MAX_EXAMPLES)},
                "examples": examples,
                "ranked_rows": [data.train.rows[s.position] for s in suspects[:RANKED_ROWS]],
            },
            remedy=f"review the listed rows of {data.train.source} (most doubtful first) and correct the labels that are wrong",
        )
    ]
