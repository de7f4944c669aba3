"""Regression: one or more numeric targets per text (ratings, scores, intensities).

Targets are standardised with the training mean and standard deviation (the head learns unit-scale
values, whatever the units); the statistics are stored in ``model/tunesmith_targets.json`` and
predictions are returned in the targets' own units.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn.functional as F

from tunesmith.config import RunConfig
from tunesmith.data.targets import PreparedTargets, load_targets, prepare_regression, target_columns
from tunesmith.evaluate.metrics import regression_metrics
from tunesmith.tasks.base import Encoded, EncodedDataset, Task, encode_texts, load_pretrained, load_trained
from tunesmith.tasks.inference import batched_logits

TARGETS_FILE = "tunesmith_targets.json"


class Scaler:
    """Standardisation of targets: ``z = (y - mean) / std``, with std floored for constant targets."""

    def __init__(self, names: Sequence[str], mean: Sequence[float], std: Sequence[float]):
        self.names = list(names)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.maximum(np.asarray(std, dtype=np.float64), 1e-8)

    @classmethod
    def fit(cls, names: Sequence[str], targets: np.ndarray) -> Scaler:
        return cls(names, targets.mean(axis=0), targets.std(axis=0))

    def transform(self, y: np.ndarray) -> np.ndarray:
        return (y - self.mean) / self.std

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return z * self.std + self.mean

    def to_json(self) -> dict[str, Any]:
        return {"names": self.names, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def load(cls, model_dir: Path) -> Scaler:
        d = json.loads((Path(model_dir) / TARGETS_FILE).read_text(encoding="utf-8"))
        return cls(d["names"], d["mean"], d["std"])


def prepare(config: RunConfig) -> PreparedTargets:
    return prepare_regression(config.data, seed=config.training.seed)


def build_model(config: RunConfig, data: PreparedTargets):
    from transformers import AutoModelForSequenceClassification

    names = data.names
    return load_pretrained(
        config,
        AutoModelForSequenceClassification,
        num_labels=len(names),
        problem_type="regression",
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )


def encode(tokenizer, data: PreparedTargets, config: RunConfig) -> Encoded:
    scaler = Scaler.fit(data.names, data.train.targets)
    splits, truncated = {}, {}
    for split, part in (("train", data.train), ("eval", data.eval)):
        features, truncated[split] = encode_texts(tokenizer, part.texts, config.data.max_length)
        for feat, z in zip(features, scaler.transform(part.targets), strict=True):
            feat["labels"] = [float(v) for v in z]
        splits[split] = EncodedDataset(features)
    return Encoded(splits["train"], splits["eval"], truncated)


def make_loss(config: RunConfig, data: PreparedTargets) -> Callable:
    """Mean squared error on the standardised targets (each target weighs the same)."""

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        return F.mse_loss(logits.float(), labels.float().view_as(logits))

    return loss


def make_compute_metrics(data: PreparedTargets) -> Callable:
    """Metrics in the targets' own units, scored against ``label_ids`` (order-safe)."""
    scaler = Scaler.fit(data.names, data.train.targets)

    def compute(pred) -> dict[str, float]:
        z_pred = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        y_true = scaler.inverse(np.asarray(pred.label_ids).reshape(len(z_pred), -1))
        m = regression_metrics(y_true, scaler.inverse(np.asarray(z_pred).reshape(len(z_pred), -1)), scaler.names)
        return {k: m[k] for k in ("rmse", "mae", "mse", "r2", "pearson", "spearman")}

    return compute


def predict_values(
    model, tokenizer, texts: Sequence[str], scaler: Scaler, *, max_length: int, batch_size: int, precision: str
) -> np.ndarray:
    z = batched_logits(model, tokenizer, texts, max_length=max_length, batch_size=batch_size, precision=precision)
    return scaler.inverse(z.reshape(len(texts), -1))


def prediction_rows(values: np.ndarray, names: Sequence[str]) -> list[dict[str, Any]]:
    """``{"value": v}`` for one target, plus ``{"values": {name: v}}`` always."""
    rows = []
    for v in values:
        row: dict[str, Any] = {"values": {n: float(x) for n, x in zip(names, v, strict=True)}}
        if len(names) == 1:
            row["value"] = float(v[0])
        rows.append(row)
    return rows


