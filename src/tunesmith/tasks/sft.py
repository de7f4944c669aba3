"""Supervised instruction tuning (SFT) of a causal LM on conversations, loss on the assistant's replies only.

Each conversation is rendered with the model's chat template (or ``--template``). The text is cut
into segments at the template's own boundaries: for every assistant turn, the conversation before it
with the generation prompt (``<|im_start|>assistant\\n``) and the reply up to and including the
template's end-of-turn token. Each segment is tokenized on its own, exactly as the prompt is at
generation time, and only reply tokens carry labels; system and user turns and the template's
markup are -100. Examples are packed into ``max_length`` sequences (``--packing``, default), each
example attending only to itself (see :mod:`tunesmith.tasks.causal`).

Metrics: loss and perplexity on the eval replies, and BLEU/chrF of greedy replies to a seeded
sample of eval prompts (``--eval-generate``), all before and after training.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.config import RunConfig
from tunesmith.data.chat import ChatData, Message, ensure_chat_template, load_chat, prepare_chat, prompt_and_reference, resolve_template
from tunesmith.errors import UserError
from tunesmith.tasks.base import Encoded, EncodedDataset, Task
from tunesmith.tasks.causal import (
    IGNORE,
    before_after,
    load_causal_lm,
    make_collator,
    make_labelled_token_loss,
    notice,
    pack,
    score_on_device,
    score_tokens,
)

_SHOWN = 5


@dataclass
class SftData:
    """Train and eval conversations; ``build_model`` adds the eval encoding and the untrained model's scores."""

    train: ChatData
    eval: ChatData
    report: dict[str, Any]
    eval_features: list[dict[str, list[int]]] | None = None
    eval_truncated: int = 0
    before: dict[str, Any] | None = None
    output_layer: Any = None  # the model's vocabulary projection, for the labelled-token loss
    generated_before: list[str] = field(default_factory=list)


def prepare(config: RunConfig) -> SftData:
    """Load, validate, dedupe and split the conversations (raises UserError naming bad lines)."""
    if config.data.template:
        resolve_template(config.data.template)  # a mistyped --template fails before the model loads
    data = prepare_chat(config.data, seed=config.training.seed)
    return SftData(data.train, data.eval, data.report)


def _render(tokenizer, messages: Sequence[Message], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)


