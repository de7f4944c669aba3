"""What the reward and DPO tasks share: TRL's trainer arguments, datasets, padded batches and pair metrics."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from tunesmith.preference.data import CHOSEN, REJECTED, PairFeatures, PreparedPreferences, tokenize_both

# logits of one batch at most this many floats (about 256 MiB in fp32): a 49k-token vocabulary at 128 tokens is ~10 sequences
_LOGIT_BUDGET = 1 << 26


# `tunesmith train --task reward|dpo` runs as it is: a chat LLM, LoRA, the packaged translation pairs' demo preferences
TASK_DEFAULTS: dict[str, Any] = {
    "model": "smollm2-135m",
    "train": "hsk_zh_en",
    "method": "lora",
    "lr": 1e-4,
    "epochs": 1.0,
    "eval_fraction": 0.1,
    "batch_size": 8,
    "eval_batch_size": 16,
    "max_length": 128,
}


def encode_pairs(tokenizer, data: PreparedPreferences, max_length: int, row):
    """Both splits as the runner's ``Encoded``, one ``row(PairFeatures)`` dict per pair.

    The pairs are tokenized here unless ``build_model`` already did (it scores the eval pairs before
    training); a prompt too long anywhere raises UserError.
    """
    from tunesmith.tasks.base import Encoded, EncodedDataset

    if data.eval_features is None:
        tokenize_both(tokenizer, data, max_length)

    def rows(features):
        return EncodedDataset([row(f) for f in features])

    return Encoded(rows(data.train_features), rows(data.eval_features), {"train": data.train_truncated, "eval": data.eval_truncated})


def trl_arguments(args, config_class, **settings: Any):
    """TRL's config (``RewardConfig``/``DPOConfig``) holding every ``TrainingArguments`` value the runner chose, plus ``settings``.

    TRL's own defaults that differ from transformers' (bf16 on, gradient checkpointing on, a
    learning rate of its own) are thereby replaced by the run's values. Batches are drawn at random:
    length grouping needs a length column that the Trainer drops before building the sampler.
    """
    from transformers import TrainingArguments

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    values["train_sampling_strategy"] = "random"
    values.update(settings)
    return config_class(**values)


def quiet_trl() -> None:
    """TRL maps its datasets with progress bars of their own (tunesmith shows one bar for the run), and on every
    step calls a transformers method that transformers 5 deprecates (a FutureWarning that says nothing to the user)."""
    import warnings

    import datasets

    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*is deprecated", category=FutureWarning)


def sequences(features: Sequence[PairFeatures]) -> list[list[int]]:
    """Every pair's prompt+chosen, then every pair's prompt+rejected."""
    return [f.full(CHOSEN) for f in features] + [f.full(REJECTED) for f in features]


def padded_batches(
    seqs: Sequence[Sequence[int]], pad_id: int, batch_size: int, *, vocab: int | None = None
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Indices, right-padded ``input_ids`` and ``attention_mask`` in batches of similar length (longest first).

    With ``vocab`` (scoring full logits), a batch holds at most as many sequences as keep its logits within a fixed budget.
    """
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    start = 0
    while start < len(order):
        longest = max(1, len(seqs[order[start]]))
        size = batch_size if vocab is None else max(1, min(batch_size, _LOGIT_BUDGET // (longest * vocab)))
        idx = order[start : start + size]
        ids = torch.full((len(idx), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), longest), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, : len(seqs[i])] = torch.tensor(seqs[i], dtype=torch.long)
            mask[row, : len(seqs[i])] = 1
        yield idx, ids, mask
        start += size


def pair_metrics(chosen: np.ndarray, rejected: np.ndarray) -> dict[str, float]:
    """Share of pairs scored chosen > rejected (a tie counts as wrong) and the mean margin chosen - rejected."""
    chosen, rejected = np.asarray(chosen, dtype=np.float64), np.asarray(rejected, dtype=np.float64)
    return {"accuracy": float((chosen > rejected).mean()), "margin": float((chosen - rejected).mean())}


def pad_id(tokenizer) -> int:
    """The id batches are padded with (the end-of-sequence token when the tokenizer has no pad token)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def ensure_pad_token(tokenizer, model) -> None:
    """Give a tokenizer without a pad token one, and make the model's pad id the tokenizer's (as TRL does).

    A sequence-classification head finds each text's last token by the pad id, so a checkpoint's own
    differing ``pad_token_id`` would make the rewards read the wrong position.
    """
    from tunesmith.models.decoder import ensure_pad_token as give_pad_token

    give_pad_token(tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        generation.pad_token_id = tokenizer.pad_token_id


def pair_records(pairs, chosen: np.ndarray, rejected: np.ndarray, score: str) -> list[dict[str, Any]]:
    """One record per eval pair: its line, prompt, both scores and whether the chosen answer won."""
    return [
        {"row": row, "prompt": prompt, f"chosen_{score}": float(c), f"rejected_{score}": float(r), "correct": bool(c > r)}
        for row, prompt, c, r in zip(pairs.rows, pairs.prompts, chosen, rejected, strict=True)
    ]


@contextlib.contextmanager
def on_training_device(model) -> Iterator[None]:
    """Move ``model`` to the device training will use (a GPU when there is one) for a while, then back where it was."""
    home = next(model.parameters()).device
    model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        yield
    finally:
        model.to(home)
