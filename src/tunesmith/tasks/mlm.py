"""Continued pre-training with masked language modelling (MLM) on raw, unlabelled texts.

Training texts are masked afresh each time they are drawn (dynamic masking, as in RoBERTa) by
transformers' ``DataCollatorForLanguageModeling``. The eval texts are masked once, with a generator
seeded by ``training.seed``, so every evaluation (the pre-trained model before training, each
checkpoint, the final model) scores the same masked positions and the numbers compare. Texts are
truncated to ``data.max_length``; they are not concatenated into blocks.

A checkpoint without a masked-LM head (a plain ``BertModel`` such as ``minilm``) gets a freshly
initialised head; ``data.json`` says which (``mlm_head``). The saved ``model/`` is a
``*ForMaskedLM`` checkpoint that any other task accepts as ``--model``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.config import RunConfig, TrainingConfig
from tunesmith.data.unlabelled import RawTexts, load_unlabelled, prepare_unlabelled
from tunesmith.errors import UserError
from tunesmith.tasks.base import Encoded, EncodedDataset, Task, labelled_token_accuracy, load_pretrained, load_trained, predicted_tokens
from tunesmith.tasks.inference import autocast_context, length_sorted_batches

TOP_K = 5
# redraws of an eval or training text's mask until at least one token is masked
_MASK_TRIES = 100


@dataclass
class MlmData:
    """Train and eval texts; ``build_model`` adds the eval texts masked once and the pre-trained model's scores on them."""

    train: RawTexts
    eval: RawTexts
    report: dict[str, Any]
    eval_features: list[dict[str, Any]] | None = None
    eval_truncated: int = 0
    before: dict[str, float] | None = None


def prepare(config: RunConfig) -> MlmData:
    """Load, dedupe and split the texts (raises UserError on bad input)."""
    data = prepare_unlabelled(config.data, seed=config.training.seed)
    return MlmData(data.train, data.eval, data.report)


def check_tokenizer(tokenizer, model_name: str, whole_word_mask: bool) -> None:
    """Masked language modelling needs a mask token, and whole-word masking a fast tokenizer (for word offsets)."""
    if tokenizer.mask_token is None:
        raise UserError(
            f"model {model_name!r} has no mask token, so it cannot be trained with masked language modelling; "
            "choose an encoder pre-trained with MLM (BERT, RoBERTa, DeBERTa, ...), e.g. --model minilm"
        )
    if whole_word_mask and not tokenizer.is_fast:
        raise UserError(
            f"`training.whole_word_mask` needs a fast tokenizer to find word boundaries, and model {model_name!r} has a slow one; "
            "pass --no-whole-word-mask or a model with a tokenizer.json"
        )


def make_masker(tokenizer, training: TrainingConfig, seed: int | None = None):
    """The transformers MLM masker; ``seed`` None draws from the global RNG (which the Trainer seeds)."""
    from transformers import DataCollatorForLanguageModeling

    # whole-word masking replaces every chosen token by the mask token (transformers forces it, with a warning)
    replace = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0} if training.whole_word_mask else {}
    return DataCollatorForLanguageModeling(
        tokenizer, mlm_probability=training.mlm_probability, whole_word_mask=training.whole_word_mask, seed=seed, **replace
    )


def tokenize(tokenizer, texts: Sequence[str], max_length: int, *, offsets: bool = False) -> tuple[list[dict[str, Any]], int]:
    """Tokenize without padding, with the special-tokens mask (and word offsets for whole-word masking).

    Texts longer than ``max_length`` are cut, keeping the closing special token; returns the
    features and how many texts were cut.
    """
    enc = tokenizer(list(texts), truncation=False, return_special_tokens_mask=True, return_offsets_mapping=offsets)
    features, truncated = [], 0
    for i, ids in enumerate(enc["input_ids"]):
        feat = {k: list(enc[k][i][:max_length]) for k in enc}
        if len(ids) > max_length:
            truncated += 1
            for k in enc:
                feat[k][-1] = enc[k][i][-1]
        features.append(feat)
    return features, truncated


def mask_example(masker, feature: dict[str, Any]) -> dict[str, Any]:
    """One text masked by ``masker``, as lists; redrawn until a token is masked so no text (or batch) is left without a target."""
    has_maskable = not all(feature["special_tokens_mask"])
    for _ in range(_MASK_TRIES if has_maskable else 1):
        batch = masker([dict(feature)])
        masked = {k: v[0].tolist() for k, v in batch.items()}
        if any(label != -100 for label in masked["labels"]):
            break
    return masked


class DynamicMasking(EncodedDataset):
    """Training texts, masked afresh every time one is drawn (each epoch sees new masks)."""

    def __init__(self, features: list[dict[str, Any]], masker):
        super().__init__(features)
        self.masker = masker

    def __getitem__(self, i: int) -> dict[str, Any]:
        return mask_example(self.masker, self.features[i])


def premask(tokenizer, features: list[dict[str, Any]], training: TrainingConfig) -> list[dict[str, Any]]:
    """Mask each text once with a generator seeded by ``training.seed``: the same texts always get the same masks."""
    masker = make_masker(tokenizer, training, seed=training.seed)
    return [mask_example(masker, feat) for feat in features]


