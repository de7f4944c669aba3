"""Preference pairs (``prompt``, ``chosen``, ``rejected``): reading, validation, split and tokenization.

A pair says which of two answers to one prompt is better. Every way a pair can be unusable is
reported with the file and line before any model loads: a ``chosen`` without a ``rejected`` (or the
reverse), an empty answer, two identical answers (the pair teaches nothing), and, once the tokenizer
is known, a prompt that leaves no room for an answer within ``data.max_length``.

Tokenization follows TRL's preference trainers exactly (so the lengths checked here are the lengths
they see): with a chat template, the prompt is a user turn and each answer an assistant turn; without
one, prompt and answer are concatenated as they are and the end-of-sequence token appended. The
answer starts where the tokenized prompt and prompt+answer stop agreeing.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.data.loading import _more_lines, _snippet, read_table
from tunesmith.errors import UserError

PROMPT, CHOSEN, REJECTED = "prompt", "chosen", "rejected"
EXAMPLE = '{"prompt": "Translate to English: 你好", "chosen": "Hello", "rejected": "Goodbye"}'
_SHOWN = 5


@dataclass
class PreferencePairs:
    """Pairs with the file lines they came from; ``prompts`` are empty strings when the file has no prompt column."""

    source: str
    prompts: list[str]
    chosen: list[str]
    rejected: list[str]
    rows: list[int]
    has_prompt: bool

    def __len__(self) -> int:
        """Number of pairs."""
        return len(self.chosen)

    def subset(self, idx: Sequence[int]) -> PreferencePairs:
        """The pairs at positions ``idx``, in that order."""
        return PreferencePairs(
            self.source,
            [self.prompts[i] for i in idx],
            [self.chosen[i] for i in idx],
            [self.rejected[i] for i in idx],
            [self.rows[i] for i in idx],
            self.has_prompt,
        )


@dataclass
class PairFeatures:
    """One tokenized pair: the prompt's tokens and each answer's, already cut to ``max_length`` in total."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]

    def full(self, which: str) -> list[int]:
        """Prompt followed by the ``chosen`` or ``rejected`` answer."""
        return self.prompt_ids + (self.chosen_ids if which == CHOSEN else self.rejected_ids)


@dataclass
class PreparedPreferences:
    """Train and eval pairs of a preference run; the tasks add tokenized eval pairs and the model's scores before training."""

    train: PreferencePairs
    eval: PreferencePairs
    report: dict[str, Any]
    chat: bool = False
    train_features: list[PairFeatures] | None = None
    train_truncated: int = 0
    eval_features: list[PairFeatures] | None = None
    eval_truncated: int = 0
    before: dict[str, Any] = field(default_factory=dict)


