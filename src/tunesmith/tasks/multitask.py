"""Multi-task fine-tuning: one shared encoder, several heads (classify or regress), each on its own data.

Every example carries ``labels = [head index, target]`` (a class id, or the head's standardised
target), so batches mix heads and the Trainer sees one dataset. The model's ``logits`` are every
head's outputs side by side; the loss is the weighted mean of the losses of the heads present in
the batch. The saved ``model/`` is the plain encoder (a valid ``--model`` for any other task); the
heads sit beside it in ``multitask_heads.safetensors`` and their labels or target statistics in
``tunesmith_multitask.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tunesmith.config import HeadConfig, RunConfig
from tunesmith.data import PreparedData
from tunesmith.data.targets import PreparedTargets
from tunesmith.errors import UserError
from tunesmith.evaluate.metrics import classification_metrics, regression_metrics
from tunesmith.tasks import classify, regress
from tunesmith.tasks.base import Encoded, EncodedDataset, Task, encode_texts, load_pretrained, load_trained
from tunesmith.tasks.inference import batched_logits, softmax
from tunesmith.tasks.regress import Scaler

HEADS_FILE = "multitask_heads.safetensors"
META_FILE = "tunesmith_multitask.json"
SCORE_METRIC = {"classify": "macro_f1", "regress": "pearson"}


@dataclass(frozen=True)
class HeadSpec:
    """What the model needs to know of a head: its output width and how its loss is computed."""

    name: str
    type: str  # "classify" or "regress"
    width: int  # number of classes, or 1
    weight: float = 1.0
    class_weights: tuple[float, ...] | None = None


def head_slices(specs: Sequence[HeadSpec]) -> list[slice]:
    """The columns of each head in the concatenated logits."""
    slices, start = [], 0
    for spec in specs:
        slices.append(slice(start, start + spec.width))
        start += spec.width
    return slices


def head_score(kind: str, metrics: dict[str, Any]) -> float:
    """A head's contribution to ``score``: macro-F1 (classify) or the Pearson correlation floored at 0 (regress)."""
    return float(metrics["macro_f1"]) if kind == "classify" else max(0.0, float(metrics["pearson"]))


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states over the attention mask.

    Mean rather than [CLS]: sentence-transformer checkpoints (minilm, mpnet) are trained for mean
    pooling, and their [CLS] state alone is a poor sentence vector.
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def multitask_loss(logits: torch.Tensor, labels: torch.Tensor, specs: Sequence[HeadSpec], label_smoothing: float = 0.0) -> torch.Tensor:
    """Weighted mean over the heads present in the batch of each head's loss on its own examples.

    Cross-entropy for classify heads, MSE on the standardised target for regress heads. Masks
    instead of boolean indexing, so the loss never waits on the device to count a head's rows.
    """
    head_ids = labels[:, 0].round().long()
    targets = labels[:, 1].float()
    total = logits.new_zeros((), dtype=torch.float32)
    weight_sum = logits.new_zeros((), dtype=torch.float32)
    for h, (spec, cols) in enumerate(zip(specs, head_slices(specs), strict=True)):
        out = logits[:, cols].float()
        mask = head_ids == h
        maskf = mask.float()
        if spec.type == "classify":
            classes = torch.where(mask, targets.round().long(), 0)
            w = torch.tensor(spec.class_weights, device=out.device) if spec.class_weights else None
            per = F.cross_entropy(out, classes, weight=w, label_smoothing=label_smoothing, reduction="none")
            denom = (w[classes] * maskf).sum() if w is not None else maskf.sum()
        else:
            per = (out[:, 0] - targets) ** 2
            denom = maskf.sum()
        present = (maskf.sum() > 0).float()
        total = total + spec.weight * present * (per * maskf).sum() / denom.clamp(min=1e-12)
        weight_sum = weight_sum + spec.weight * present
    return total / weight_sum.clamp(min=1e-12)