def _collator(tokenizer):
    """Pads masked examples: inputs with the pad token, labels with -100 (ignored by the loss)."""
    from transformers import DataCollatorForTokenClassification

    return DataCollatorForTokenClassification(tokenizer)


def perplexity(loss: float) -> float:
    """``exp(loss)``, infinite rather than an overflow for a hopeless model."""
    return math.exp(loss) if loss < 700 else float("inf")


@torch.inference_mode()
def score_masked(model, tokenizer, features: list[dict[str, Any]], *, batch_size: int, precision: str) -> dict[str, Any]:
    """Mean loss over all masked tokens (each token weighs the same), its perplexity and the masked-token accuracy.

    Raises:
        UserError: when no text has a token to mask.
    """
    model.eval()
    device = next(model.parameters()).device
    collate = _collator(tokenizer)
    nll, correct, count = 0.0, 0, 0
    for idx in length_sorted_batches([len(f["input_ids"]) for f in features], batch_size):
        batch = {k: v.to(device) for k, v in collate([features[i] for i in idx]).items()}
        labels = batch.pop("labels")
        with autocast_context(precision, device):
            logits = model(**batch).logits
        picked = labels != -100
        target, scores = labels[picked], logits[picked].float()
        nll += F.cross_entropy(scores, target, reduction="sum").item()
        correct += int((scores.argmax(-1) == target).sum())
        count += target.numel()
    if count == 0:
        raise UserError(f"none of the {len(features)} eval texts has a token to mask (only special tokens); give texts with words in them")
    loss = nll / count
    return {"eval_loss": loss, "perplexity": perplexity(loss), "masked_accuracy": correct / count, "masked_tokens": count}


def _score_pretrained(model, tokenizer, features, config: RunConfig) -> dict[str, Any]:
    """Scores of the model as loaded, on the device training will use, then back where it was."""
    from tunesmith.training.hardware import resolve_precision

    home = next(model.parameters()).device
    model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        return score_masked(
            model, tokenizer, features, batch_size=config.training.eval_batch_size, precision=resolve_precision(config.training.precision)
        )
    finally:
        model.to(home)


def head_origin(model) -> str:
    """Whether the masked-LM head came with the checkpoint or was initialised afresh (a ``BertModel`` checkpoint has none)."""
    architectures = getattr(model.config, "architectures", None) or []
    if any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in architectures):
        return "pre-trained"
    return f"newly initialised (the checkpoint is {', '.join(architectures) or 'a model'} without a masked-LM head)"


def build_model(config: RunConfig, data: MlmData):
    """The masked-LM model; also masks the eval texts once and scores the untouched model on them ("before").

    Scoring here, on the very model training starts from, keeps a freshly initialised head the same
    before and after, which a second load (with its own random head) would not.
    """
    from transformers import AutoModelForMaskedLM

    tokenizer, model = load_pretrained(config, AutoModelForMaskedLM)
    check_tokenizer(tokenizer, config.model.model, config.training.whole_word_mask)
    data.report["mlm_head"] = head_origin(model)
    _mask_eval(tokenizer, data, config)
    data.before = _score_pretrained(model, tokenizer, data.eval_features, config)
    return tokenizer, model


def _mask_eval(tokenizer, data: MlmData, config: RunConfig) -> None:
    features, data.eval_truncated = tokenize(tokenizer, data.eval.texts, config.data.max_length, offsets=config.training.whole_word_mask)
    data.eval_features = premask(tokenizer, features, config.training)


def encode(tokenizer, data: MlmData, config: RunConfig) -> Encoded:
    """Training texts masked on the fly; the eval texts masked once (in ``build_model``)."""
    if data.eval_features is None:
        _mask_eval(tokenizer, data, config)
    features, truncated = tokenize(tokenizer, data.train.texts, config.data.max_length, offsets=config.training.whole_word_mask)
    train = DynamicMasking(features, make_masker(tokenizer, config.training))
    return Encoded(train, EncodedDataset(data.eval_features), {"train": truncated, "eval": data.eval_truncated})


def make_loss(config: RunConfig, data: MlmData) -> None:
    """The model's own loss: cross-entropy over the masked tokens."""
    return None


def make_compute_metrics(data: MlmData) -> Callable:
    """Masked-token accuracy against ``label_ids`` (the Trainer adds ``eval_loss`` itself)."""
    return lambda pred: {"masked_accuracy": labelled_token_accuracy(pred)}


def masking_settings(training: TrainingConfig) -> dict[str, Any]:
    return {"mlm_probability": training.mlm_probability, "whole_word_mask": training.whole_word_mask, "seed": training.seed}


