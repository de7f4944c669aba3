"""Multi-label text classification: each text has a set of labels (none, one or several).

One sigmoid per label, trained with binary cross-entropy. After training, each label gets its own
decision threshold, tuned on the eval set, stored in ``model/tunesmith_multilabel.json`` and used by
``predict``. The runner writes the model (and :func:`save_extras`, thresholds of 0.5) before it calls
:func:`evaluate`, so :func:`evaluate`, which sees the eval predictions, rewrites that file with the
tuned thresholds; the run's config and :class:`MultiLabelPredictor` need no other change.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tunesmith.config import RunConfig
from tunesmith.data.multilabel import PreparedMultiLabel, check_known_labels, label_matrix, load_label_sets, prepare_multilabel
from tunesmith.evaluate.metrics import multilabel_metrics
from tunesmith.tasks import classify
from tunesmith.tasks.base import Encoded, EncodedDataset, Task, encode_texts, load_pretrained, load_trained
from tunesmith.tasks.inference import batched_logits

THRESHOLDS_FILE = "tunesmith_multilabel.json"
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)
HEADLINE = ("micro_f1", "macro_f1", "weighted_f1", "samples_f1", "subset_accuracy", "hamming_loss")
MAX_POS_WEIGHT = 50.0


def prepare(config: RunConfig) -> PreparedMultiLabel:
    """Load, validate, dedupe and split the data (raises UserError on bad input)."""
    return prepare_multilabel(config.data, seed=config.training.seed)


def build_model(config: RunConfig, data: PreparedMultiLabel):
    from transformers import AutoModelForSequenceClassification

    return load_pretrained(
        config, AutoModelForSequenceClassification, problem_type="multi_label_classification", **classify.model_kwargs(data.labels)
    )


def encode(tokenizer, data: PreparedMultiLabel, config: RunConfig) -> Encoded:
    """Tokenize both splits once; each example's ``labels`` is its 0/1 row over the label set, as floats for BCE."""
    splits, truncated = {}, {}
    for split, part in (("train", data.train), ("eval", data.eval)):
        features, truncated[split] = encode_texts(tokenizer, part.texts, config.data.max_length)
        for feat, row in zip(features, label_matrix(part.label_sets, data.labels), strict=True):
            feat["labels"] = [float(v) for v in row]
        splits[split] = EncodedDataset(features)
    return Encoded(splits["train"], splits["eval"], truncated)


def positive_weights(y: np.ndarray) -> torch.Tensor:
    """BCE ``pos_weight`` per label: negatives / positives in training, clipped to [1, 50].

    The floor keeps common labels at their plain loss; the ceiling stops a label with a handful of
    examples from dominating the gradient.
    """
    pos = y.sum(axis=0).astype(np.float64)
    neg = len(y) - pos
    return torch.tensor(np.clip(neg / np.maximum(pos, 1.0), 1.0, MAX_POS_WEIGHT), dtype=torch.float32)


def make_loss(config: RunConfig, data: PreparedMultiLabel) -> Callable:
    """A ``compute_loss_func``: binary cross-entropy per label, with optional ``pos_weight`` and label smoothing."""
    t = config.training
    weights = positive_weights(label_matrix(data.train.label_sets, data.labels)) if t.class_weights == "auto" else None
    smoothing = t.label_smoothing

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        target = labels.float().view_as(logits)
        if smoothing:
            # each label is its own two-class problem: smooth towards 0.5
            target = target * (1.0 - smoothing) + 0.5 * smoothing
        w = weights.to(logits.device) if weights is not None else None
        return F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=w)

    return loss


