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


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """MSE, MAE, RMSE, R², Pearson and Spearman per target, and their mean over targets at the top level.

    Args:
        y_true: ``[n, k]`` gold values in the targets' own units.
        y_pred: ``[n, k]`` predictions.
        names: the ``k`` target names.
    """
    from scipy.stats import pearsonr, spearmanr

    y_true = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    per_target = {}
    for k, name in enumerate(names):
        t, p = y_true[:, k], y_pred[:, k]
        err = p - t
        mse = float(np.mean(err**2))
        var = float(np.var(t))
        constant = np.ptp(t) == 0 or np.ptp(p) == 0  # correlation is undefined, report 0
        per_target[name] = {
            "mse": mse,
            "mae": float(np.mean(np.abs(err))),
            "rmse": float(np.sqrt(mse)),
            "r2": 1.0 - mse / var if var > 0 else 0.0,
            "pearson": 0.0 if constant else float(pearsonr(t, p)[0]),
            "spearman": 0.0 if constant else float(spearmanr(t, p)[0]),
        }
    out: dict[str, Any] = {"n": int(len(y_true))}
    for key in ("mse", "mae", "rmse", "r2", "pearson", "spearman"):
        out[key] = float(np.mean([m[key] for m in per_target.values()]))
    out["per_target"] = per_target
    return out


def entity_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], scheme: str) -> dict[str, Any]:
    """Entity-level strict precision/recall/F1 (seqeval), overall (micro) and per type, plus token accuracy.

    Strict mode counts an entity as found only when its type and both boundaries match exactly.
    """
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2, IOBES

    gold = [list(s) for s in gold]
    pred = [list(s) for s in pred]
    report = classification_report(
        gold, pred, mode="strict", scheme=IOBES if scheme == "BIOES" else IOB2, output_dict=True, zero_division=0
    )
    per_type = {
        name: {"precision": float(v["precision"]), "recall": float(v["recall"]), "f1": float(v["f1-score"]), "support": int(v["support"])}
        for name, v in report.items()
        if not name.endswith(" avg")
    }
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    tokens = sum(len(s) for s in gold)
    correct = sum(g == p for gs, ps in zip(gold, pred, strict=True) for g, p in zip(gs, ps, strict=True))
    return {
        "n": len(gold),
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "macro_f1": float(report.get("macro avg", {}).get("f1-score", 0.0)),
        "token_accuracy": correct / tokens if tokens else 0.0,
        "per_type": per_type,
    }


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Multi-label scores: micro/macro/weighted/samples P/R/F1, subset accuracy, hamming loss and per-label P/R/F1.

    Args:
        y_true: ``[n, k]`` 0/1 gold matrix (``y_true[i, j] == 1``: text ``i`` has ``labels[j]``).
        y_pred: ``[n, k]`` 0/1 predictions.
        labels: the ``k`` label names.

    Returns:
        A JSON-serialisable dict. ``subset_accuracy`` counts texts whose whole label set is exactly right;
        ``hamming_loss`` is the share of wrong (text, label) decisions. Samples averages score each text
        and average over texts; a text with no gold and no predicted labels counts as fully right there.
    """
    from sklearn.metrics import precision_recall_fscore_support

    k = len(labels)
    y_true = np.asarray(y_true).astype(np.int64).reshape(-1, k)
    y_pred = np.asarray(y_pred).astype(np.int64).reshape(-1, k)
    n = len(y_true)
    out: dict[str, Any] = {
        "n": int(n),
        "subset_accuracy": float(np.mean(np.all(y_true == y_pred, axis=1))) if n else 0.0,
        "hamming_loss": float(np.mean(y_true != y_pred)) if n else 0.0,
    }
    for avg in ("micro", "macro", "weighted", "samples"):
        # an empty gold set predicted empty is a correct "none of these" answer, not a 0/0 to punish
        zero_division = 1.0 if avg == "samples" else 0.0
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=zero_division)
        out[f"{avg}_precision"], out[f"{avg}_recall"], out[f"{avg}_f1"] = float(p), float(r), float(f)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    predicted = y_pred.sum(axis=0)
    out["per_label"] = {
        name: {"precision": float(p[j]), "recall": float(r[j]), "f1": float(f[j]), "support": int(s[j]), "predicted": int(predicted[j])}
        for j, name in enumerate(labels)
    }
    out["mean_labels_gold"] = float(y_true.sum(axis=1).mean()) if n else 0.0
    out["mean_labels_predicted"] = float(y_pred.sum(axis=1).mean()) if n else 0.0
    out["labels"] = list(labels)
    return out
