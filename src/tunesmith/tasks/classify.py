"""Text classification (one label per text): labels, head, loss, metrics, baselines and prediction.

The generic run (Trainer wiring, checkpoints, run directory) lives in :mod:`tunesmith.training`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tunesmith.config import RunConfig
from tunesmith.data import PreparedData, prepare_classification
from tunesmith.errors import UserError
from tunesmith.evaluate.metrics import classification_metrics, majority_baseline
from tunesmith.tasks.base import Encoded, EncodedDataset, Task, encode_texts, load_pretrained, load_trained
from tunesmith.tasks.inference import batched_logits, softmax


def prepare(config: RunConfig) -> PreparedData:
    """Load, validate, dedupe and split the data, then balance the training split if asked (raises UserError on bad input)."""
    from tunesmith.data.balance import balance
    from tunesmith.data.languages import attach_languages

    data = prepare_classification(config.data, seed=config.training.seed)
    attach_languages(data, config)
    if config.data.balance == "none":
        return data
    # after the split, and on the training side only: resampled copies must never reach eval
    data.train, data.report["balance"] = balance(data.train, config.data.balance, config.training.seed)
    if data.languages:
        data.languages.pop("train")  # resampled: no longer aligned, and only eval languages are used
    data.report["train_size"] = len(data.train)
    data.report["class_counts_train"] = dict(data.report["balance"]["after"])
    return data


def model_kwargs(labels: Sequence[str]) -> dict[str, Any]:
    """Model config arguments that fix the label set (saved with the model, so plain transformers sees names)."""
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}


def build_model(config: RunConfig, data: PreparedData):
    from transformers import AutoModelForSequenceClassification

    return load_pretrained(config, AutoModelForSequenceClassification, **model_kwargs(data.labels))


def encode(tokenizer, data: PreparedData, config: RunConfig) -> Encoded:
    """Tokenize both splits once (no padding: batches are padded as they are drawn)."""
    label_id = {name: i for i, name in enumerate(data.labels)}
    splits, truncated = {}, {}
    for split, texts in (("train", data.train), ("eval", data.eval)):
        features, truncated[split] = encode_texts(tokenizer, texts.texts, config.data.max_length)
        for feat, label in zip(features, texts.labels, strict=True):
            feat["labels"] = label_id[label]
        splits[split] = EncodedDataset(features)
    return Encoded(splits["train"], splits["eval"], truncated)


def class_weights(train_labels: Sequence[str], labels: Sequence[str]) -> torch.Tensor:
    """Inverse-frequency weights, normalised so a balanced set gets weight 1 everywhere."""
    counts = Counter(train_labels)
    n, k = len(train_labels), len(labels)
    return torch.tensor([n / (k * counts[name]) for name in labels], dtype=torch.float32)


def make_loss(config: RunConfig, data: PreparedData) -> Callable:
    """A ``compute_loss_func`` for the Trainer: cross-entropy with optional class weights and smoothing."""
    t = config.training
    weights = class_weights(data.train.labels, data.labels) if t.class_weights == "auto" else None
    smoothing = t.label_smoothing

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        w = weights.to(logits.device) if weights is not None else None
        return F.cross_entropy(logits.float(), labels, weight=w, label_smoothing=smoothing)

    return loss


def make_compute_metrics(data: PreparedData) -> Callable:
    """Trainer ``compute_metrics``: scores against ``label_ids``, which stay aligned with the predictions.

    The eval sampler may reorder examples when batches are grouped by length, so the dataset's own
    label column must never be used here.
    """
    labels = data.labels

    def compute(pred) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        m = classification_metrics(pred.label_ids, np.argmax(logits, axis=-1), labels)
        return {k: m[k] for k in ("accuracy", "macro_f1", "micro_f1", "weighted_f1")}

    return compute


def tfidf_baseline(data: PreparedData, seed: int) -> dict[str, Any]:
    """Headline metrics of TF-IDF + linear SVM on the same split: the classical model to beat."""
    from tunesmith.classic import tfidf_svm_predict

    predicted = tfidf_svm_predict(data.train.texts, data.train.labels, data.eval.texts, seed=seed)
    label_id = {name: i for i, name in enumerate(data.labels)}
    full = classification_metrics([label_id[g] for g in data.eval.labels], [label_id[p] for p in predicted], data.labels)
    return {
        "model": "tfidf-word1-2+char2-5 linear-svm",
        **{k: full[k] for k in ("accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall")},
    }


def predict_proba(model, tokenizer, texts: Sequence[str], *, max_length: int, batch_size: int, precision: str) -> np.ndarray:
    """Class probabilities for each text, in input order."""
    return softmax(batched_logits(model, tokenizer, texts, max_length=max_length, batch_size=batch_size, precision=precision))


def prediction_rows(probs: np.ndarray, labels: Sequence[str]) -> list[dict[str, Any]]:
    """One ``{"label", "score", "probabilities"}`` dict per text."""
    rows = []
    for p in probs:
        best = int(np.argmax(p))
        rows.append({"label": labels[best], "score": float(p[best]), "probabilities": {name: float(p[i]) for i, name in enumerate(labels)}})
    return rows


def score_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    gold: Sequence[str],
    labels: Sequence[str],
    *,
    max_length: int,
    batch_size: int,
    precision: str,
    rows: Sequence[int] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[int]]:
    """Metrics and one prediction record per text; also the gold ids, for baselines."""
    probs = predict_proba(model, tokenizer, texts, max_length=max_length, batch_size=batch_size, precision=precision)
    label_id = {name: i for i, name in enumerate(labels)}
    y_true = [label_id[g] for g in gold]
    metrics = classification_metrics(y_true, probs.argmax(axis=-1).tolist(), labels)
    records = []
    for i, (text, g, pred) in enumerate(zip(texts, gold, prediction_rows(probs, labels), strict=True)):
        records.append({"row": rows[i] if rows is not None else i + 1, "text": text, "gold": g, **pred, "correct": pred["label"] == g})
    return metrics, records, y_true


def evaluate(model, tokenizer, data: PreparedData, config: RunConfig, precision: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Final eval of a trained model, beside the majority-class and TF-IDF + SVM baselines."""
    metrics, records, y_true = score_texts(
        model,
        tokenizer,
        data.eval.texts,
        data.eval.labels,
        data.labels,
        max_length=config.data.max_length,
        batch_size=config.training.eval_batch_size,
        precision=precision,
        rows=data.eval.rows,
    )
    label_id = {name: i for i, name in enumerate(data.labels)}
    metrics["majority_baseline"] = majority_baseline([label_id[t] for t in data.train.labels], y_true, data.labels)
    if data.languages:
        metrics["per_language"] = per_language_metrics(records, data.languages["eval"], data.labels)
    if config.training.baseline:
        metrics["tfidf_svm_baseline"] = tfidf_baseline(data, config.training.seed)
    return metrics, records