def make_compute_metrics(data: PreparedMultiLabel) -> Callable:
    """Trainer ``compute_metrics`` at threshold 0.5, scored against ``label_ids`` (order-safe)."""
    labels = data.labels

    def compute(pred) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        logits = np.asarray(logits).reshape(-1, len(labels))
        m = multilabel_metrics(np.asarray(pred.label_ids).reshape(-1, len(labels)) > 0.5, logits >= 0.0, labels)
        return {k: m[k] for k in HEADLINE}

    return compute


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function, without overflow for large negative logits."""
    return np.exp(-np.logaddexp(0.0, -logits))


def predict_proba(model, tokenizer, texts: Sequence[str], *, max_length: int, batch_size: int, precision: str) -> np.ndarray:
    """``[n, k]`` probability of each label for each text, in input order."""
    logits = batched_logits(model, tokenizer, texts, max_length=max_length, batch_size=batch_size, precision=precision)
    return sigmoid(logits.reshape(len(texts), -1))


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per label, the threshold on :data:`THRESHOLD_GRID` that maximises that label's F1 on these texts.

    Ties go to the threshold nearest 0.5 (a flat F1 curve carries no evidence to move away from it);
    a label without positives here keeps 0.5.
    """
    by_closeness = np.argsort(np.abs(THRESHOLD_GRID - 0.5), kind="stable")
    grid = THRESHOLD_GRID[by_closeness]
    thresholds = np.full(y_true.shape[1], 0.5)
    for j in range(y_true.shape[1]):
        gold = y_true[:, j].astype(bool)
        if not gold.any():
            continue
        chosen = probs[:, j, None] >= grid[None, :]
        tp = (chosen & gold[:, None]).sum(axis=0)
        errors = (chosen != gold[:, None]).sum(axis=0)  # false positives + false negatives
        thresholds[j] = grid[int(np.argmax(2 * tp / (2 * tp + errors)))]
    return thresholds


def prediction_rows(probs: np.ndarray, labels: Sequence[str], thresholds: np.ndarray) -> list[dict[str, Any]]:
    """One ``{"labels": [...], "probabilities": {label: p}}`` per text; chosen labels most probable first."""
    rows = []
    for p in probs:
        chosen = [j for j in np.argsort(-p, kind="stable") if p[j] >= thresholds[j]]
        rows.append({"labels": [labels[j] for j in chosen], "probabilities": {name: float(p[j]) for j, name in enumerate(labels)}})
    return rows


