"""Text classification: what is particular to it (labels, head, loss, metrics, predictions).

The generic run (Trainer wiring, checkpoints, run directory) lives in :mod:`tunesmith.training`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tunesmith.config import RunConfig
from tunesmith.data import PreparedData, prepare_classification
from tunesmith.evaluate.metrics import classification_metrics, majority_baseline
from tunesmith.tasks.inference import batched_logits, softmax

NAME = "classify"


class EncodedDataset(torch.utils.data.Dataset):
    """Tokenized examples as plain lists; the collator pads each batch to its own longest text."""

    def __init__(self, features: list[dict[str, Any]]):
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.features[i]


@dataclass
class Encoded:
    train: EncodedDataset
    eval: EncodedDataset
    truncated: dict[str, int]  # texts longer than max_length, per split


def prepare(config: RunConfig) -> PreparedData:
    """Load, validate, dedupe and split the data (raises UserError on bad input)."""
    return prepare_classification(config.data, seed=config.training.seed)


def model_kwargs(labels: Sequence[str]) -> dict[str, Any]:
    """Arguments for ``AutoModelForSequenceClassification.from_pretrained`` that fix the label set."""
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
    }


def encode(tokenizer, data: PreparedData, max_length: int) -> Encoded:
    """Tokenize both splits once (no padding: batches are padded as they are drawn)."""
    label_id = {name: i for i, name in enumerate(data.labels)}
    splits = {}
    truncated = {}
    for split, texts in (("train", data.train), ("eval", data.eval)):
        enc = tokenizer(texts.texts, truncation=False)
        feats = []
        n_trunc = 0
        for i, ids in enumerate(enc["input_ids"]):
            if len(ids) > max_length:
                n_trunc += 1
            feat = {k: enc[k][i][:max_length] for k in enc}
            if len(ids) > max_length:
                # keep the closing special token the model was pre-trained with
                feat["input_ids"][-1] = ids[-1]
            feat["labels"] = label_id[texts.labels[i]]
            feats.append(feat)
        splits[split] = EncodedDataset(feats)
        truncated[split] = n_trunc
    return Encoded(splits["train"], splits["eval"], truncated)


def class_weights(train_labels: Sequence[str], labels: Sequence[str]) -> torch.Tensor:
    """Inverse-frequency weights, normalised so a balanced set gets weight 1 everywhere."""
    counts = Counter(train_labels)
    n, k = len(train_labels), len(labels)
    return torch.tensor([n / (k * counts[name]) for name in labels], dtype=torch.float32)


def make_loss(weights: torch.Tensor | None, label_smoothing: float) -> Callable:
    """A ``compute_loss_func`` for the Trainer: cross-entropy with optional class weights and smoothing."""

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        w = weights.to(logits.device) if weights is not None else None
        return F.cross_entropy(logits.float(), labels, weight=w, label_smoothing=label_smoothing)

    return loss


def make_compute_metrics(labels: Sequence[str]) -> Callable:
    """Trainer ``compute_metrics``: scores against ``label_ids``, which stay aligned with the predictions.

    The eval sampler may reorder examples when batches are grouped by length, so the dataset's own
    label column must never be used here.
    """

    def compute(pred) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        m = classification_metrics(pred.label_ids, np.argmax(logits, axis=-1), labels)
        return {k: m[k] for k in ("accuracy", "macro_f1", "micro_f1", "weighted_f1")}

    return compute


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


def evaluate_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    gold: Sequence[str],
    labels: Sequence[str],
    *,
    train_labels: Sequence[str] | None,
    max_length: int,
    batch_size: int,
    precision: str,
    rows: Sequence[int] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics (with the majority baseline when train labels are known) and one prediction record per text."""
    probs = predict_proba(model, tokenizer, texts, max_length=max_length, batch_size=batch_size, precision=precision)
    label_id = {name: i for i, name in enumerate(labels)}
    y_true = [label_id[g] for g in gold]
    y_pred = probs.argmax(axis=-1).tolist()
    metrics = classification_metrics(y_true, y_pred, labels)
    if train_labels is not None:
        metrics["majority_baseline"] = majority_baseline([label_id[t] for t in train_labels], y_true, labels)
    records = []
    for i, (text, g, pred) in enumerate(zip(texts, gold, prediction_rows(probs, labels))):
        rec = {"row": rows[i] if rows is not None else i + 1, "text": text, "gold": g, **pred, "correct": pred["label"] == g}
        records.append(rec)
    return metrics, records
