"""Sequence-to-sequence fine-tuning of encoder-decoder models (T5, BART, Marian): translation, summarisation, rewriting.

Training is teacher-forced: the decoder reads the reference target shifted right and learns to predict
each next token (the model's own loss). Evaluation generates: greedy outputs for a seeded sample of the
eval sources (``training.eval_generate``), scored with BLEU and chrF (sacrebleu) against the references,
before training and after, on the same sample.

Data: a CSV/TSV/JSONL/Parquet file with a source and a target column (``source``/``target``,
``prompt``/``response``, ``input``/``output``, ... or ``--text-col``/``--label-col``), or a packaged
instruction dataset (``hsk_zh_en``: its prompt is the source, its reply the target).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.config import RunConfig
from tunesmith.data.loading import _more_lines, _snippet, read_table
from tunesmith.data.unlabelled import random_holdout
from tunesmith.errors import UserError
from tunesmith.tasks.base import Encoded, EncodedDataset, Task, labelled_token_accuracy, load_pretrained, predicted_tokens

# (source, target) column names tried in this order, ignoring case, when the columns are not given
COLUMN_PAIRS: tuple[tuple[str, str], ...] = (
    ("source", "target"),
    ("src", "tgt"),
    ("prompt", "response"),
    ("prompt", "completion"),
    ("input", "output"),
    ("text", "target"),
    ("text", "summary"),
    ("document", "summary"),
    ("question", "answer"),
)
_EXAMPLE = '{"source": "你好", "target": "Hello"}'
_SHOWN = 5


@dataclass
class TextPairs:
    """Source and target texts with the file lines (or packaged records) they came from."""

    source: str
    sources: list[str]
    targets: list[str]
    rows: list[int]

    def __len__(self) -> int:
        """Number of pairs."""
        return len(self.sources)

    def subset(self, idx: Sequence[int]) -> TextPairs:
        """The pairs at positions ``idx``, in that order."""
        return TextPairs(self.source, [self.sources[i] for i in idx], [self.targets[i] for i in idx], [self.rows[i] for i in idx])


@dataclass
class Seq2SeqData:
    """Train and eval pairs; ``build_model`` adds the eval sample and the untrained model's outputs on it."""

    train: TextPairs
    eval: TextPairs
    report: dict[str, Any]
    sample: list[int] = field(default_factory=list)
    generated_before: list[str] = field(default_factory=list)


def load_text_pairs(source: str, source_col: str | None = None, target_col: str | None = None, *, encoding: str = "utf-8") -> TextPairs:
    """Read (source, target) pairs from a table file or a packaged instruction dataset.

    Raises:
        UserError: missing columns (listing those found), or rows with an empty or non-text side (by line).
    """
    from tunesmith.data.packaged import PACKAGED

    source = str(source)
    if source in PACKAGED and not Path(source).exists():
        return _packaged_pairs(source)
    table = read_table(source, encoding=encoding)
    src, tgt = _columns(table.columns, source, source_col, target_col)
    sources, targets, rows, problems = [], [], [], []
    for line, row in zip(table.lines, table.rows, strict=True):
        s, t = row.get(src), row.get(tgt)
        bad = [name for name, value in ((src, s), (tgt, t)) if not isinstance(value, str) or not value.strip()]
        if bad:
            shown = ", ".join(f"`{name}` is {_snippet(str(row.get(name)), 30) if row.get(name) is not None else 'missing'}" for name in bad)
            problems.append((line, f"{shown}; every row needs a non-empty source and target text"))
            continue
        sources.append(s)
        targets.append(t)
        rows.append(line)
    if problems:
        line, first = problems[0]
        others = "".join(f"\n  line {n}: {p}" for n, p in problems[1:_SHOWN])
        raise UserError(f"{source} line {line}: {first}{others}{_more_lines([n for n, _ in problems[_SHOWN:]], 'bad rows')}")
    return TextPairs(source, sources, targets, rows)


def _columns(columns: list[str], source: str, source_col: str | None, target_col: str | None) -> tuple[str, str]:
    by_name = {c.strip().casefold(): c for c in columns}
    found = ", ".join(columns)
    for given, flag in ((source_col, "--text-col"), (target_col, "--label-col")):
        if given is not None and given.strip().casefold() not in by_name:
            raise UserError(f"{source} has no column {given!r} (given with {flag}); its columns are: {found}")
    for s, t in COLUMN_PAIRS:
        src = by_name[source_col.strip().casefold()] if source_col else by_name.get(s)
        tgt = by_name[target_col.strip().casefold()] if target_col else by_name.get(t)
        if src is not None and tgt is not None and src != tgt:
            return src, tgt
    names = ", ".join(f"{s}/{t}" for s, t in COLUMN_PAIRS[:5])
    raise UserError(
        f"{source}: cannot tell the source and target columns apart (columns: {found}); name them {names}, "
        f"or pass --text-col SOURCE --label-col TARGET; e.g. {_EXAMPLE}"
    )