def load_pairs(source: str | Path, *, encoding: str = "utf-8", require_prompt: bool = False) -> PreferencePairs:
    """Read and validate preference pairs from a JSONL, CSV/TSV or Parquet file.

    Args:
        source: the file; it needs ``chosen`` and ``rejected`` columns and usually ``prompt``. A packaged
            instruction dataset's name (``hsk_zh_en``) gives its demo pairs: the reference answer chosen,
            another example's rejected (``tunesmith data preferences``).
        encoding: text encoding of text files.
        require_prompt: refuse pairs without a prompt (DPO scores each answer given its prompt).

    Returns:
        The pairs in file order.

    Raises:
        UserError: naming the file and the lines of every unusable pair (first few shown), or the
            missing columns.
    """
    shown = str(source)
    from tunesmith.data.packaged import PACKAGED  # late: packaged data reads through modules built on this one

    if shown in PACKAGED and not Path(shown).exists():
        return _packaged_pairs(shown)
    table = read_table(source, encoding=encoding)
    columns = {c.strip().casefold(): c for c in table.columns}
    if CHOSEN not in columns and REJECTED not in columns:
        raise UserError(
            f"{shown} has no `chosen` and `rejected` columns (found: {', '.join(table.columns)}); preference data needs one pair per line, "
            f"e.g. {EXAMPLE}"
        )
    if require_prompt and PROMPT not in columns:
        raise UserError(
            f"{shown} has no `prompt` column (found: {', '.join(table.columns)}); DPO scores each answer given its prompt, e.g. {EXAMPLE}"
        )
    get = {name: columns.get(name) for name in (PROMPT, CHOSEN, REJECTED)}
    problems: list[tuple[int, str]] = []
    prompts, chosen, rejected, rows = [], [], [], []
    for line, row in zip(table.lines, table.rows, strict=True):
        values = {name: (row.get(col) if col is not None else None) for name, col in get.items()}
        problem = _pair_problem(values, require_prompt=require_prompt)
        if problem:
            problems.append((line, problem))
            continue
        prompts.append(values[PROMPT] if isinstance(values[PROMPT], str) else "")
        chosen.append(values[CHOSEN])
        rejected.append(values[REJECTED])
        rows.append(line)
    if problems:
        first_line, first = problems[0]
        others = "".join(f"\n  line {n}: {p}" for n, p in problems[1:_SHOWN])
        more = _more_lines([n for n, _ in problems[_SHOWN:]], "unusable pairs")
        raise UserError(f"{shown} line {first_line}: {first}{others}{more}")
    if not chosen:
        raise UserError(f"{shown} holds no preference pairs; write one per line, e.g. {EXAMPLE}")
    return PreferencePairs(shown, prompts, chosen, rejected, rows, has_prompt=get[PROMPT] is not None)


def _packaged_pairs(name: str) -> PreferencePairs:
    """The demo pairs of a packaged instruction dataset (see :mod:`tunesmith.preference.recipes`), seed 0."""
    from tunesmith.data.packaged import PACKAGED
    from tunesmith.preference.recipes import translation_preferences

    if PACKAGED[name].task != "sft":
        demo = ", ".join(sorted(n for n, ds in PACKAGED.items() if ds.task == "sft"))
        raise UserError(
            f"packaged dataset {name!r} holds {PACKAGED[name].task} data, not preference pairs; pass a JSON Lines file of pairs, "
            f"e.g. {EXAMPLE}, or a packaged instruction dataset ({demo}) for demo pairs (`tunesmith data preferences` shows them)"
        )
    pairs = translation_preferences(name)
    return PreferencePairs(
        name,
        [p[PROMPT] for p in pairs],
        [p[CHOSEN] for p in pairs],
        [p[REJECTED] for p in pairs],
        [p["source_row"] for p in pairs],
        has_prompt=True,
    )


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _pair_problem(values: dict[str, Any], *, require_prompt: bool) -> str | None:
    """What makes one pair unusable, or None."""
    has_chosen, has_rejected = values[CHOSEN] is not None, values[REJECTED] is not None
    if has_chosen and not has_rejected:
        return "a `chosen` answer without a `rejected` one; every pair needs both (the better and the worse answer to the same prompt)"
    if has_rejected and not has_chosen:
        return "a `rejected` answer without a `chosen` one; every pair needs both (the better and the worse answer to the same prompt)"
    if not has_chosen:
        return f"no `chosen` and no `rejected` answer; write both, e.g. {EXAMPLE}"
    for name in (PROMPT, CHOSEN, REJECTED):
        value = values[name]
        if isinstance(value, (list, dict)):
            return f"`{name}` is a {'list' if isinstance(value, list) else 'mapping'}; give plain text (chat messages are not supported here: put the user's message in `prompt`)"
        if value is not None and not isinstance(value, str):
            return f"`{name}` is {value!r}, not text; quote it as a string"
    for name in (CHOSEN, REJECTED):
        if not values[name].strip():
            return f"empty `{name}` answer; give the text of the answer, or drop the pair"
    if values[CHOSEN].strip() == values[REJECTED].strip():
        return f"`chosen` and `rejected` are the same text ({_snippet(values[CHOSEN], 40)}); the pair teaches nothing: fix the rejected answer or drop the pair"
    if require_prompt and not _present(values[PROMPT]):
        return "empty or missing `prompt`; every pair needs the prompt both answers reply to"
    return None


