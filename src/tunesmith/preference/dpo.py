"""Direct preference optimisation (DPO) of a causal LM through TRL's ``DPOTrainer``.

DPO raises the policy's log-probability of each chosen answer relative to a frozen reference (the
model before training) more than that of the rejected one. Only one model is ever held in memory:

- with LoRA (the default) the reference is the base model with the adapters switched off. Given an
  already wrapped PEFT model, TRL keeps a frozen copy of its adapter as the reference (meant for an
  adapter trained before); tunesmith's adapter is freshly initialised to zero, so the base model *is*
  that reference and the copy is dropped: TRL then disables the adapter for reference log-probs;
- with full fine-tuning (or ``freeze``), TRL computes the reference log-probs of every pair once,
  before training, instead of loading a second copy of the model.

Metrics on the eval pairs, computed here independently of TRL's own logging: reward accuracy (the
share of pairs whose implicit reward ``beta * (log p(answer) - log p_ref(answer))`` is higher for the
chosen answer) and reward margin (its mean difference). Before training both are zero by definition,
so the log-probability preference of the model itself (which answer it finds likelier) is reported
before and after as well.
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
    trl_arguments,
)
from tunesmith.preference.data import (
    CHOSEN,
    REJECTED,
    PairFeatures,
    PreparedPreferences,
    load_pairs,
    prepare_preferences,
    tokenize_both,
    tokenize_pairs,
    trl_example,
    uses_chat_template,
)

if TYPE_CHECKING:
    from tunesmith.tasks.base import Encoded


def prepare(config: RunConfig) -> PreparedPreferences:
    """Load, validate, dedupe and split the pairs; every pair needs a prompt."""
    return prepare_preferences(config, require_prompt=True)


@torch.inference_mode()
def answer_logps(model, seqs: Sequence[Sequence[int]], starts: Sequence[int], *, pad: int, batch_size: int, precision: str) -> np.ndarray:
    """Sum of the log-probabilities of each sequence's tokens from ``starts[i]`` on (the answer, given the prompt before it)."""
    from tunesmith.tasks.inference import autocast_context  # late: tasks import this module (tunesmith.tasks registers it)

    model.eval()
    device = next(model.parameters()).device
    vocab = model.get_output_embeddings().weight.shape[0]
    out = np.zeros(len(seqs), dtype=np.float64)
    for idx, ids, mask in padded_batches(seqs, pad, batch_size, vocab=vocab):
        ids, mask = ids.to(device), mask.to(device)
        with autocast_context(precision, device):
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        position = torch.arange(1, ids.shape[1], device=device)[None, :]
        start = torch.tensor([starts[i] for i in idx], device=device)[:, None]
        scored = (position >= start) & (mask[:, 1:] == 1)
        out[idx] = (logps * scored).sum(dim=1).cpu().numpy()
    return out


def pair_logps(model, tokenizer, features: Sequence[PairFeatures], *, batch_size: int, precision: str) -> tuple[np.ndarray, np.ndarray]:
    """Log-probability of each pair's chosen and rejected answer given its prompt."""
    seqs = [f.full(CHOSEN) for f in features] + [f.full(REJECTED) for f in features]
    starts = [len(f.prompt_ids) for f in features] * 2
    logps = answer_logps(model, seqs, starts, pad=pad_id(tokenizer), batch_size=batch_size, precision=precision)
    return logps[: len(features)], logps[len(features) :]


