"""What every task provides to the generic run, as one explicit record per task.

A task module (``classify.py``, ``regress.py``, ...) defines its functions and ends with
``TASK = Task(...)``; :data:`tunesmith.tasks.TASKS` maps names to those records. The runner and
``Run`` call only these fields, so a new task never forks the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch


class Prepared(Protocol):
    """Loaded, validated and split data: ``train``/``eval`` are sized, ``report`` is JSON for data.json."""

    train: Any
    eval: Any
    report: dict[str, Any]


class Predictor(Protocol):
    """A trained model ready for inference, as ``Run`` uses it."""

    def predict(self, texts: Sequence[str], *, batch_size: int | None = None) -> list[dict[str, Any]]: ...

    def evaluate(self, source: str, *, text_col: str | None, label_col: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]: ...


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


def padding_collator(tokenizer) -> Callable:
    """Pads each batch to its longest text (the default collator of text-level tasks)."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


@dataclass(frozen=True)
class Task:
    """One task's particular pieces; everything else is shared.

    Attributes:
        name: the ``--task`` value.
        summary: one line for help and listings.
        metrics: eval metric name -> greater is better; the first is the default for early stopping.
        prepare: config -> :class:`Prepared` (raises UserError on bad data).
        build_model: (config, prepared) -> (tokenizer, model) from the configured pre-trained model.
        encode: (tokenizer, prepared, config) -> :class:`Encoded`.
        make_loss: (config, prepared) -> a Trainer ``compute_loss_func`` or None for the model's own loss.
        make_compute_metrics: prepared -> a Trainer ``compute_metrics`` (must score against ``label_ids``).
        evaluate: (model, tokenizer, prepared, config, precision) -> (metrics with baselines, prediction records).
        save_extras: (model_dir, prepared) -> None; writes what inference needs beyond the HF model.
        load_predictor: (model_dir, config) -> :class:`Predictor`.
        peft_task_type: PEFT task type for LoRA (decides which head stays fully trainable).
        make_collator: tokenizer -> batch collator (default: pad each batch to its longest text).
        make_preprocess_logits: model -> Trainer ``preprocess_logits_for_metrics`` (e.g. Viterbi decoding), or None.
        default_head_lr: the head's learning rate when ``training.head_lr`` is not set (None: the body's).
        auto_freeze_layers: lowest transformer layers kept fixed under ``model.freeze_layers: auto`` in full
            fine-tuning (models of 6 layers or more only; :func:`tunesmith.training.methods.freeze_lower`).
        make_trainer: (Trainer keyword arguments, config, prepared) -> the trainer to run instead of transformers'
            ``Trainer`` (TRL's preference trainers); None: ``Trainer(**kwargs)``.
        config_defaults: flat config key -> this task's default, used where the config does not set the key
            (sft: ``{"model": "smollm2-135m", "method": "lora", ...}``).
    """

    name: str
    summary: str
    metrics: dict[str, bool]
    prepare: Callable[[Any], Prepared]
    build_model: Callable[[Any, Any], tuple[Any, torch.nn.Module]]
    encode: Callable[[Any, Any, Any], Encoded]
    make_loss: Callable[[Any, Any], Callable | None]
    make_compute_metrics: Callable[[Any], Callable]
    evaluate: Callable[..., tuple[dict[str, Any], list[dict[str, Any]]]]
    load_predictor: Callable[[Path, Any], Predictor]
    save_extras: Callable[[Path, Any], None] | None = None
    peft_task_type: str = "SEQ_CLS"
    make_collator: Callable[[Any], Callable] = padding_collator
    make_preprocess_logits: Callable[[Any], Callable] | None = None
    default_head_lr: float | None = None
    auto_freeze_layers: int = 0
    make_trainer: Callable[[dict[str, Any], Any, Any], Any] | None = None
    config_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def default_metric(self) -> str:
        return next(iter(self.metrics))


def predicted_tokens(model) -> Callable:
    """A Trainer ``preprocess_logits_for_metrics`` keeping each position's predicted token, not the
    vocabulary-wide logits (gigabytes over an eval set). ``model`` is unused: the Task hook's signature."""

    def preprocess(logits, labels):
        logits = logits[0] if isinstance(logits, tuple) else logits
        return logits.argmax(dim=-1)

    return preprocess


def labelled_token_accuracy(pred) -> float:
    """Share of the labelled positions (label != -100) whose predicted token (see :func:`predicted_tokens`) is the label."""
    import numpy as np

    predicted = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    labels = np.asarray(pred.label_ids)
    picked = labels != -100
    return float((np.asarray(predicted)[picked] == labels[picked]).mean()) if picked.any() else 0.0


def encode_texts(tokenizer, texts: Sequence[str], max_length: int) -> tuple[list[dict[str, Any]], int]:
    """Tokenize without padding, truncating to ``max_length``; returns features and how many were cut.

    Truncation keeps the closing special token the model was pre-trained with.
    """
    enc = tokenizer(list(texts), truncation=False)
    features = []
    truncated = 0
    for i, ids in enumerate(enc["input_ids"]):
        feat = {k: enc[k][i][:max_length] for k in enc}
        if len(ids) > max_length:
            truncated += 1
            feat["input_ids"][-1] = ids[-1]
        features.append(feat)
    return features, truncated


def load_pretrained(config, auto_class, **config_kwargs):
    """Tokenizer and ``auto_class`` model from the configured pre-trained model, with a clear error when it cannot load."""
    import transformers

    from tunesmith.models import load_failure, resolve_model
    from tunesmith.training.hardware import training_attention
    from tunesmith.training.methods import apply_dropout

    ref = resolve_model(config.model.model)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(ref)
        model_config = transformers.AutoConfig.from_pretrained(ref, **config_kwargs)
        apply_dropout(model_config, config.model.dropout)
        # a model fine-tuned before (another run's model/) brings a head of another shape: start it afresh
        attention = training_attention(config.model.attention, model_config)
        kernel = {"attn_implementation": attention} if attention else {}
        model = auto_class.from_pretrained(ref, config=model_config, ignore_mismatched_sizes=True, **kernel)
    except (OSError, ValueError, KeyError) as exc:
        raise load_failure(config.model.model, exc) from None
    from tunesmith.models.decoder import ensure_pad_token

    # decoder LMs (Llama) ship without a pad token: batches could not be padded, nor a classification head find the last token
    ensure_pad_token(tokenizer, model)
    return tokenizer, model


def load_trained(model_dir: Path, auto_class) -> tuple[Any, torch.nn.Module, str]:
    """A run's saved model for inference: tokenizer, model in eval mode, and the fastest precision here."""
    from transformers import AutoTokenizer

    from tunesmith.training.hardware import resolve_precision

    return AutoTokenizer.from_pretrained(model_dir), auto_class.from_pretrained(model_dir).eval(), resolve_precision("auto")