def evaluate(model, tokenizer, data: MlmData, config: RunConfig, precision: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Perplexity, loss and masked-token accuracy after training, beside the pre-trained model's on the same masked positions."""
    if data.eval_features is None:
        _mask_eval(tokenizer, data, config)
    after = score_masked(model, tokenizer, data.eval_features, batch_size=config.training.eval_batch_size, precision=precision)
    metrics: dict[str, Any] = {"n": len(data.eval_features), **after}
    for key in ("perplexity", "eval_loss", "masked_accuracy"):
        if data.before is not None:
            metrics[f"{key}_before"] = data.before[key]
        metrics[f"{key}_after"] = after[key]
    metrics["masking"] = masking_settings(config.training)
    metrics["mlm_head"] = data.report.get("mlm_head")
    return metrics, []


def _no_mask_error(tokenizer, texts: Sequence[str], missing: list[int], max_length: int) -> UserError:
    mask = tokenizer.mask_token
    cut = [i for i in missing if tokenizer.mask_token_id in tokenizer(texts[i])["input_ids"]]
    shown = ", ".join(f"{i + 1} ({texts[i][:40]!r})" for i in missing[:5]) + (f", ... {len(missing) - 5} more" if len(missing) > 5 else "")
    where = (
        f"; in text(s) {', '.join(str(i + 1) for i in cut[:5])} it lies beyond the first {max_length} tokens (raise --max-length)"
        if cut
        else ""
    )
    return UserError(
        f"fill-mask needs the mask token {mask} in every text; text(s) {shown} have none{where}. "
        f"Write {mask} where a word should be predicted, e.g. 'the {mask} is on the table'"
    )


@torch.inference_mode()
def fill_mask(
    model, tokenizer, texts: Sequence[str], *, max_length: int, batch_size: int, precision: str, top_k: int = TOP_K
) -> list[dict[str, Any]]:
    """For each text, the ``top_k`` tokens (with probabilities) at each mask token, in the text's order.

    Raises:
        UserError: a text holds no mask token (naming the token to use).
    """
    texts = list(texts)
    if not texts:
        return []
    if tokenizer.mask_token_id is None:
        raise UserError("this model's tokenizer has no mask token, so it cannot fill masks")
    features, _ = tokenize(tokenizer, texts, max_length)
    missing = [i for i, f in enumerate(features) if tokenizer.mask_token_id not in f["input_ids"]]
    if missing:
        raise _no_mask_error(tokenizer, texts, missing, max_length)
    model.eval()
    device = next(model.parameters()).device
    inputs = [{k: v for k, v in f.items() if k in tokenizer.model_input_names} for f in features]
    rows: list[dict[str, Any] | None] = [None] * len(texts)
    k = min(top_k, model.config.vocab_size)
    for idx in length_sorted_batches([len(f["input_ids"]) for f in inputs], batch_size):
        batch = {name: v.to(device) for name, v in tokenizer.pad([inputs[i] for i in idx], return_tensors="pt").items()}
        with autocast_context(precision, device):
            logits = model(**batch).logits
        for row, i in enumerate(idx):
            positions = (batch["input_ids"][row] == tokenizer.mask_token_id).nonzero().flatten()
            probs = logits[row, positions].float().softmax(dim=-1)
            top = probs.topk(k, dim=-1)
            rows[i] = {
                "mask_predictions": [
                    [
                        {"token": tokenizer.decode([t]).strip(), "token_id": int(t), "score": float(s)}
                        for t, s in zip(ids.tolist(), ps.tolist())
                    ]
                    for ids, ps in zip(top.indices, top.values)
                ]
            }
    return rows  # type: ignore[return-value]


class MlmPredictor:
    """A masked-LM model: ``predict`` fills masks, ``evaluate`` measures perplexity on a file of texts."""

    def __init__(self, model_dir: Path, config: RunConfig):
        from transformers import AutoModelForMaskedLM

        self.config = config
        self.tokenizer, self.model, self.precision = load_trained(model_dir, AutoModelForMaskedLM)
        self.labels: list[str] = []

    def predict(self, texts: Sequence[str], *, batch_size: int | None = None) -> list[dict[str, Any]]:
        return fill_mask(
            self.model,
            self.tokenizer,
            texts,
            max_length=self.config.data.max_length,
            batch_size=batch_size or self.config.training.eval_batch_size,
            precision=self.precision,
        )

    def evaluate(self, source: str, *, text_col: str | None, label_col: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Perplexity on ``source``'s texts, masked as the run masks its eval texts (same seed, same positions); ``label_col`` is ignored."""
        t = self.config.training
        texts = load_unlabelled(source, text_col, encoding=self.config.data.encoding)
        features, _ = tokenize(self.tokenizer, texts.texts, self.config.data.max_length, offsets=t.whole_word_mask)
        scores = score_masked(
            self.model, self.tokenizer, premask(self.tokenizer, features, t), batch_size=t.eval_batch_size, precision=self.precision
        )
        return {"n": len(texts), **scores, "masking": masking_settings(t)}, []


TASK = Task(
    name="mlm",
    summary="continued pre-training with masked language modelling on raw texts (domain adaptation)",
    metrics={"loss": False},
    prepare=prepare,
    build_model=build_model,
    encode=encode,
    make_loss=make_loss,
    make_compute_metrics=make_compute_metrics,
    evaluate=evaluate,
    load_predictor=MlmPredictor,
    peft_task_type="FEATURE_EXTRACTION",
    make_collator=_collator,
    make_preprocess_logits=predicted_tokens,
)