def _score(model, tokenizer, texts, targets: np.ndarray, rows, scaler: Scaler, config: RunConfig, precision: str):
    values = predict_values(
        model, tokenizer, texts, scaler, max_length=config.data.max_length, batch_size=config.training.eval_batch_size, precision=precision
    )
    metrics = regression_metrics(targets, values, scaler.names)
    records = [
        {"row": r, "text": t, "gold": dict(zip(scaler.names, map(float, g), strict=True)), **p}
        for r, t, g, p in zip(rows, texts, targets, prediction_rows(values, scaler.names), strict=True)
    ]
    return metrics, records


def tfidf_ridge_baseline(data: PreparedTargets) -> dict[str, Any]:
    """TF-IDF (word + char n-grams) + ridge regression on the same split: the classical model to beat."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    )
    model = make_pipeline(features, Ridge(alpha=1.0))
    model.fit(data.train.texts, data.train.targets)
    m = regression_metrics(data.eval.targets, model.predict(data.eval.texts), data.names)
    return {"model": "tfidf-word1-2+char2-5 ridge", **{k: m[k] for k in ("rmse", "mae", "r2", "pearson", "spearman")}}


def evaluate(model, tokenizer, data: PreparedTargets, config: RunConfig, precision: str):
    """Final eval beside the mean predictor and TF-IDF + ridge."""
    scaler = Scaler.fit(data.names, data.train.targets)
    metrics, records = _score(model, tokenizer, data.eval.texts, data.eval.targets, data.eval.rows, scaler, config, precision)
    mean_pred = np.broadcast_to(data.train.targets.mean(axis=0), data.eval.targets.shape)
    base = regression_metrics(data.eval.targets, mean_pred, data.names)
    metrics["mean_baseline"] = {"predicts": "the training mean", **{k: base[k] for k in ("rmse", "mae", "r2")}}
    if config.training.baseline:
        metrics["tfidf_ridge_baseline"] = tfidf_ridge_baseline(data)
    return metrics, records


def save_extras(model_dir: Path, data: PreparedTargets) -> None:
    scaler = Scaler.fit(data.names, data.train.targets)
    (Path(model_dir) / TARGETS_FILE).write_text(json.dumps(scaler.to_json(), indent=2) + "\n", encoding="utf-8")


class RegressPredictor:
    """A trained regressor: values in the targets' own units."""

    def __init__(self, model_dir: Path, config: RunConfig):
        from transformers import AutoModelForSequenceClassification

        self.config = config
        self.tokenizer, self.model, self.precision = load_trained(model_dir, AutoModelForSequenceClassification)
        self.scaler = Scaler.load(model_dir)
        self.labels = self.scaler.names

    def predict(self, texts: Sequence[str], *, batch_size: int | None = None) -> list[dict[str, Any]]:
        values = predict_values(
            self.model,
            self.tokenizer,
            list(texts),
            self.scaler,
            max_length=self.config.data.max_length,
            batch_size=batch_size or self.config.training.eval_batch_size,
            precision=self.precision,
        )
        return prediction_rows(values, self.scaler.names)

    def evaluate(self, source: str, *, text_col: str | None, label_col: str | None):
        cols = target_columns(label_col) or self.scaler.names
        data = load_targets(source, text_col, cols, encoding=self.config.data.encoding)
        return _score(self.model, self.tokenizer, data.texts, data.targets, data.rows, self.scaler, self.config, self.precision)


TASK = Task(
    name="regress",
    summary="one or more numeric targets per text (ratings, scores)",
    metrics={"rmse": False, "mae": False, "mse": False, "r2": True, "pearson": True, "spearman": True},
    prepare=prepare,
    build_model=build_model,
    encode=encode,
    make_loss=make_loss,
    make_compute_metrics=make_compute_metrics,
    evaluate=evaluate,
    load_predictor=RegressPredictor,
    save_extras=save_extras,
)