def per_language_metrics(records: Sequence[dict[str, Any]], languages: Sequence[str], labels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Accuracy and macro-F1 on each language's eval texts: a multilingual model is only as good as its weakest language."""
    label_id = {name: i for i, name in enumerate(labels)}
    by_lang: dict[str, list[dict[str, Any]]] = {}
    for rec, lang in zip(records, languages, strict=True):
        by_lang.setdefault(lang, []).append(rec)
    out = {}
    for lang, recs in sorted(by_lang.items(), key=lambda kv: -len(kv[1])):
        m = classification_metrics([label_id[r["gold"]] for r in recs], [label_id[r["label"]] for r in recs], labels)
        out[lang] = {"n": m["n"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
    return out


class ClassifyPredictor:
    """A trained classifier: ``predict`` texts, ``evaluate`` a labelled file."""

    def __init__(self, model_dir: Path, config: RunConfig):
        from transformers import AutoModelForSequenceClassification

        self.config = config
        self.tokenizer, self.model, self.precision = load_trained(model_dir, AutoModelForSequenceClassification)
        id2label = self.model.config.id2label
        self.labels = [id2label[i] for i in range(len(id2label))]

    def predict(self, texts: Sequence[str], *, batch_size: int | None = None) -> list[dict[str, Any]]:
        probs = predict_proba(
            self.model,
            self.tokenizer,
            list(texts),
            max_length=self.config.data.max_length,
            batch_size=batch_size or self.config.training.eval_batch_size,
            precision=self.precision,
        )
        return prediction_rows(probs, self.labels)

    def evaluate(self, source: str, *, text_col: str | None, label_col: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from tunesmith.data import load_texts

        texts = load_texts(source, text_col, label_col, encoding=self.config.data.encoding)
        known = set(self.labels)
        unknown = sorted({lab for lab in texts.labels if lab not in known})
        if unknown:
            rows = [r for r, lab in zip(texts.rows, texts.labels, strict=True) if lab not in known][:5]
            raise UserError(
                f"{source}: label(s) {', '.join(map(repr, unknown))} (first at lines {', '.join(map(str, rows))}) were never seen in training; "
                f"this run knows {', '.join(map(repr, self.labels))}"
            )
        metrics, records, _ = score_texts(
            self.model,
            self.tokenizer,
            texts.texts,
            texts.labels,
            self.labels,
            max_length=self.config.data.max_length,
            batch_size=self.config.training.eval_batch_size,
            precision=self.precision,
            rows=texts.rows,
        )
        return metrics, records


TASK = Task(
    name="classify",
    summary="one label per text (sentiment, spam, intent, topic)",
    metrics={"macro_f1": True, "accuracy": True, "weighted_f1": True, "micro_f1": True},
    prepare=prepare,
    build_model=build_model,
    encode=encode,
    make_loss=make_loss,
    make_compute_metrics=make_compute_metrics,
    evaluate=evaluate,
    load_predictor=ClassifyPredictor,
    # Measured together (benchmarks/README.md, issue 10): the lowest of MiniLM's 6 layers fixed makes a step
    # about 1.14x faster, and a fresh head learning at 1e-3 instead of the body's 5e-5 wins the accuracy back
    # after one epoch (SMS spam and TREC, 3 seeds each, within 0.2 points of every layer trained).
    default_head_lr=1e-3,
    auto_freeze_layers=1,
)