class MultiTaskModel(torch.nn.Module):
    """A transformers encoder (``AutoModel``), mean pooling, dropout and one linear layer per head."""

    # training.methods counts `encoder.*` as the pre-trained body and everything else as head
    base_model_prefix = "encoder"

    def __init__(self, encoder: torch.nn.Module, specs: Sequence[HeadSpec], dropout: float = 0.1, label_smoothing: float = 0.0):
        super().__init__()
        self.encoder = encoder
        self.specs = list(specs)
        self.label_smoothing = label_smoothing
        self.dropout = torch.nn.Dropout(dropout)
        hidden = encoder.config.hidden_size
        # a list, not a ModuleDict: a head named `keys` or `update` would clash with ModuleDict's methods
        self.heads = torch.nn.ModuleList(torch.nn.Linear(hidden, spec.width) for spec in self.specs)

    @property
    def config(self):
        return self.encoder.config

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        pooled = self.dropout(mean_pool(hidden, attention_mask))
        logits = torch.cat([head(pooled) for head in self.heads], dim=-1)
        loss = multitask_loss(logits, labels, self.specs, self.label_smoothing) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, path, **kwargs) -> None:
        """The encoder as a plain transformers model, the heads beside it (keyed by head name)."""
        from safetensors.torch import save_file

        self.encoder.save_pretrained(path, **kwargs)
        tensors = {
            f"{spec.name}.{key}": value.contiguous()
            for spec, head in zip(self.specs, self.heads, strict=True)
            for key, value in head.state_dict().items()
        }
        save_file(tensors, str(Path(path) / HEADS_FILE))

    def load_heads(self, model_dir: Path) -> None:
        from safetensors.torch import load_file

        tensors = load_file(str(Path(model_dir) / HEADS_FILE))
        for spec, head in zip(self.specs, self.heads, strict=True):
            head.load_state_dict({key: tensors[f"{spec.name}.{key}"] for key in ("weight", "bias")})


class HeadSlice(torch.nn.Module):
    """One head's logits of a multi-task model, as a model of its own: classify/regress scoring runs on it unchanged."""

    def __init__(self, model: MultiTaskModel, columns: slice):
        super().__init__()
        self.model = model
        self.columns = columns

    def forward(self, **inputs):
        from transformers.modeling_outputs import SequenceClassifierOutput

        return SequenceClassifierOutput(logits=self.model(**inputs).logits[:, self.columns])


# ---------------------------------------------------------------- data


@dataclass
class HeadData:
    """One head's prepared data, the run config it is scored with, and its examples in one training epoch."""

    head: HeadConfig
    config: RunConfig  # the run's config with this head's data section (and task)
    data: PreparedData | PreparedTargets
    order: list[int]  # indices into data.train: one epoch of this head (repeats when oversampled)

    @property
    def width(self) -> int:
        return len(self.data.labels) if isinstance(self.data, PreparedData) else 1

    @property
    def scaler(self) -> Scaler:
        return Scaler.fit(self.data.names, self.data.train.targets)

    def targets(self, split) -> list[float]:
        """The second label value of each example: class id, or the standardised target."""
        if isinstance(self.data, PreparedData):
            label_id = {name: i for i, name in enumerate(self.data.labels)}
            return [float(label_id[label]) for label in split.labels]
        return [float(z) for z in self.scaler.transform(split.targets)[:, 0]]

    def spec(self, config: RunConfig) -> HeadSpec:
        weights = None
        if isinstance(self.data, PreparedData) and config.training.class_weights == "auto":
            weights = tuple(classify.class_weights(self.data.train.labels, self.data.labels).tolist())
        return HeadSpec(self.head.name, self.head.type, self.width, self.head.weight, weights)


@dataclass
class PreparedMultitask:
    """Every head's data; ``train``/``eval`` list (head index, example index) pairs of one epoch and of the eval splits."""

    heads: list[HeadData]
    train: list[tuple[int, int]]
    eval: list[tuple[int, int]]
    report: dict[str, Any]


def head_run_config(config: RunConfig, head: HeadConfig) -> RunConfig:
    """The run config as a single-task run on this head's data (its columns and files override ``data``)."""
    d = config.data
    train = head.train or d.train
    # the shared eval file belongs to the shared training data; a head on other data holds out its own split
    evaluation = head.eval or (d.eval if train == d.train else None)
    data = d.model_copy(
        update={"train": train, "eval": evaluation, "text_col": head.text_col or d.text_col, "label_col": head.label_col or d.label_col}
    )
    return config.model_copy(update={"task": head.type, "data": data, "heads": []})


def epoch_counts(sizes: Sequence[int], strategy: str, temperature: float) -> list[int]:
    """Examples of each head in one epoch of ``sum(sizes)`` examples, shares proportional to ``n ** (1 / T)``."""
    if strategy == "proportional":
        return list(sizes)
    weights = np.asarray(sizes, dtype=np.float64) ** (1.0 / temperature)
    exact = sum(sizes) * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    # largest remainders get the examples rounding left over, so the epoch keeps its size
    for i in np.argsort(counts - exact)[: sum(sizes) - counts.sum()]:
        counts[i] += 1
    return [max(1, int(c)) for c in counts]


