"""Texts with label sets (none, one or several labels each): loading, validation, dedupe and a seeded split.

A CSV/TSV cell holds the labels joined by ``data.label_sep`` (``sports|politics``; an empty cell is a
text with none of the labels); a JSONL/Parquet field holds a list of strings, or one string that is
split the same way. Column detection and text validation are the single-label ones from
:mod:`tunesmith.data.texts`, so both tasks read the same files the same way.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.config import DataConfig
from tunesmith.data.loading import Table, read_table
from tunesmith.data.packaged import PACKAGED
from tunesmith.data.texts import (
    _collect_texts,
    _detect,
    _lines,
    _match_column,
    _resolve_label_column,
    _resolve_text_column,
    _rows,
    natural_key,
)
from tunesmith.errors import UserError

MULTI_LABEL_COLUMN_NAMES: tuple[str, ...] = ("labels", "tags", "categories", "topics", "genres", "classes", "label", "tag", "category")
"""Column names tried first, ignoring case, when no label column is given (then the single-label names)."""


@dataclass
class LabelSets:
    """Texts, the labels of each (deduplicated, stripped, possibly empty) and the file lines they came from."""

    source: str
    texts: list[str]
    label_sets: list[list[str]]
    rows: list[int]
    text_col: str
    label_col: str

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: Sequence[int]) -> LabelSets:
        """The examples at positions ``idx``, in that order."""
        return LabelSets(
            self.source,
            [self.texts[i] for i in idx],
            [self.label_sets[i] for i in idx],
            [self.rows[i] for i in idx],
            self.text_col,
            self.label_col,
        )


@dataclass
class PreparedMultiLabel:
    """Train and eval examples of a multi-label run, the sorted label names and a JSON-ready report."""

    train: LabelSets
    eval: LabelSets
    labels: list[str]
    report: dict[str, Any]


def label_matrix(label_sets: Sequence[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
    """``[n, k]`` 0/1 matrix: ``y[i, j] == 1`` when text ``i`` has ``labels[j]`` (unknown labels are ignored)."""
    index = {name: j for j, name in enumerate(labels)}
    y = np.zeros((len(label_sets), len(labels)), dtype=np.int64)
    for i, chosen in enumerate(label_sets):
        for name in chosen:
            if name in index:
                y[i, index[name]] = 1
    return y


def parse_label_cell(value: Any, sep: str) -> list[str] | None:
    """The labels in one cell, stripped and without repeats; None when the cell is neither a string nor a list of strings."""
    if isinstance(value, str):
        parts = value.split(sep)
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        parts = list(value)
    else:
        return None
    return list(dict.fromkeys(p.strip() for p in parts if p.strip()))


def load_label_sets(
    source: str, text_col: str | None = None, label_col: str | None = None, *, label_sep: str = "|", encoding: str = "utf-8"
) -> LabelSets:
    """Load texts and their label sets from a CSV/TSV/JSONL/Parquet file.

    Raises:
        UserError: unreadable file, missing column, empty texts, a missing label cell (null or absent
            field) or a label that is neither a string nor a list of strings (all lines counted, the first named).
    """
    source = str(source)
    if source in PACKAGED and not Path(source).exists():
        raise UserError(
            f"'{source}' is a packaged dataset with one label per text; multi-label training needs a file whose label column "
            f"holds label sets (`a{label_sep}b` in CSV, a list in JSONL); train without --multi-label, or pass such a file"
        )
    return label_sets_from_table(read_table(source, encoding=encoding), source, text_col, label_col, label_sep=label_sep)


def label_sets_from_table(table: Table, source: str, text_col: str | None, label_col: str | None, *, label_sep: str) -> LabelSets:
    """Like :func:`load_label_sets` for a table already read; ``source`` names it in messages."""
    label = _resolve_multi_label_column(table, source, label_col, text_col)
    text = _resolve_text_column(table, source, text_col, label)
    if text == label:
        raise UserError(
            f"{source}: --text-col and --label-col both name column '{text}'; the text and the labels must be different columns"
        )
    texts, problems = _collect_texts(table, text)
    label_sets, label_problems = _collect_label_sets(table, label, label_sep)
    problems += label_problems
    if len(problems) == 1:
        raise UserError(f"{source}: {problems[0]}")
    if problems:
        raise UserError(f"{source} has {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))
    return LabelSets(source, texts, label_sets, list(table.lines), text, label)


def _resolve_multi_label_column(table: Table, source: str, requested: str | None, text_col: str | None) -> str:
    if requested is None:
        exclude = _match_column(table.columns, text_col) if text_col else None
        found = _detect(table.columns, MULTI_LABEL_COLUMN_NAMES, exclude)
        if found is not None:
            return found
    resolved = _resolve_label_column(table, source, requested, text_col, True)
    assert resolved is not None  # required: a missing column raised
    return resolved


def _collect_label_sets(table: Table, column: str, sep: str) -> tuple[list[list[str]], list[str]]:
    label_sets: list[list[str]] = []
    missing: list[int] = []
    wrong: list[tuple[int, Any]] = []
    for row, line in zip(table.rows, table.lines, strict=True):
        value = row[column]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            missing.append(line)
            label_sets.append([])
            continue
        parsed = parse_label_cell(value, sep)
        if parsed is None:
            wrong.append((line, value))
            parsed = []
        label_sets.append(parsed)
    problems = []
    if missing:
        problems.append(
            f"{_rows(missing)} no label cell in column '{column}' (null, NaN or a missing field; {_lines(missing)}); "
            'a text with none of the labels needs an empty cell ("" in CSV, [] in JSONL), otherwise label or remove them'
        )
    if wrong:
        lines = [line for line, _ in wrong]
        problems.append(
            f"{_rows(lines)} labels that are neither a list of strings nor a string in column '{column}' ({_lines(lines)}; "
            f'e.g. {wrong[0][1]!r}); write them as a list such as ["sports", "politics"] or as one string "sports{sep}politics"'
        )
    return label_sets, problems


def dedupe(data: LabelSets) -> tuple[LabelSets, int, int]:
    """Drop exact-duplicate texts, keeping the first; also counts texts that occur with different label sets."""
    first: dict[str, int] = {}
    seen: dict[str, set[frozenset[str]]] = {}
    for i, text in enumerate(data.texts):
        first.setdefault(text, i)
        seen.setdefault(text, set()).add(frozenset(data.label_sets[i]))
    keep = sorted(first.values())
    conflicting = sum(1 for sets in seen.values() if len(sets) > 1)
    return data.subset(keep), len(data) - len(keep), conflicting


def check_known_labels(data: LabelSets, labels: Sequence[str], known_from: str) -> None:
    """Raise when ``data`` holds labels outside ``labels`` (which came from ``known_from``), naming them and their lines."""
    known = set(labels)
    counts = Counter(name for chosen in data.label_sets for name in chosen if name not in known)
    if not counts:
        return
    unseen = sorted(counts, key=natural_key)
    lines = [row for row, chosen in zip(data.rows, data.label_sets, strict=True) if any(name not in known for name in chosen)]
    listed = ", ".join(f"'{name}' ({counts[name]} rows)" for name in unseen[:10])
    raise UserError(
        f"{data.source}: {len(unseen)} label{'s' if len(unseen) > 1 else ''} never seen in training: {listed}; {_lines(lines)}. "
        f"Labels in {known_from}: {', '.join(labels)}. Fix these labels or add training examples for them"
    )


def iterative_split(label_sets: Sequence[Sequence[str]], labels: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded train/eval indices by iterative stratification (Sechidis et al., 2011), then every label put in train.

    The rarest labels are placed first, each example going to the side that still wants most of that
    label, so rare labels are shared out instead of landing all on one side by chance. A label the
    split left out of train gets one of its examples moved there: the model cannot learn a label it never sees.
    """
    rng = np.random.default_rng(seed)
    n = len(label_sets)
    y = label_matrix(label_sets, labels).astype(bool)
    n_eval = math.ceil(fraction * n)
    want_total = np.array([n - n_eval, n_eval], dtype=np.float64)  # side 0: train, side 1: eval
    want = np.outer(y.sum(axis=0), [1.0 - fraction, fraction])
    side = np.full(n, -1)
    left = y.sum(axis=0).astype(np.int64)
    order = rng.permutation(n)

    def place(i: int, pick: int) -> None:
        side[i] = pick
        want_total[pick] -= 1
        want[y[i], pick] -= 1
        left[y[i]] -= 1

    def choose(scores: np.ndarray) -> int:
        return int(np.argmax(scores)) if scores[0] != scores[1] else -1

    while (left > 0).any():
        label = int(np.argmin(np.where(left > 0, left, np.iinfo(np.int64).max)))
        for i in order[y[order, label]]:
            if side[i] < 0:
                pick = choose(want[label])
                pick = pick if pick >= 0 else choose(want_total)
                place(i, pick if pick >= 0 else int(rng.integers(2)))
    for i in order[side[order] < 0]:  # texts with no labels at all
        pick = choose(want_total)
        place(i, pick if pick >= 0 else int(rng.integers(2)))
    for j in np.flatnonzero(~(y[side == 0].any(axis=0))):
        side[next(i for i in order if y[i, j])] = 0
    return np.flatnonzero(side == 0).tolist(), np.flatnonzero(side == 1).tolist()