def dedupe_pairs(pairs: PreferencePairs) -> tuple[PreferencePairs, int]:
    """Drop exact-duplicate (prompt, chosen, rejected) triples, keeping the first; returns the kept pairs and how many were dropped."""
    first: dict[tuple[str, str, str], int] = {}
    for i, key in enumerate(zip(pairs.prompts, pairs.chosen, pairs.rejected)):
        first.setdefault(key, i)
    keep = sorted(first.values())
    return pairs.subset(keep), len(pairs) - len(keep)


def prompt_holdout(pairs: PreferencePairs, fraction: float, seed: int) -> tuple[PreferencePairs, PreferencePairs]:
    """A seeded split that keeps all pairs of one prompt on the same side (no prompt leaks into eval).

    Prompts are drawn in a seeded random order until at least ``ceil(fraction * n)`` pairs are held out.

    Raises:
        UserError: when either side would be empty.
    """
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(pairs.prompts):
        # pairs without a prompt are each their own group
        groups.setdefault(prompt if prompt else f"\0{i}", []).append(i)
    keys = list(groups)
    random.Random(seed).shuffle(keys)
    target = math.ceil(fraction * len(pairs))
    held: list[int] = []
    for key in keys:
        if len(held) >= target:
            break
        held += groups[key]
    if len(held) >= len(pairs):
        raise UserError(
            f"{pairs.source}: a {fraction * 100:g}% eval split of {len(pairs)} pairs ({len(groups)} distinct prompts) leaves no training pair; "
            "add pairs, lower --eval-fraction, or give an eval file with --eval FILE"
        )
    held_set = set(held)
    return pairs.subset([i for i in range(len(pairs)) if i not in held_set]), pairs.subset(sorted(held_set))


def prepare_preferences(config, *, require_prompt: bool = False) -> PreparedPreferences:
    """Load, validate, dedupe and split the pairs of a run (raises UserError on bad input)."""
    d = config.data
    train = load_pairs(d.train, encoding=d.encoding, require_prompt=require_prompt)
    rows_read = len(train)
    deduped, removed = dedupe_pairs(train)
    if d.dedupe:
        train = deduped
    report: dict[str, Any] = {
        "source": train.source,
        "eval_source": d.eval,
        "rows_read": rows_read,
        "duplicates_removed": removed if d.dedupe else 0,
        "has_prompt": train.has_prompt,
    }
    if d.eval is None:
        train, evaluation = prompt_holdout(train, d.eval_fraction, config.training.seed)
        report["split"] = f"random holdout {d.eval_fraction * 100:g}% by prompt, seed {config.training.seed}"
    else:
        evaluation = load_pairs(d.eval, encoding=d.encoding, require_prompt=require_prompt)
        known = set(train.prompts)
        report.update(
            split="eval file", eval_rows_read=len(evaluation), eval_prompts_in_train=sum(p in known for p in evaluation.prompts if p)
        )
    report.update(train_size=len(train), eval_size=len(evaluation))
    return PreparedPreferences(train=train, eval=evaluation, report=report)


# ---------------------------------------------------------------- tokenization


def uses_chat_template(tokenizer, pairs: PreferencePairs) -> bool:
    """Pairs with prompts are formatted as a chat (user turn, assistant turn) when the tokenizer has a chat template."""
    return pairs.has_prompt and bool(getattr(tokenizer, "chat_template", None))