def dpo_metrics(beta: float, policy: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """Reward accuracy and margin of the implicit rewards ``beta * (log p - log p_ref)``, and the log-probability preference before and after."""
    chosen_reward = beta * (policy[0] - reference[0])
    rejected_reward = beta * (policy[1] - reference[1])
    rewards = pair_metrics(chosen_reward, rejected_reward)
    before, after = pair_metrics(*reference), pair_metrics(*policy)
    return {
        "reward_accuracy": rewards["accuracy"],
        "reward_margin": rewards["margin"],
        "mean_chosen_reward": float(chosen_reward.mean()),
        "mean_rejected_reward": float(rejected_reward.mean()),
        "logp_accuracy_before": before["accuracy"],
        "logp_accuracy_after": after["accuracy"],
        "logp_margin_before": before["margin"],
        "logp_margin_after": after["margin"],
    }


def build_model(config: RunConfig, data: PreparedPreferences):
    """The causal LM to tune; also the reference log-probs of the eval pairs, from this very model before training."""
    from tunesmith.tasks.causal import load_causal_lm
    from tunesmith.training.hardware import resolve_precision

    tokenizer, model = load_causal_lm(config, "dpo")
    ensure_pad_token(tokenizer, model)
    tokenize_both(tokenizer, data, config.data.max_length)
    with on_training_device(model):
        chosen, rejected = pair_logps(
            model,
            tokenizer,
            data.eval_features,
            batch_size=config.training.eval_batch_size,
            precision=resolve_precision(config.training.precision),
        )
    data.before = {"chosen_logps": chosen, "rejected_logps": rejected}
    return tokenizer, model


def encode(tokenizer, data: PreparedPreferences, config: RunConfig) -> Encoded:
    """Check and tokenize the training pairs as TRL will (raises UserError on a prompt too long); TRL tokenizes them again itself."""
    return encode_pairs(
        tokenizer,
        data,
        config.data.max_length,
        lambda f: {"prompt_ids": f.prompt_ids, "chosen_ids": f.chosen_ids, "rejected_ids": f.rejected_ids},
    )


def _trl_dataset(pairs, chat: bool):
    from datasets import Dataset

    return Dataset.from_list([trl_example(p, c, r, chat) for p, c, r in zip(pairs.prompts, pairs.chosen, pairs.rejected, strict=True)])


def make_trainer(kwargs: dict[str, Any], config: RunConfig, data: PreparedPreferences):
    """TRL's ``DPOTrainer`` with no second model: a LoRA policy's reference is its base (adapters off), a full one's is precomputed."""
    from peft import PeftModel
    from trl import DPOConfig, DPOTrainer

    quiet_trl()
    model = kwargs["model"]
    lora = isinstance(model, PeftModel)
    args = trl_arguments(
        kwargs["args"],
        DPOConfig,
        beta=config.training.dpo_beta,
        max_length=config.data.max_length,
        truncation_mode="keep_start",
        precompute_ref_log_probs=not lora,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=_trl_dataset(data.train, data.chat),
        eval_dataset=_trl_dataset(data.eval, data.chat),
        processing_class=kwargs["processing_class"],
        callbacks=kwargs["callbacks"],
        optimizers=kwargs["optimizers"],
    )
    if lora and "ref" in model.peft_config:
        # TRL copied the (zero-initialised) adapter as the reference; without it, TRL switches the adapter off instead
        model.delete_adapter("ref")
    return trainer


def make_loss(config: RunConfig, data: PreparedPreferences) -> None:
    """None: TRL's trainer computes the DPO loss itself."""
    return None


def make_compute_metrics(data: PreparedPreferences) -> None:
    """None: TRL's trainer logs ``rewards/accuracies`` and ``rewards/margins`` of each eval itself."""
    return None


def evaluate(model, tokenizer, data: PreparedPreferences, config: RunConfig, precision: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Reward accuracy and margin on the eval pairs against the reference log-probs taken before training."""
    if data.eval_features is None or not data.before:
        raise RuntimeError("dpo evaluate needs the reference log-probs that build_model computes")
    policy = pair_logps(model, tokenizer, data.eval_features, batch_size=config.training.eval_batch_size, precision=precision)
    reference = (data.before["chosen_logps"], data.before["rejected_logps"])
    beta = config.training.dpo_beta
    metrics: dict[str, Any] = {"n": len(data.eval_features), **dpo_metrics(beta, policy, reference), "beta": beta}
    metrics["format"] = data.report.get("format")
    return metrics, pair_records(data.eval, beta * (policy[0] - reference[0]), beta * (policy[1] - reference[1]), "reward")


class DpoPredictor:
    """A DPO-tuned causal LM: ``predict`` answers prompts (greedy), ``evaluate`` measures reward accuracy on a file of pairs."""

    def __init__(self, model_dir: Path, config: RunConfig):
        from tunesmith.generate.engine import Generator

        self.config = config
        self.generator = Generator.load(model_dir)
        self.labels: list[str] = []

    def predict(self, texts: Sequence[str], *, batch_size: int | None = None) -> list[dict[str, Any]]:
        """A greedy reply (``generated``) to each prompt, through the chat template when the model has one."""
        gen = self.generator
        replies = gen.complete_batch(
            [gen.prompt_ids(text) for text in texts],
            max_new_tokens=self.config.training.max_new_tokens,
            batch_size=batch_size or self.config.training.eval_batch_size,
        )
        return [{"generated": reply} for reply in replies]

    def evaluate(self, source: str, *, text_col: str | None, label_col: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Reward accuracy and margin on a file of pairs; the reference (the run's base model) is loaded after the policy has scored."""
        from transformers import AutoModelForCausalLM

        from tunesmith.tasks.base import load_pretrained

        gen = self.generator
        pairs = load_pairs(source, encoding=self.config.data.encoding, require_prompt=True)
        chat = uses_chat_template(gen.tokenizer, pairs)
        features, truncated = tokenize_pairs(gen.tokenizer, pairs, self.config.data.max_length, chat)
        batch = self.config.training.eval_batch_size
        policy = pair_logps(gen.model, gen.tokenizer, features, batch_size=batch, precision=gen.precision)
        _, reference_model = load_pretrained(self.config, AutoModelForCausalLM)
        reference_model.to(gen.device)
        reference = pair_logps(reference_model, gen.tokenizer, features, batch_size=batch, precision=gen.precision)
        del reference_model
        beta = self.config.training.dpo_beta
        metrics = {"n": len(features), **dpo_metrics(beta, policy, reference), "beta": beta, "truncated": truncated}
        return metrics, pair_records(pairs, beta * (policy[0] - reference[0]), beta * (policy[1] - reference[1]), "reward")
