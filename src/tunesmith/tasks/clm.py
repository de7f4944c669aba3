"""Continued pre-training of a causal LM on raw, unlabelled text (next-token prediction on every token).

Each text is tokenized as the model reads text (its BOS where the tokenizer adds one) and closed with
the EOS token, so the model keeps learning where texts end. A text longer than ``max_length`` is cut
into consecutive ``max_length`` pieces rather than truncated (no text is thrown away); ``data.json``
counts them. Pieces are packed into ``max_length`` sequences without attention across pieces
(:mod:`tunesmith.tasks.causal`). Perplexity is measured on the eval texts before and after training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.config import RunConfig
from tunesmith.data.unlabelled import RawTexts, load_unlabelled, prepare_unlabelled
from tunesmith.tasks.base import Encoded, EncodedDataset, Task
from tunesmith.tasks.causal import (
    before_after,
    load_causal_lm,
    make_collator,
    make_labelled_token_loss,
    notice,
    pack,
    score_on_device,
    score_tokens,
)


@dataclass
class ClmData:
    """Train and eval texts; ``build_model`` adds the eval pieces and the untrained model's scores on them."""

    train: RawTexts
    eval: RawTexts
    report: dict[str, Any]
    eval_features: list[dict[str, list[int]]] | None = None
    eval_split: int = 0
    before: dict[str, Any] | None = None
    output_layer: Any = None  # the model's vocabulary projection, for the labelled-token loss


def prepare(config: RunConfig) -> ClmData:
    """Load, dedupe and split the texts (raises UserError on bad input)."""
    data = prepare_unlabelled(config.data, seed=config.training.seed)
    return ClmData(data.train, data.eval, data.report)


def tokenize_texts(tokenizer, texts: Sequence[str], max_length: int) -> tuple[list[dict[str, list[int]]], int]:
    """Each text as tokens closed by EOS, cut into pieces of at most ``max_length``; returns the pieces and how many texts were cut."""
    eos = tokenizer.eos_token_id
    features, split = [], 0
    for ids in tokenizer(list(texts))["input_ids"] if texts else []:
        ids = list(ids)
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
        if len(ids) > max_length:
            split += 1
        for start in range(0, len(ids), max_length):
            piece = ids[start : start + max_length]
            if len(piece) >= 2:  # a single token predicts nothing
                features.append({"input_ids": piece, "labels": list(piece)})
    return features, split


def build_model(config: RunConfig, data: ClmData):
    """The causal LM; also tokenizes the eval texts and scores the untrained model on them ("before")."""
    tokenizer, model = load_causal_lm(config, "clm")
    data.output_layer = model.get_output_embeddings()
    data.eval_features, data.eval_split = tokenize_texts(tokenizer, data.eval.texts, config.data.max_length)
    notice(f"scoring the untrained model (before): perplexity on {len(data.eval):,} eval texts")
    data.before = score_on_device(model, data.eval_features, config, tokenizer.pad_token_id)
    return tokenizer, model


def encode(tokenizer, data: ClmData, config: RunConfig) -> Encoded:
    """Training pieces packed into ``max_length`` sequences (one piece per sequence with ``--no-packing``)."""
    if data.eval_features is None:
        data.eval_features, data.eval_split = tokenize_texts(tokenizer, data.eval.texts, config.data.max_length)
    features, split = tokenize_texts(tokenizer, data.train.texts, config.data.max_length)
    data.report["train_tokens"] = sum(len(f["input_ids"]) for f in features)
    data.report["texts_split_into_pieces"] = {"train": split, "eval": data.eval_split}
    if config.training.packing:
        packed = pack(features, config.data.max_length, config.training.seed)
        fill = data.report["train_tokens"] / (len(packed) * config.data.max_length)
        data.report["packing"] = {"pieces": len(features), "sequences": len(packed), "fill": round(fill, 4)}
        features = packed
    # nothing is truncated: longer texts are split, as data.json's texts_split_into_pieces counts
    return Encoded(EncodedDataset(features), EncodedDataset(data.eval_features), {"train": 0, "eval": 0})


def evaluate(model, tokenizer, data: ClmData, config: RunConfig, precision: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Perplexity, loss and next-token accuracy on the eval texts after training, beside the untrained model's."""
    if data.eval_features is None:
        data.eval_features, data.eval_split = tokenize_texts(tokenizer, data.eval.texts, config.data.max_length)
    after = score_tokens(
        model, data.eval_features, batch_size=config.training.eval_batch_size, precision=precision, pad_token_id=tokenizer.pad_token_id
    )
    keys = ("perplexity", "eval_loss", "token_accuracy")
    return {"generative": True, "n": len(data.eval), **before_after(data.before, after, keys)}, []


class ClmPredictor:
    """A continued-pre-trained LM: ``predict`` continues each text (greedy), ``evaluate`` measures perplexity."""

    evaluates_own_split = True  # `tunesmith eval RUN` without --data scores the run's own eval split

    def __init__(self, model_dir: Path, config: RunConfig):
        from tunesmith.generate.engine import Generator

        self.config = config
        self.generator = Generator.load(model_dir, chat=False)
        self.labels: list[str] = []

    def predict(self, texts: Sequence[str], *, batch_size: int | None = None) -> list[dict[str, Any]]:
        gen = self.generator
        prompts = [gen.prompt_ids(text) for text in texts]
        replies = gen.complete_batch(
            prompts, max_new_tokens=self.config.training.max_new_tokens, batch_size=batch_size or self.config.training.eval_batch_size
        )
        return [{"generated": reply} for reply in replies]

    def evaluate(
        self, source: str | None, *, text_col: str | None = None, label_col: str | None = None, **options: Any
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Perplexity on ``source``'s texts, or on the run's own eval split when ``source`` is None; ``label_col`` is ignored."""
        cfg = self.config
        if source is None:
            texts = prepare_unlabelled(cfg.data, seed=cfg.training.seed).eval
        else:
            texts = load_unlabelled(source, text_col, encoding=cfg.data.encoding)
        gen = self.generator
        features, split = tokenize_texts(gen.tokenizer, texts.texts, cfg.data.max_length)
        scores = score_tokens(
            gen.model, features, batch_size=cfg.training.eval_batch_size, precision=gen.precision, pad_token_id=gen.tokenizer.pad_token_id
        )
        return {"generative": True, "n": len(texts), "texts_split_into_pieces": split, **scores}, []


TASK = Task(
    name="clm",
    summary="continued pre-training of a causal LM on raw texts (domain adaptation); perplexity before and after",
    metrics={"loss": False},
    prepare=prepare,
    build_model=build_model,
    encode=encode,
    make_loss=lambda config, data: make_labelled_token_loss(data),
    make_compute_metrics=lambda data: None,
    evaluate=evaluate,
    load_predictor=ClmPredictor,
    peft_task_type="CAUSAL_LM",
    make_collator=make_collator,
    config_defaults={
        "model": "smollm2-135m",
        "method": "lora",
        "lora_dropout": 0.0,  # adapter dropout keeps a copy of every adapted layer's input for backward (about 0.9 GB at 1.5k tokens)
        "lr": 2e-4,
        "epochs": 1.0,
        "eval_fraction": 0.1,
        "batch_size": 8,
        "eval_batch_size": 32,
        "max_length": 256,
    },
)
