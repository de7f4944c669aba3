"""Pairwise reward models: a sequence-classification head with one output, trained by TRL's ``RewardTrainer``.

The loss is Bradley-Terry, ``-log sigmoid(r(chosen) - r(rejected))``. The pairs are tokenized here
(see :mod:`tunesmith.preference.data`) and handed to TRL already tokenized, so nothing is dropped
silently: TRL would filter out pairs longer than its maximum length, tunesmith keeps their start and
reports how many were cut. The metric is pairwise accuracy, the share of eval pairs whose chosen answer
gets the higher reward, measured before training (the freshly initialised head) and after.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tunesmith.config import RunConfig
from tunesmith.preference.common import (
    encode_pairs,
    ensure_pad_token,
    on_training_device,
    pad_id,
    padded_batches,
    pair_metrics,
    pair_records,
    quiet_trl,
    sequences,
    trl_arguments,
)
from tunesmith.preference.data import (
    PairFeatures,
    PreparedPreferences,
    load_pairs,
    prepare_preferences,
    tokenize_both,
    tokenize_pair,
    tokenize_pairs,
    uses_chat_template,
)

if TYPE_CHECKING:
    from tunesmith.tasks.base import Encoded


def prepare(config: RunConfig) -> PreparedPreferences:
    """Load, validate, dedupe and split the pairs (a pair without a prompt is allowed: the answers are scored alone)."""
    return prepare_preferences(config)


@torch.inference_mode()
def sequence_rewards(model, seqs: Sequence[Sequence[int]], *, pad: int, batch_size: int, precision: str) -> np.ndarray:
    """The reward model's scalar score of each token sequence, in input order."""
    from tunesmith.tasks.inference import autocast_context  # late: tasks import this module (tunesmith.tasks registers it)

    model.eval()
    device = next(model.parameters()).device
    out = np.zeros(len(seqs), dtype=np.float64)
    for idx, ids, mask in padded_batches(seqs, pad, batch_size):
        with autocast_context(precision, device):
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        out[idx] = logits[:, 0].float().cpu().numpy()
    return out


def pair_rewards(model, tokenizer, features: Sequence[PairFeatures], *, batch_size: int, precision: str) -> tuple[np.ndarray, np.ndarray]:
    """Rewards of each pair's chosen and rejected answer."""
    scores = sequence_rewards(model, sequences(features), pad=pad_id(tokenizer), batch_size=batch_size, precision=precision)
    return scores[: len(features)], scores[len(features) :]


def build_model(config: RunConfig, data: PreparedPreferences):
    """A one-output sequence-classification model on the configured backbone; scores the eval pairs before training.

    Scoring here, on the very model training starts from, keeps the freshly initialised head the
    same before and after.
    """
    from transformers import AutoModelForSequenceClassification

    from tunesmith.tasks.base import load_pretrained
    from tunesmith.training.hardware import resolve_precision

    tokenizer, model = load_pretrained(config, AutoModelForSequenceClassification, num_labels=1)
    ensure_pad_token(tokenizer, model)
    tokenize_both(tokenizer, data, config.data.max_length)
    with on_training_device(model):
        chosen, rejected = pair_rewards(
            model,
            tokenizer,
            data.eval_features,
            batch_size=config.training.eval_batch_size,
            precision=resolve_precision(config.training.precision),
        )
    data.before = pair_metrics(chosen, rejected)
    return tokenizer, model


def encode(tokenizer, data: PreparedPreferences, config: RunConfig) -> Encoded:
    """Tokenize the training pairs (the eval pairs were tokenized in ``build_model``); raises UserError on a prompt too long."""
    return encode_pairs(
        tokenizer, data, config.data.max_length, lambda f: {"chosen_ids": f.full("chosen"), "rejected_ids": f.full("rejected")}
    )