def _packaged_pairs(name: str) -> TextPairs:
    """A packaged instruction dataset as pairs: each single-turn example's prompt is the source, its reply the target."""
    from tunesmith.data.chat import load_chat, prompt_and_reference
    from tunesmith.data.packaged import PACKAGED

    if PACKAGED[name].task != "sft":
        raise UserError(
            f"packaged dataset {name!r} holds {PACKAGED[name].task} data, not source/target pairs; "
            f"pass a file with source and target columns (e.g. {_EXAMPLE}) or hsk_zh_en"
        )
    data = load_chat(name)
    sources, targets, rows = [], [], []
    for messages, row in zip(data.conversations, data.rows, strict=True):
        context, reference = prompt_and_reference(messages)
        if len(context) == 1 and context[0]["role"] == "user":
            sources.append(context[0]["content"])
            targets.append(reference)
            rows.append(row)
    return TextPairs(name, sources, targets, rows)


def _dedupe(pairs: TextPairs) -> tuple[TextPairs, int]:
    first: dict[tuple[str, str], int] = {}
    for i, key in enumerate(zip(pairs.sources, pairs.targets)):
        first.setdefault(key, i)
    keep = sorted(first.values())
    return pairs.subset(keep), len(pairs) - len(keep)


def prepare(config: RunConfig) -> Seq2SeqData:
    """Load, validate, dedupe and split the pairs (a seeded random holdout unless an eval file is given)."""
    d, seed = config.data, config.training.seed
    train = load_text_pairs(d.train, d.text_col, d.label_col, encoding=d.encoding)
    rows_read = len(train)
    deduped, removed = _dedupe(train)
    if d.dedupe:
        train = deduped
    report: dict[str, Any] = {
        "source": train.source,
        "eval_source": d.eval,
        "rows_read": rows_read,
        "duplicates_removed": removed if d.dedupe else 0,
    }
    if d.eval is None:
        train, evaluation = random_holdout(train, d.eval_fraction, seed, noun="pair")
        report["split"] = f"random holdout {d.eval_fraction * 100:g}%, seed {seed}"
    else:
        evaluation = load_text_pairs(d.eval, d.text_col, d.label_col, encoding=d.encoding)
        known = set(train.sources)
        report.update(split="eval file", eval_rows_read=len(evaluation), eval_sources_in_train=sum(s in known for s in evaluation.sources))
    report.update(train_size=len(train), eval_size=len(evaluation))
    return Seq2SeqData(train, evaluation, report)


def check_encoder_decoder(config: RunConfig) -> None:
    """Refuse a decoder-only or encoder-only model with the task to use instead."""
    import transformers

    from tunesmith.models import load_failure, resolve_model

    try:
        model_config = transformers.AutoConfig.from_pretrained(resolve_model(config.model.model))
    except (OSError, ValueError, KeyError) as exc:
        raise load_failure(config.model.model, exc) from None
    if not getattr(model_config, "is_encoder_decoder", False):
        arch = ", ".join(getattr(model_config, "architectures", None) or [model_config.model_type])
        raise UserError(
            f"model {config.model.model!r} ({arch}) is not an encoder-decoder; --task seq2seq needs a T5, BART or Marian model directory. "
            "For a decoder-only chat model such as smollm2-135m, use --task sft (translation pairs become prompt/response turns)"
        )


def generation_sample(n_eval: int, config: RunConfig) -> list[int]:
    """The seeded sample of eval pairs that are generated for BLEU/chrF (``training.eval_generate`` of them)."""
    n = min(n_eval, config.training.eval_generate)
    return sorted(random.Random(config.training.seed).sample(range(n_eval), n))