def score(
    probs: np.ndarray,
    gold_sets: Sequence[Sequence[str]],
    texts: Sequence[str],
    rows: Sequence[int],
    labels: Sequence[str],
    thresholds: np.ndarray,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics at ``thresholds`` (top level) and at 0.5 (``at_threshold_0.5``), and one prediction record per text."""
    y = label_matrix(gold_sets, labels)
    metrics = multilabel_metrics(y, probs >= thresholds, labels)
    at_half = multilabel_metrics(y, probs >= 0.5, labels)
    metrics["threshold"] = "per label (see thresholds)"
    metrics["thresholds"] = {name: float(t) for name, t in zip(labels, thresholds, strict=True)}
    metrics["at_threshold_0.5"] = {k: at_half[k] for k in HEADLINE}
    order = {name: j for j, name in enumerate(labels)}
    records = []
    for row, text, gold, pred in zip(rows, texts, gold_sets, prediction_rows(probs, labels, thresholds), strict=True):
        gold_sorted = sorted(gold, key=lambda name: order.get(name, len(order)))
        records.append({"row": row, "text": text, "gold": gold_sorted, **pred, "correct": set(pred["labels"]) == set(gold)})
    return metrics, records


def frequent_labels_baseline(data: PreparedMultiLabel) -> dict[str, Any]:
    """Always predict the m most frequent training labels, m the mean label-set size in training (rounded): the floor."""
    y_train = label_matrix(data.train.label_sets, data.labels)
    m = round(float(y_train.sum(axis=1).mean()))
    top = np.argsort(-y_train.sum(axis=0), kind="stable")[:m]
    y_eval = label_matrix(data.eval.label_sets, data.labels)
    pred = np.zeros_like(y_eval)
    pred[:, top] = 1
    full = multilabel_metrics(y_eval, pred, data.labels)
    return {"predicts": [data.labels[j] for j in top], **{k: full[k] for k in HEADLINE}}


def tfidf_ovr_baseline(data: PreparedMultiLabel, seed: int) -> dict[str, Any]:
    """TF-IDF (word 1-2 + char 2-5 grams) + one linear SVM per label on the same split: the classical model to beat."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.svm import LinearSVC

    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    )
    model = make_pipeline(features, OneVsRestClassifier(LinearSVC(C=1.0, random_state=seed)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a label on every training text becomes a constant predictor
        model.fit(data.train.texts, label_matrix(data.train.label_sets, data.labels))
    full = multilabel_metrics(label_matrix(data.eval.label_sets, data.labels), model.predict(data.eval.texts), data.labels)
    return {"model": "tfidf-word1-2+char2-5 one-vs-rest linear-svm", **{k: full[k] for k in HEADLINE}}


def write_thresholds(model_dir: Path, labels: Sequence[str], thresholds: np.ndarray, tuned_on: str) -> None:
    """Write ``tunesmith_multilabel.json``: the label names and the decision threshold of each."""
    from tunesmith.training.rundir import atomic_write_text

    content = {"labels": list(labels), "thresholds": {n: float(t) for n, t in zip(labels, thresholds, strict=True)}, "tuned_on": tuned_on}
    atomic_write_text(Path(model_dir) / THRESHOLDS_FILE, json.dumps(content, indent=2) + "\n")


def read_thresholds(model_dir: Path, labels: Sequence[str]) -> np.ndarray:
    """The saved threshold of each label; 0.5 for a label (or a whole model) without one."""
    path = Path(model_dir) / THRESHOLDS_FILE
    saved = json.loads(path.read_text(encoding="utf-8"))["thresholds"] if path.is_file() else {}
    return np.array([float(saved.get(name, 0.5)) for name in labels])


def save_extras(model_dir: Path, data: PreparedMultiLabel) -> None:
    """Thresholds of 0.5 so the model directory is complete at once; :func:`evaluate` replaces them with tuned ones."""
    write_thresholds(model_dir, data.labels, np.full(len(data.labels), 0.5), "not tuned (0.5)")


def evaluate(model, tokenizer, data: PreparedMultiLabel, config: RunConfig, precision: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Tune per-label thresholds on the eval set, save them beside the model, and score beside the baselines."""
    from tunesmith.training.rundir import MODEL

    probs = predict_proba(
        model,
        tokenizer,
        data.eval.texts,
        max_length=config.data.max_length,
        batch_size=config.training.eval_batch_size,
        precision=precision,
    )
    thresholds = tune_thresholds(label_matrix(data.eval.label_sets, data.labels), probs)
    tuned_on = f"the run's eval set ({len(data.eval)} texts, {data.report.get('split', '')})"
    if config.out:
        write_thresholds(Path(config.out) / MODEL, data.labels, thresholds, tuned_on)
    metrics, records = score(probs, data.eval.label_sets, data.eval.texts, data.eval.rows, data.labels, thresholds)
    metrics["thresholds_tuned_on"] = f"{tuned_on}: the tuned scores here are optimistic, at_threshold_0.5 is not"
    metrics["frequent_labels_baseline"] = frequent_labels_baseline(data)
    if config.training.baseline:
        metrics["tfidf_ovr_baseline"] = tfidf_ovr_baseline(data, config.training.seed)
    return metrics, records


class MultiLabelPredictor:
    """A trained multi-label classifier with its per-label thresholds: ``predict`` texts, ``evaluate`` a labelled file."""

    def __init__(self, model_dir: Path, config: RunConfig):
        from transformers import AutoModelForSequenceClassification

        self.config = config
        self.tokenizer, self.model, self.precision = load_trained(model_dir, AutoModelForSequenceClassification)
        id2label = self.model.config.id2label
        self.labels = [id2label[i] for i in range(len(id2label))]
        self.thresholds = read_thresholds(model_dir, self.labels)

    def _proba(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        return predict_proba(
            self.model,
            self.tokenizer,
            list(texts),
            max_length=self.config.data.max_length,
            batch_size=batch_size or self.config.training.eval_batch_size,
            precision=self.precision,
        )

    def predict(self, texts: Sequence[str], *, batch_size: int | None = None) -> list[dict[str, Any]]:
        if not texts:
            return []
        return prediction_rows(self._proba(texts, batch_size), self.labels, self.thresholds)

    def evaluate(self, source: str, *, text_col: str | None, label_col: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        d = self.config.data
        data = load_label_sets(source, text_col, label_col, label_sep=d.label_sep, encoding=d.encoding)
        check_known_labels(data, self.labels, "this run")
        metrics, records = score(self._proba(data.texts), data.label_sets, data.texts, data.rows, self.labels, self.thresholds)
        metrics["thresholds_tuned_on"] = "the training run's eval set"
        return metrics, records


TASK = Task(
    name="multilabel",
    summary="a set of labels per text (topics, tags, toxicity types); `classify --multi-label`",
    metrics={"micro_f1": True, "macro_f1": True, "weighted_f1": True, "samples_f1": True, "subset_accuracy": True, "hamming_loss": False},
    prepare=prepare,
    build_model=build_model,
    encode=encode,
    make_loss=make_loss,
    make_compute_metrics=make_compute_metrics,
    evaluate=evaluate,
    load_predictor=MultiLabelPredictor,
    save_extras=save_extras,
)