def as_messages(prompt: str, answer: str | None = None) -> list[dict[str, str]]:
    """A user turn (and an assistant turn with ``answer``)."""
    messages = [{"role": "user", "content": prompt}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def trl_example(prompt: str, chosen: str, rejected: str, chat: bool) -> dict[str, Any]:
    """One pair in the form TRL's preference trainers read: conversational with a chat template, else plain text."""
    if chat:
        return {PROMPT: as_messages(prompt), CHOSEN: as_messages(prompt, chosen)[1:], REJECTED: as_messages(prompt, rejected)[1:]}
    return {PROMPT: prompt, CHOSEN: chosen, REJECTED: rejected}


def _ids(tokenizer, value: str | list[dict[str, str]], **chat_kwargs) -> list[int]:
    if isinstance(value, list):
        return list(tokenizer.apply_chat_template(value, tokenize=True, return_dict=True, **chat_kwargs)["input_ids"])
    return list(tokenizer(text=value)["input_ids"])


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokenize_pair(tokenizer, prompt: str, chosen: str, rejected: str, chat: bool) -> PairFeatures:
    """Token ids of one pair as TRL's DPO and reward trainers build them (not yet cut to a maximum length)."""
    if chat:
        prompt_ids = _ids(tokenizer, as_messages(prompt), add_generation_prompt=True)
        with_chosen = _ids(tokenizer, as_messages(prompt, chosen))
        with_rejected = _ids(tokenizer, as_messages(prompt, rejected))
    else:
        eos = tokenizer.eos_token or ""
        prompt_ids = _ids(tokenizer, prompt)
        with_chosen = _ids(tokenizer, prompt + chosen + ("" if chosen.endswith(eos) else eos))
        with_rejected = _ids(tokenizer, prompt + rejected + ("" if rejected.endswith(eos) else eos))
    start = min(_common_prefix(prompt_ids, with_chosen), _common_prefix(prompt_ids, with_rejected))
    return PairFeatures(prompt_ids[:start], with_chosen[start:], with_rejected[start:])


def tokenize_pairs(tokenizer, pairs: PreferencePairs, max_length: int, chat: bool) -> tuple[list[PairFeatures], int]:
    """Tokenize every pair, keeping the start of sequences longer than ``max_length``; returns the features and how many were cut.

    Raises:
        UserError: naming the lines whose prompt alone fills ``max_length`` (no answer token would be left to learn from).
    """
    features, truncated, too_long = [], 0, []
    for prompt, chosen, rejected, line in zip(pairs.prompts, pairs.chosen, pairs.rejected, pairs.rows, strict=True):
        feat = tokenize_pair(tokenizer, prompt, chosen, rejected, chat)
        if len(feat.prompt_ids) >= max_length:
            too_long.append((line, len(feat.prompt_ids)))
            continue
        room = max_length - len(feat.prompt_ids)
        if len(feat.chosen_ids) > room or len(feat.rejected_ids) > room:
            truncated += 1
            feat = PairFeatures(feat.prompt_ids, feat.chosen_ids[:room], feat.rejected_ids[:room])
        features.append(feat)
    if too_long:
        line, n = too_long[0]
        others = ", ".join(f"{ln} ({k} tokens)" for ln, k in too_long[1:_SHOWN])
        more = f"; also lines {others}" + (f" and {len(too_long) - _SHOWN} more" if len(too_long) > _SHOWN else "") if others else ""
        raise UserError(
            f"{pairs.source} line {line}: the prompt is {n} tokens{' with the chat template' if chat else ''}, which leaves no room for the answer "
            f"within --max-length {max_length}{more}; raise --max-length (e.g. {_round_up(max(k for _, k in too_long) * 2)}) or shorten the prompt"
        )
    return features, truncated


def _round_up(n: int) -> int:
    return 1 << max(3, (n - 1).bit_length())


def tokenize_both(tokenizer, data: PreparedPreferences, max_length: int) -> None:
    """Decide the format (chat template or plain text) and tokenize both splits, so a too-long prompt anywhere is reported first."""
    data.chat = uses_chat_template(tokenizer, data.train)
    data.report["format"] = "chat template" if data.chat else "plain text"
    data.train_features, data.train_truncated = tokenize_pairs(tokenizer, data.train, max_length, data.chat)
    data.eval_features, data.eval_truncated = tokenize_pairs(tokenizer, data.eval, max_length, data.chat)