def make_trainer(kwargs: dict[str, Any], config: RunConfig, data: PreparedPreferences):
    """TRL's ``RewardTrainer`` on the already tokenized pairs, with the runner's model, optimizer and callbacks."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    quiet_trl()
    # max_length None: the pairs are already cut to data.max_length, and TRL would otherwise drop (not cut) longer ones
    args = trl_arguments(kwargs["args"], RewardConfig, max_length=None)
    return RewardTrainer(
        model=kwargs["model"],
        args=args,
        train_dataset=Dataset.from_list(kwargs["train_dataset"].features),
        eval_dataset=Dataset.from_list(kwargs["eval_dataset"].features),
        processing_class=kwargs["processing_class"],
        callbacks=kwargs["callbacks"],
        optimizers=kwargs["optimizers"],
    )


def evaluate(model, tokenizer, data: PreparedPreferences, config: RunConfig, precision: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Pairwise accuracy and mean reward margin on the eval pairs, before and after training."""
    if data.eval_features is None:
        tokenize_both(tokenizer, data, config.data.max_length)
    chosen, rejected = pair_rewards(model, tokenizer, data.eval_features, batch_size=config.training.eval_batch_size, precision=precision)
    after = pair_metrics(chosen, rejected)
    metrics: dict[str, Any] = {
        "n": len(data.eval_features),
        "pairwise_accuracy": after["accuracy"],
        "reward_margin": after["margin"],
        "mean_chosen_reward": float(chosen.mean()),
        "mean_rejected_reward": float(rejected.mean()),
    }
    if data.before:
        metrics["pairwise_accuracy_before"] = data.before["accuracy"]
        metrics["reward_margin_before"] = data.before["margin"]
    metrics["format"] = data.report.get("format")
    return metrics, pair_records(data.eval, chosen, rejected, "reward")


def make_loss(config: RunConfig, data: PreparedPreferences) -> None:
    """None: TRL's trainer computes the Bradley-Terry loss itself."""
    return None


def make_compute_metrics(data: PreparedPreferences) -> None:
    """None: TRL's trainer logs ``accuracy`` and ``margin`` of each eval itself (its predictions carry no labels to score)."""
    return None


class RewardPredictor:
    """A trained reward model: ``predict`` scores answers, ``evaluate`` measures pairwise accuracy on a file of pairs."""

    def __init__(self, model_dir: Path, config: RunConfig):
        from transformers import AutoModelForSequenceClassification

        from tunesmith.tasks.base import load_trained

        self.config = config
        self.tokenizer, self.model, self.precision = load_trained(model_dir, AutoModelForSequenceClassification)
        self.labels: list[str] = []

    def _ids(self, item: str | dict[str, str]) -> list[int]:
        if isinstance(item, dict):
            prompt, response = item.get("prompt") or "", item.get("response") or item.get("chosen") or ""
        else:
            prompt, response = "", item
        chat = bool(prompt) and bool(self.tokenizer.chat_template)
        # a pair with the answer twice: tokenize_pair formats one answer exactly as training did
        return tokenize_pair(self.tokenizer, prompt, response, response, chat).full("chosen")[: self.config.data.max_length]

    def predict(self, texts: Sequence[str | dict[str, str]], *, batch_size: int | None = None) -> list[dict[str, Any]]:
        """The reward of each answer: a text scored alone, or ``{"prompt": ..., "response": ...}`` formatted as in training."""
        seqs = [self._ids(item) for item in texts]
        scores = sequence_rewards(
            self.model,
            seqs,
            pad=pad_id(self.tokenizer),
            batch_size=batch_size or self.config.training.eval_batch_size,
            precision=self.precision,
        )
        return [{"reward": float(s)} for s in scores]

    def evaluate(self, source: str, *, text_col: str | None, label_col: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Pairwise accuracy and margin on a file of preference pairs (``text_col``/``label_col`` are not used)."""
        pairs = load_pairs(source, encoding=self.config.data.encoding)
        chat = uses_chat_template(self.tokenizer, pairs)
        features, truncated = tokenize_pairs(self.tokenizer, pairs, self.config.data.max_length, chat)
        chosen, rejected = pair_rewards(
            self.model, self.tokenizer, features, batch_size=self.config.training.eval_batch_size, precision=self.precision
        )
        m = pair_metrics(chosen, rejected)
        metrics = {"n": len(features), "pairwise_accuracy": m["accuracy"], "reward_margin": m["margin"], "truncated": truncated}
        return metrics, pair_records(pairs, chosen, rejected, "reward")