def _counts(label_sets: Sequence[Sequence[str]], labels: Sequence[str]) -> dict[str, int]:
    counter = Counter(name for chosen in label_sets for name in chosen)
    return {name: counter[name] for name in labels}


def prepare_multilabel(data: DataConfig, seed: int) -> PreparedMultiLabel:
    """Load, validate, dedupe and split the data of a multi-label run.

    Raises:
        UserError: any load or validation problem, fewer than two distinct labels, a split too small,
            or eval labels never seen in training.
    """
    train = load_label_sets(data.train, data.text_col, data.label_col, label_sep=data.label_sep, encoding=data.encoding)
    rows_read = len(train)
    deduped, removed, conflicting = dedupe(train)
    if data.dedupe:
        train = deduped
    counts = Counter(name for chosen in train.label_sets for name in chosen)
    if len(counts) < 2:
        found = f"only the label '{next(iter(counts))}'" if counts else "no labels at all"
        raise UserError(
            f"{train.source}: column '{train.label_col}' holds {found} across {len(train)} rows; multi-label classification needs "
            f"at least two distinct labels (cells like `a{data.label_sep}b` in CSV, lists in JSONL); check --label-col and --label-sep"
        )
    labels = sorted(counts, key=natural_key)
    report: dict[str, Any] = {
        "source": train.source,
        "eval_source": data.eval,
        "text_col": train.text_col,
        "label_col": train.label_col,
        "label_sep": data.label_sep,
        "rows_read": rows_read,
        "duplicates_removed": removed if data.dedupe else 0,
        "conflicting_duplicates": conflicting,
    }
    if data.eval is None:
        n_eval = math.ceil(data.eval_fraction * len(train))
        if len(train) - n_eval < 2 or n_eval < 2:
            raise UserError(
                f"{train.source}: {len(train)} rows are too few for a {data.eval_fraction * 100:g}% eval split; add rows or give --eval FILE"
            )
        train_idx, eval_idx = iterative_split(train.label_sets, labels, data.eval_fraction, seed)
        if not eval_idx:
            raise UserError(f"{train.source}: after putting every label in train, no rows are left for eval; add rows or give --eval FILE")
        train, evaluation = train.subset(train_idx), train.subset(eval_idx)
        report["split"] = f"iterative stratified holdout {data.eval_fraction * 100:g}%, seed {seed}"
    else:
        table = read_table(data.eval, encoding=data.encoding)
        # same columns as training when the eval file has them, else detect them afresh
        text_col = train.text_col if _match_column(table.columns, train.text_col) else None
        label_col = train.label_col if _match_column(table.columns, train.label_col) else None
        evaluation = label_sets_from_table(table, data.eval, text_col, label_col, label_sep=data.label_sep)
        eval_removed = 0
        if data.dedupe:
            evaluation, eval_removed, _ = dedupe(evaluation)
        check_known_labels(evaluation, labels, train.source)
        known = set(train.texts)
        report.update(
            split="eval file",
            eval_rows_read=len(evaluation) + eval_removed,
            eval_duplicates_removed=eval_removed,
            eval_texts_in_train=sum(1 for text in evaluation.texts if text in known),
        )
    report.update(
        train_size=len(train),
        eval_size=len(evaluation),
        labels=labels,
        label_counts_train=_counts(train.label_sets, labels),
        label_counts_eval=_counts(evaluation.label_sets, labels),
        no_label_texts_train=sum(1 for chosen in train.label_sets if not chosen),
        mean_labels_per_text_train=round(float(np.mean([len(c) for c in train.label_sets])), 4),
    )
    return PreparedMultiLabel(train=train, eval=evaluation, labels=labels, report=report)