def source_ids(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each source, cut to ``max_length`` keeping the closing special token."""
    features, _ = _cut(tokenizer(list(texts))["input_ids"], max_length)
    return features


def _cut(all_ids: Sequence[Sequence[int]], max_length: int) -> tuple[list[list[int]], int]:
    out, cut = [], 0
    for ids in all_ids:
        ids = list(ids)
        if len(ids) > max_length:
            cut += 1
            ids = ids[: max_length - 1] + ids[-1:]
        out.append(ids)
    return out, cut


def generate_outputs(model, tokenizer, texts: Sequence[str], config: RunConfig, precision: str) -> list[str]:
    """Greedy outputs for ``texts`` (in order), at most ``training.max_new_tokens`` tokens each."""
    from tunesmith.generate.engine import greedy_batch

    prompts = source_ids(tokenizer, texts, config.data.max_length)
    return greedy_batch(
        model,
        tokenizer,
        prompts,
        max_new_tokens=config.training.max_new_tokens,
        batch_size=config.training.eval_batch_size,
        precision=precision,
    )


def build_model(config: RunConfig, data: Seq2SeqData):
    """The encoder-decoder to tune; also its greedy outputs on the eval sample before training (the "before" BLEU/chrF)."""
    from transformers import AutoModelForSeq2SeqLM

    from tunesmith.preference.common import on_training_device
    from tunesmith.training.hardware import resolve_precision

    check_encoder_decoder(config)
    tokenizer, model = load_pretrained(config, AutoModelForSeq2SeqLM)
    if tokenizer.pad_token is None:
        raise UserError(f"model {config.model.model!r} has a tokenizer without a pad token; an encoder-decoder needs one to pad batches")
    data.sample = generation_sample(len(data.eval), config)
    if data.sample:
        with on_training_device(model):
            data.generated_before = generate_outputs(
                model, tokenizer, [data.eval.sources[i] for i in data.sample], config, resolve_precision(config.training.precision)
            )
    return tokenizer, model


def encode(tokenizer, data: Seq2SeqData, config: RunConfig) -> Encoded:
    """Sources as encoder inputs, targets as labels, each cut to ``max_length`` (counted when either side is cut)."""
    limit = config.data.max_length
    splits, truncated = {}, {}
    for split, pairs in (("train", data.train), ("eval", data.eval)):
        raw_inputs, raw_labels = tokenizer(list(pairs.sources))["input_ids"], tokenizer(text_target=list(pairs.targets))["input_ids"]
        inputs, labels = _cut(raw_inputs, limit)[0], _cut(raw_labels, limit)[0]
        splits[split] = EncodedDataset(
            [{"input_ids": s, "attention_mask": [1] * len(s), "labels": t} for s, t in zip(inputs, labels, strict=True)]
        )
        truncated[split] = sum(1 for s, t in zip(raw_inputs, raw_labels, strict=True) if len(s) > limit or len(t) > limit)
    return Encoded(splits["train"], splits["eval"], truncated)


def make_collator(tokenizer):
    """Pads inputs with the pad token and labels with -100; the model builds the decoder inputs from the labels."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)


def make_loss(config: RunConfig, data: Seq2SeqData) -> None:
    """The model's own loss: teacher-forced cross-entropy over the target tokens."""
    return None


def make_compute_metrics(data: Seq2SeqData) -> Callable:
    """Teacher-forced token accuracy on the targets, against ``label_ids`` (the Trainer adds ``eval_loss``)."""
    return lambda pred: {"token_accuracy": labelled_token_accuracy(pred)}


def evaluate(model, tokenizer, data: Seq2SeqData, config: RunConfig, precision: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """BLEU and chrF of greedy outputs on the eval sample, after training and before (same sample, same settings)."""
    from tunesmith.tasks.sft import translation_metrics

    metrics: dict[str, Any] = {"generative": True, "n": len(data.eval), "max_new_tokens": config.training.max_new_tokens}
    if not data.sample:
        return metrics, []
    sources = [data.eval.sources[i] for i in data.sample]
    references = [data.eval.targets[i] for i in data.sample]
    generated = generate_outputs(model, tokenizer, sources, config, precision)
    metrics.update(translation_metrics(generated, references, data.generated_before or None))
    records = []
    for k, i in enumerate(data.sample):
        record = {"row": data.eval.rows[i], "source": sources[k], "reference": references[k], "generated": generated[k]}
        if data.generated_before:
            record["generated_before"] = data.generated_before[k]
        records.append(record)
    return metrics, records


class Seq2SeqPredictor:
    """A tuned encoder-decoder: ``predict`` generates an output per text, ``evaluate`` scores BLEU/chrF on a file of pairs."""

    def __init__(self, model_dir: Path, config: RunConfig):
        from tunesmith.generate.engine import Generator

        self.config = config
        self.generator = Generator.load(model_dir)
        self.labels: list[str] = []

    def predict(self, texts: Sequence[str], *, batch_size: int | None = None) -> list[dict[str, Any]]:
        """The greedy output (``generated``) for each text."""
        gen = self.generator
        prompts = source_ids(gen.tokenizer, texts, self.config.data.max_length)
        outputs = gen.complete_batch(
            prompts, max_new_tokens=self.config.training.max_new_tokens, batch_size=batch_size or self.config.training.eval_batch_size
        )
        return [{"generated": text} for text in outputs]

    def evaluate(self, source: str, *, text_col: str | None, label_col: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """BLEU and chrF of greedy outputs for a seeded sample (``training.eval_generate``) of a file's pairs."""
        from tunesmith.tasks.sft import translation_metrics

        pairs = load_text_pairs(source, text_col, label_col, encoding=self.config.data.encoding)
        sample = generation_sample(len(pairs), self.config)
        sources = [pairs.sources[i] for i in sample]
        references = [pairs.targets[i] for i in sample]
        generated = [row["generated"] for row in self.predict(sources)]
        metrics = {"generative": True, "n": len(pairs), **translation_metrics(generated, references, None)}
        records = [
            {"row": pairs.rows[i], "source": sources[k], "reference": references[k], "generated": generated[k]}
            for k, i in enumerate(sample)
        ]
        return metrics, records


TASK = Task(
    name="seq2seq",
    summary="encoder-decoder (T5/BART/Marian) on source/target pairs: translation, summarisation; BLEU and chrF",
    metrics={"loss": False, "token_accuracy": True},
    prepare=prepare,
    build_model=build_model,
    encode=encode,
    make_loss=make_loss,
    make_compute_metrics=make_compute_metrics,
    evaluate=evaluate,
    load_predictor=Seq2SeqPredictor,
    peft_task_type="SEQ_2_SEQ_LM",
    make_collator=make_collator,
    make_preprocess_logits=predicted_tokens,
    config_defaults={"train": "hsk_zh_en"},
)