def sample_order(n: int, count: int, rng: np.random.Generator) -> list[int]:
    """``count`` indices of ``range(n)``: every one ``count // n`` times, plus a draw without replacement for the rest."""
    return sorted(list(range(n)) * (count // n) + rng.choice(n, count % n, replace=False).tolist())


def prepare(config: RunConfig) -> PreparedMultitask:
    """Prepare each head as its own classify/regress run would, then lay out one training epoch."""
    heads = []
    for head in config.heads:
        head_config = head_run_config(config, head)
        try:
            data = classify.prepare(head_config) if head.type == "classify" else regress.prepare(head_config)
        except UserError as exc:
            raise UserError(f"head {head.name!r}: {exc}") from None
        if isinstance(data, PreparedTargets) and len(data.names) != 1:
            raise UserError(
                f"head {head.name!r}: a regress head predicts one target, got columns {', '.join(data.names)}; declare one head per target"
            )
        heads.append(HeadData(head, head_config, data, []))

    t = config.training
    sizes = [len(h.data.train) for h in heads]
    counts = epoch_counts(sizes, t.task_sampling, t.sampling_temperature)
    rng = np.random.default_rng(t.seed)
    for h, count in zip(heads, counts, strict=True):
        h.order = sample_order(len(h.data.train), count, rng)
    train = [(i, j) for i, h in enumerate(heads) for j in h.order]
    evaluation = [(i, j) for i, h in enumerate(heads) for j in range(len(h.data.eval))]
    sampling = {
        "strategy": t.task_sampling,
        **({"temperature": t.sampling_temperature} if t.task_sampling == "temperature" else {}),
        "epoch_size": len(train),
        "heads": {
            h.head.name: {
                "train_examples": n,
                "per_epoch": c,
                "share": round(c / len(train), 4),
                "natural_share": round(n / sum(sizes), 4),
                # the draw is fixed for the run: a down-sampled head never sees these examples
                "never_seen": len(set(range(n)) - set(h.order)),
            }
            for h, n, c in zip(heads, sizes, counts, strict=True)
        },
    }
    report = {
        "heads": {h.head.name: {"type": h.head.type, "weight": h.head.weight, **h.data.report} for h in heads},
        "sampling": sampling,
        "split": "per head: " + "; ".join(f"{h.head.name}: {h.data.report.get('split', '')}" for h in heads),
        "train_size": len(train),
        "eval_size": len(evaluation),
        "duplicates_removed": sum(h.data.report.get("duplicates_removed", 0) for h in heads),
    }
    return PreparedMultitask(heads, train, evaluation, report)


def build_model(config: RunConfig, data: PreparedMultitask):
    from transformers import AutoModel

    tokenizer, encoder = load_pretrained(config, AutoModel)
    dropout = config.model.dropout if config.model.dropout is not None else getattr(encoder.config, "hidden_dropout_prob", 0.1)
    specs = [h.spec(config) for h in data.heads]
    return tokenizer, MultiTaskModel(encoder, specs, dropout=dropout, label_smoothing=config.training.label_smoothing)


def encode(tokenizer, data: PreparedMultitask, config: RunConfig) -> Encoded:
    """Tokenize each head's splits once; the training epoch repeats or drops examples as the sampling says."""
    train, evaluation, truncated = [], [], {"train": 0, "eval": 0}
    for i, h in enumerate(data.heads):
        features, cut = encode_texts(tokenizer, h.data.train.texts, config.data.max_length)
        truncated["train"] += cut
        targets = h.targets(h.data.train)
        train += [{**features[j], "labels": [float(i), targets[j]]} for j in h.order]
        features, cut = encode_texts(tokenizer, h.data.eval.texts, config.data.max_length)
        truncated["eval"] += cut
        evaluation += [{**f, "labels": [float(i), t]} for f, t in zip(features, h.targets(h.data.eval), strict=True)]
    return Encoded(EncodedDataset(train), EncodedDataset(evaluation), truncated)


def make_loss(config: RunConfig, data: PreparedMultitask) -> Callable | None:
    return None  # the model computes the weighted sum over heads itself (it knows each head's columns)


def make_compute_metrics(data: PreparedMultitask) -> Callable:
    """Per-head metrics (``<head>_macro_f1``, ``<head>_rmse``, ...) and ``score``, rows picked by ``label_ids[:, 0]``."""
    specs = [HeadSpec(h.head.name, h.head.type, h.width) for h in data.heads]
    scalers = [h.scaler if h.head.type == "regress" else None for h in data.heads]

    def compute(pred) -> dict[str, float]:
        logits = np.asarray(pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions)
        label_ids = np.asarray(pred.label_ids)
        head_ids = np.rint(label_ids[:, 0]).astype(int)
        out: dict[str, float] = {}
        scores = []
        for i, (spec, cols, h) in enumerate(zip(specs, head_slices(specs), data.heads, strict=True)):
            rows = head_ids == i
            if not rows.any():
                continue
            if spec.type == "classify":
                m = classification_metrics(np.rint(label_ids[rows, 1]).astype(int), logits[rows, cols].argmax(axis=-1), h.data.labels)
                keys = ("macro_f1", "accuracy")
            else:
                scaler = scalers[i]
                m = regression_metrics(scaler.inverse(label_ids[rows, 1:2]), scaler.inverse(logits[rows, cols]), scaler.names)
                keys = ("rmse", "pearson")
            out.update({f"{spec.name}_{k}": float(m[k]) for k in keys})
            scores.append(head_score(spec.type, m))
        return {"score": float(np.mean(scores)) if scores else 0.0, **out}

    return compute


def combined(per_head: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The run-level metrics: ``score`` (mean of the heads' scores), the total n and every head's metrics."""
    return {
        "score": float(np.mean([m["score"] for m in per_head.values()])),
        "n": sum(int(m["n"]) for m in per_head.values()),
        "per_head": per_head,
    }


def evaluate(model, tokenizer, data: PreparedMultitask, config: RunConfig, precision: str):
    """Each head scored on its eval split as its own classify/regress run would be, baselines included."""
    per_head, records = {}, []
    for h, cols in zip(data.heads, head_slices(model.specs), strict=True):
        scorer = classify.evaluate if h.head.type == "classify" else regress.evaluate
        metrics, head_records = scorer(HeadSlice(model, cols), tokenizer, h.data, h.config, precision)
        per_head[h.head.name] = _head_metrics(h.head.type, h.head.weight, metrics)
        records += [{"head": h.head.name, **r} for r in head_records]
    return combined(per_head), records


def _head_metrics(kind: str, weight: float, metrics: dict[str, Any]) -> dict[str, Any]:
    return {"task": kind, "weight": weight, "score_metric": SCORE_METRIC[kind], "score": head_score(kind, metrics), **metrics}


def save_extras(model_dir: Path, data: PreparedMultitask) -> None:
    heads = []
    for h in data.heads:
        entry: dict[str, Any] = {"name": h.head.name, "type": h.head.type, "weight": h.head.weight, "text_col": h.data.train.text_col}
        if isinstance(h.data, PreparedData):
            entry.update(label_col=h.data.train.label_col, labels=h.data.labels)
        else:
            entry.update(label_col=h.data.names[0], scaler=h.scaler.to_json())
        heads.append(entry)
    meta = {"pooling": "mean", "heads": heads}
    (Path(model_dir) / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- inference


class MultitaskPredictor:
    """A trained multi-task model: every head's prediction for each text."""

    def __init__(self, model_dir: Path, config: RunConfig):
        from transformers import AutoModel

        self.config = config
        self.heads: list[dict[str, Any]] = json.loads((Path(model_dir) / META_FILE).read_text(encoding="utf-8"))["heads"]
        self.tokenizer, encoder, self.precision = load_trained(model_dir, AutoModel)
        specs = [HeadSpec(h["name"], h["type"], len(h["labels"]) if h["type"] == "classify" else 1) for h in self.heads]
        self.model = MultiTaskModel(encoder, specs, dropout=0.0)
        self.model.load_heads(model_dir)
        self.model.eval()
        self.scalers = {h["name"]: Scaler(**h["scaler"]) for h in self.heads if h["type"] == "regress"}
        self.labels = [h["name"] for h in self.heads]

    def _logits(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        return batched_logits(
            self.model,
            self.tokenizer,
            list(texts),
            max_length=self.config.data.max_length,
            batch_size=batch_size or self.config.training.eval_batch_size,
            precision=self.precision,
        )

    def predict(self, texts: Sequence[str], *, batch_size: int | None = None) -> list[dict[str, Any]]:
        """``{"heads": {name: {"label", "score", "probabilities"} or {"value"}}}`` per text.

        Nested under ``heads`` so no head name can collide with the record's own keys (``text``, ``row``).
        """
        if not texts:
            return []
        logits = self._logits(texts, batch_size)
        rows: list[dict[str, Any]] = [{"heads": {}} for _ in texts]
        for h, cols in zip(self.heads, head_slices(self.model.specs), strict=True):
            if h["type"] == "classify":
                preds = classify.prediction_rows(softmax(logits[:, cols]), h["labels"])
            else:
                preds = [{"value": float(v)} for v in self.scalers[h["name"]].inverse(logits[:, cols])[:, 0]]
            for row, p in zip(rows, preds, strict=True):
                row["heads"][h["name"]] = p
        return rows

    def _label_columns(self, label_col: str | None) -> dict[str, str]:
        """Each head's label column: the one it was trained on, or ``--label-col HEAD=COLUMN,...``."""
        columns = {h["name"]: h["label_col"] for h in self.heads}
        if label_col is None or label_col == self.config.data.label_col:
            return columns
        for pair in label_col.split(","):
            name, sep, column = (part.strip() for part in pair.partition("="))
            if not sep or name not in columns or not column:
                raise UserError(
                    f"--label-col {label_col!r}: a multitask run maps heads to columns as HEAD=COLUMN[,HEAD=COLUMN]; "
                    f"its heads are {', '.join(columns)}; without --label-col each head reads the column it was trained on "
                    f"({', '.join(f'{n}: {c!r}' for n, c in columns.items())})"
                )
            columns[name] = column
        return columns

    def evaluate(self, source: str, *, text_col: str | None, label_col: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Score every head whose label column ``source`` holds; the others are listed under ``skipped_heads``.

        Each head reads the text and label columns it was trained on (``--text-col`` overrides the
        text column of all heads, ``--label-col HEAD=COLUMN`` a head's label column).
        """
        from tunesmith.data import load_texts
        from tunesmith.data.loading import read_table
        from tunesmith.data.packaged import PACKAGED, packaged_path
        from tunesmith.data.targets import load_targets

        packaged = source in PACKAGED and not Path(source).exists()
        found = {
            c.casefold() for c in read_table(packaged_path(source) if packaged else source, encoding=self.config.data.encoding).columns
        }
        columns = self._label_columns(label_col)
        own_text = text_col if text_col != self.config.data.text_col else None
        per_head, records, skipped = {}, [], {}
        for h, cols in zip(self.heads, head_slices(self.model.specs), strict=True):
            name, column = h["name"], columns[h["name"]]
            if column.casefold() not in found:
                skipped[name] = f"no column {column!r}"
                continue
            texts_col = own_text or (h["text_col"] if h["text_col"].casefold() in found else None)
            view = HeadSlice(self.model, cols)
            if h["type"] == "classify":
                texts = load_texts(source, texts_col, column, encoding=self.config.data.encoding)
                unknown = sorted(set(texts.labels) - set(h["labels"]))
                if unknown:
                    raise UserError(
                        f"{source}: head {name!r}: label(s) {', '.join(map(repr, unknown[:10]))} were never seen in training; "
                        f"it knows {', '.join(map(repr, h['labels']))}"
                    )
                metrics, head_records, _ = classify.score_texts(
                    view,
                    self.tokenizer,
                    texts.texts,
                    texts.labels,
                    h["labels"],
                    max_length=self.config.data.max_length,
                    batch_size=self.config.training.eval_batch_size,
                    precision=self.precision,
                    rows=texts.rows,
                )
            else:
                targets = load_targets(source, texts_col, [column], encoding=self.config.data.encoding)
                scaler = self.scalers[name]
                values = scaler.inverse(self._logits(targets.texts)[:, cols])
                metrics = regression_metrics(targets.targets, values, scaler.names)
                head_records = [
                    {"row": r, "text": t, "gold": {scaler.names[0]: float(g[0])}, **p}
                    for r, t, g, p in zip(
                        targets.rows, targets.texts, targets.targets, regress.prediction_rows(values, scaler.names), strict=True
                    )
                ]
            per_head[name] = _head_metrics(h["type"], h["weight"], metrics)
            records += [{"head": name, **r} for r in head_records]
        if not per_head:
            wanted = ", ".join(f"{n} ({columns[n]!r})" for n in columns)
            raise UserError(
                f"{source} holds none of the heads' label columns: {wanted}; rename the columns, "
                "or map heads to columns with --label-col HEAD=COLUMN[,HEAD=COLUMN]"
            )
        return {**combined(per_head), **({"skipped_heads": skipped} if skipped else {})}, records


TASK = Task(
    name="multitask",
    summary="one shared encoder, several classify/regress heads, each on its own data",
    metrics={"score": True},
    prepare=prepare,
    build_model=build_model,
    encode=encode,
    make_loss=make_loss,
    make_compute_metrics=make_compute_metrics,
    evaluate=evaluate,
    load_predictor=MultitaskPredictor,
    save_extras=save_extras,
    peft_task_type="FEATURE_EXTRACTION",
)
