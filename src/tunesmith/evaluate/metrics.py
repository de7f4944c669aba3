"""Classification metrics: one function, used by training, eval and cv alike."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro/micro/weighted P/R/F1, per-class P/R/F1 and the confusion matrix.

    Args:
        y_true: gold label ids.
        y_pred: predicted label ids.
        labels: label names, indexed by id.

    Returns:
        A JSON-serialisable dict; ``confusion_matrix[i][j]`` counts gold ``labels[i]`` predicted as ``labels[j]``.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    ids = list(range(len(labels)))
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    out: dict[str, Any] = {"n": int(len(y_true)), "accuracy": float(accuracy_score(y_true, y_pred))}
    for avg in ("macro", "micro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=avg, zero_division=0)
        out[f"{avg}_precision"], out[f"{avg}_recall"], out[f"{avg}_f1"] = float(p), float(r), float(f)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=None, zero_division=0)
    out["per_class"] = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])} for i, name in enumerate(labels)
    }
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=ids).tolist()
    out["labels"] = list(labels)
    return out


def majority_baseline(train_labels: Sequence[int], eval_labels: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Metrics of always predicting the most frequent training class: the floor a model must beat."""
    majority = Counter(train_labels).most_common(1)[0][0]
    full = classification_metrics(eval_labels, [majority] * len(eval_labels), labels)
    return {"predicts": labels[majority], **{k: full[k] for k in ("accuracy", "macro_f1", "weighted_f1")}}


HEADLINE = ("accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall")
