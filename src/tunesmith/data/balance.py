"""Random over- and undersampling of a training split to equal class counts.

Only ever applied to the training split, after the train/eval split: resampling before the split
would put copies of eval examples into training and inflate the eval score.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from tunesmith.data.texts import LabelledTexts, natural_key
from tunesmith.errors import UserError

METHODS = ("none", "oversample", "undersample")
"""``none``: leave the split as it is; ``oversample``: repeat minority examples up to the largest class;
``undersample``: keep a random subset of each class the size of the smallest."""


def balance(texts: LabelledTexts, how: str, seed: int) -> tuple[LabelledTexts, dict[str, Any]]:
    """Resample labelled texts so every class has the same number of examples.

    Oversampling repeats each minority example as evenly as possible (every example ``k`` times,
    then a random distinct subset once more), so no example is drawn twice while another is never
    drawn. Undersampling keeps a random subset of each class. Examples stay in file order.

    Args:
        texts: the training split (labels required).
        how: ``none``, ``oversample`` or ``undersample``.
        seed: seed of the random choices; the same seed gives the same result.

    Returns:
        The resampled texts and a JSON-ready report: ``method``, ``seed``, class counts ``before``
        and ``after``, examples ``added`` (oversample) or ``removed`` (undersample).

    Raises:
        UserError: ``how`` is not a method, or the texts have no labels.
    """
    if how not in METHODS:
        raise UserError(f"`data.balance` must be one of {', '.join(METHODS)}, got {how!r}")
    if texts.labels is None:
        raise UserError(f"{texts.source}: --balance {how} needs labels, but no label column was read; name it with --label-col NAME")
    counts = Counter(texts.labels)
    order = sorted(counts, key=natural_key)
    before = {label: counts[label] for label in order}
    if how == "none":
        return texts, {"method": "none", "before": before, "after": before}
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {label: [] for label in order}
    for i, label in enumerate(texts.labels):
        by_class[label].append(i)
    target = max(counts.values()) if how == "oversample" else min(counts.values())
    chosen: list[int] = []
    for label in order:
        idx = np.array(by_class[label])
        if how == "undersample":
            chosen.extend(rng.choice(idx, size=target, replace=False).tolist())
            continue
        extra = target - len(idx)
        chosen.extend(idx.tolist() * (1 + extra // len(idx)))
        chosen.extend(rng.choice(idx, size=extra % len(idx), replace=False).tolist())
    chosen.sort()
    result = texts.subset(chosen)
    after = {label: target for label in order}
    report: dict[str, Any] = {"method": how, "seed": seed, "before": before, "after": after}
    if how == "oversample":
        report["added"] = len(result) - len(texts)
    else:
        report["removed"] = len(texts) - len(result)
    return result, report