def segments(tokenizer, messages: Sequence[Message]) -> list[tuple[str, bool]]:
    """The rendered conversation as ``(text, is_reply)`` pieces, ending with the last assistant reply.

    Raises:
        ValueError: the template renders an earlier turn differently once later turns follow (the
            pieces would not add up to the conversation); the caller names the line.
    """
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], True)
        full = _render(tokenizer, messages[: i + 1], False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise ValueError("the chat template renders earlier turns differently once later ones follow")
        pieces += [(prompt[len(done) :], False), (full[len(prompt) :], True)]
        done = full
    return pieces


def encode_conversations(tokenizer, data: ChatData, max_length: int) -> tuple[list[dict[str, list[int]]], int]:
    """Token ids and labels (-100 outside the replies) of every conversation, cut at ``max_length``.

    Returns the features and how many conversations were cut.

    Raises:
        UserError: a conversation whose first reply starts beyond ``max_length`` tokens, or one the
            template cannot render (each named by its line).
    """
    rendered: list[list[tuple[str, bool]]] = []
    problems: list[str] = []
    for row, messages in zip(data.rows, data.conversations, strict=True):
        try:
            rendered.append(segments(tokenizer, messages))
        except Exception as exc:  # a template error (jinja raises its own types) names the line instead of a traceback
            problems.append(f"line {row}: the chat template cannot render this conversation ({exc})")
            rendered.append([])
    if problems:
        raise UserError(f"{data.source}: " + "; ".join(problems[:_SHOWN]) + "; fix the messages or pass another --template")
    texts = [text for pieces in rendered for text, _ in pieces]
    token_lists = iter(tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else iter([])
    features, truncated, too_long = [], 0, []
    for row, pieces in zip(data.rows, rendered, strict=True):
        ids: list[int] = []
        labels: list[int] = []
        for (_, is_reply), tokens in zip(pieces, token_lists):
            ids += tokens
            labels += tokens if is_reply else [IGNORE] * len(tokens)
        first_reply = next((i for i, label in enumerate(labels) if label != IGNORE), None)
        if first_reply is None or first_reply >= max_length:
            too_long.append((row, first_reply if first_reply is not None else len(ids)))
            continue
        if len(ids) > max_length:
            truncated += 1
            ids, labels = ids[:max_length], labels[:max_length]
        features.append({"input_ids": ids, "labels": labels})
    if too_long:
        shown = ", ".join(f"line {row} ({n} tokens)" for row, n in too_long[:_SHOWN]) + (
            f", ... {len(too_long) - _SHOWN} more" if len(too_long) > _SHOWN else ""
        )
        raise UserError(
            f"{data.source}: the prompt is longer than --max-length {max_length} tokens in {shown}, so no response token would be "
            f"trained on; raise --max-length (e.g. {_suggest(max(n for _, n in too_long))}) or shorten those prompts"
        )
    return features, truncated


def _suggest(tokens: int) -> int:
    return 1 << max(tokens + 64, 64).bit_length()


def generation_sample(data: SftData, config: RunConfig) -> list[int]:
    """Positions of the eval conversations decoded for BLEU/chrF: a seeded sample of ``--eval-generate`` (all when fewer)."""
    n = min(config.training.eval_generate, len(data.eval))
    return sorted(random.Random(config.training.seed).sample(range(len(data.eval)), n))


def prompt_ids(tokenizer, messages: Sequence[Message]) -> list[int]:
    """The prompt of a conversation as generation sees it: everything before the last reply, with the generation prompt."""
    prompt, _ = prompt_and_reference(list(messages))
    return tokenizer(_render(tokenizer, prompt, True), add_special_tokens=False)["input_ids"]


def _decode_sample(model, tokenizer, data: ChatData, sample: list[int], config: RunConfig, precision: str) -> list[str]:
    from tunesmith.generate.engine import greedy_batch

    prompts = [prompt_ids(tokenizer, data.conversations[i]) for i in sample]
    return greedy_batch(
        model,
        tokenizer,
        prompts,
        max_new_tokens=config.training.max_new_tokens,
        batch_size=config.training.eval_batch_size,
        precision=precision,
    )


def build_model(config: RunConfig, data: SftData):
    """The causal LM with a chat template; encodes the eval split and scores the untrained model on it ("before")."""
    import torch

    from tunesmith.training.hardware import resolve_precision

    tokenizer, model = load_causal_lm(config, "sft")
    data.output_layer = model.get_output_embeddings()
    ensure_chat_template(tokenizer, config.data.template, config.model.model)
    data.eval_features, data.eval_truncated = encode_conversations(tokenizer, data.eval, config.data.max_length)
    sample = generation_sample(data, config)
    replies = f" and {len(sample)} greedy replies" if sample else ""
    notice(f"scoring the untrained model (before): reply loss on {len(data.eval):,} eval examples{replies}")
    data.before = score_on_device(model, data.eval_features, config, tokenizer.pad_token_id)
    if sample:
        home = next(model.parameters()).device
        model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            data.generated_before = _decode_sample(
                model, tokenizer, data.eval, sample, config, resolve_precision(config.training.precision)
            )
        finally:
            model.to(home)
    return tokenizer, model


def encode(tokenizer, data: SftData, config: RunConfig) -> Encoded:
    """Training conversations packed into ``max_length`` sequences (or one per sequence with ``--no-packing``); eval unpacked."""
    if data.eval_features is None:
        data.eval_features, data.eval_truncated = encode_conversations(tokenizer, data.eval, config.data.max_length)
    features, truncated = encode_conversations(tokenizer, data.train, config.data.max_length)
    data.report["train_tokens"] = sum(len(f["input_ids"]) for f in features)
    data.report["train_reply_tokens"] = sum(sum(1 for x in f["labels"] if x != IGNORE) for f in features)
    if config.training.packing:
        packed = pack(features, config.data.max_length, config.training.seed)
        data.report["packing"] = {
            "examples": len(features),
            "sequences": len(packed),
            "fill": round(data.report["train_tokens"] / (len(packed) * config.data.max_length), 4),
        }
        features = packed
    return Encoded(EncodedDataset(features), EncodedDataset(data.eval_features), {"train": truncated, "eval": data.eval_truncated})


def make_loss(config: RunConfig, data: SftData) -> Callable:
    """Next-token cross-entropy over the reply tokens, the vocabulary projected at those positions only."""
    return make_labelled_token_loss(data)


def make_compute_metrics(data: SftData) -> None:
    """No logits-based metrics during training: eval loss only (vocabulary-wide logits would not fit in memory)."""
    return None


def translation_metrics(generated: Sequence[str], references: Sequence[str], before: Sequence[str] | None) -> dict[str, Any]:
    """BLEU and chrF of ``generated`` (and of ``before``, the untrained model's replies, when given)."""
    from tunesmith.evaluate.generation import translation_scores

    scores = translation_scores(generated, references)
    metrics = {
        "bleu": scores["bleu"],
        "chrf": scores["chrf"],
        "generated": scores["n"],
        "bleu_signature": scores["bleu_signature"],
        "chrf_signature": scores["chrf_signature"],
    }
    if before:
        earlier = translation_scores(before, references)
        metrics.update(bleu_before=earlier["bleu"], chrf_before=earlier["chrf"], bleu_after=scores["bleu"], chrf_after=scores["chrf"])
    return metrics


def evaluate(model, tokenizer, data: SftData, config: RunConfig, precision: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Reply loss/perplexity and BLEU/chrF of greedy replies after training, beside the untrained model's."""
    if data.eval_features is None:
        data.eval_features, data.eval_truncated = encode_conversations(tokenizer, data.eval, config.data.max_length)
    after = score_tokens(
        model, data.eval_features, batch_size=config.training.eval_batch_size, precision=precision, pad_token_id=tokenizer.pad_token_id
    )
    metrics: dict[str, Any] = {
        "generative": True,
        "n": len(data.eval),
        **before_after(data.before, after, ("perplexity", "eval_loss", "token_accuracy")),
    }
    sample = generation_sample(data, config)
    records = []
    if sample:
        generated = _decode_sample(model, tokenizer, data.eval, sample, config, precision)
        references = [prompt_and_reference(data.eval.conversations[i])[1] for i in sample]
        metrics.update(translation_metrics(generated, references, data.generated_before or None))
        for k, i in enumerate(sample):
            prompt, reference = prompt_and_reference(data.eval.conversations[i])
            record = {
                "row": data.eval.rows[i],
                "prompt": prompt[-1]["content"] if prompt else "",
                "reference": reference,
                "generated": generated[k],
            }
            if data.generated_before:
                record["generated_before"] = data.generated_before[k]
            records.append(record)
    metrics["max_new_tokens"] = config.training.max_new_tokens
    return metrics, records


class SftPredictor:
    """A tuned chat model: ``predict`` answers each text (greedy), ``evaluate`` scores replies on a file or the run's own eval split."""

    evaluates_own_split = True  # `tunesmith eval RUN` without --data scores the run's own eval split

    def __init__(self, model_dir: Path, config: RunConfig):
        from tunesmith.generate.engine import Generator

        self.config = config
        self.generator = Generator.load(model_dir)
        self.labels: list[str] = []

    def predict(self, texts: Sequence[str], *, batch_size: int | None = None) -> list[dict[str, Any]]:
        prompts = [self.generator.prompt_ids(text) for text in texts]
        replies = self.generator.complete_batch(
            prompts, max_new_tokens=self.config.training.max_new_tokens, batch_size=batch_size or self.config.training.eval_batch_size
        )
        return [{"generated": reply} for reply in replies]

    def evaluate(
        self,
        source: str | None,
        *,
        text_col: str | None = None,
        label_col: str | None = None,
        limit: int | None = None,
        max_new_tokens: int | None = None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Loss/perplexity on every example and BLEU/chrF of greedy replies to the first ``limit`` (default ``--eval-generate``).

        ``source`` None scores the run's own eval split (the same seeded split as in training).
        """
        cfg = self.config
        data = prepare_chat(cfg.data, seed=cfg.training.seed).eval if source is None else load_chat(source, encoding=cfg.data.encoding)
        gen = self.generator
        features, truncated = encode_conversations(gen.tokenizer, data, cfg.data.max_length)
        scores = score_tokens(
            gen.model, features, batch_size=cfg.training.eval_batch_size, precision=gen.precision, pad_token_id=gen.tokenizer.pad_token_id
        )
        n = min(len(data), cfg.training.eval_generate if limit is None else limit)
        sample = sorted(random.Random(cfg.training.seed).sample(range(len(data)), n))
        metrics: dict[str, Any] = {"generative": True, "n": len(data), "truncated": truncated, **scores}
        records = []
        if sample:
            prompts = [prompt_ids(gen.tokenizer, data.conversations[i]) for i in sample]
            new_tokens = max_new_tokens or cfg.training.max_new_tokens
            generated = gen.complete_batch(prompts, max_new_tokens=new_tokens, batch_size=cfg.training.eval_batch_size)
            references = [prompt_and_reference(data.conversations[i])[1] for i in sample]
            metrics.update(translation_metrics(generated, references, None), max_new_tokens=new_tokens)
            for k, i in enumerate(sample):
                prompt, reference = prompt_and_reference(data.conversations[i])
                records.append(
                    {
                        "row": data.rows[i],
                        "prompt": prompt[-1]["content"] if prompt else "",
                        "reference": reference,
                        "generated": generated[k],
                    }
                )
        return metrics, records


TASK = Task(
    name="sft",
    summary="instruction tuning of a chat LLM on conversations or prompt/response pairs (loss on replies only)",
    metrics={"loss": False},
    prepare=prepare,
    build_model=build_model,
    encode=encode,
    make_loss=make_loss,
    make_compute_metrics=make_compute_metrics,
    evaluate=evaluate,
    load_predictor=SftPredictor,
    peft_task_type="CAUSAL_LM",
    make_collator=make_collator,
    config_defaults={
        "model": "smollm2-135m",
        "train": "hsk_zh_en",
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
