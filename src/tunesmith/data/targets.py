"""Texts with numeric targets, for regression: loading, validation, dedupe and a seeded split."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.config import DataConfig
from tunesmith.data.loading import read_table
from tunesmith.data.packaged import PACKAGED, packaged_path
from tunesmith.data.texts import texts_from_table
from tunesmith.errors import UserError


@dataclass
class TargetTexts:
    """Texts and their numeric targets (``targets[i, k]`` is target ``names[k]`` of text ``i``)."""

    source: str
    texts: list[str]
    targets: np.ndarray
    rows: list[int]
    text_col: str
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: list[int]) -> TargetTexts:
        return TargetTexts(
            self.source, [self.texts[i] for i in idx], self.targets[idx], [self.rows[i] for i in idx], self.text_col, self.names
        )


@dataclass
class PreparedTargets:
    train: TargetTexts
    eval: TargetTexts
    names: list[str]
    report: dict[str, Any]


def target_columns(label_col: str | None) -> list[str] | None:
    """``"valence,arousal"`` -> ``["valence", "arousal"]``; None means detect one column."""
    if label_col is None:
        return None
    cols = [c.strip() for c in label_col.split(",") if c.strip()]
    return cols or None


def load_targets(source: str, text_col: str | None = None, target_cols: list[str] | None = None, *, encoding: str = "utf-8") -> TargetTexts:
    """Load texts and one or more numeric target columns from a file or a packaged dataset.

    Raises:
        UserError: unreadable file, missing columns, empty texts, or a target that is not a finite number
            (every offending line is counted, the first ones named).
    """
    source = str(source)
    if source in PACKAGED and not Path(source).exists():
        ds = PACKAGED[source]
        table = read_table(packaged_path(source), encoding=encoding)
        text_col = text_col or ds.text_col
        target_cols = target_cols or ([ds.label_col] if ds.label_col else None)
    else:
        table = read_table(source, encoding=encoding)
    if not target_cols:
        target_cols = _detect_target(table)
    first = target_cols[0] if target_cols else None
    # resolves and checks the text column and the first target column (detected when not named)
    base = texts_from_table(table, source, text_col, first)
    names = target_cols or [base.label_col]
    columns = []
    problems = []
    for name in names:
        col = next((c for c in table.columns if c == name or c.casefold() == name.casefold()), None)
        if col is None:
            raise UserError(
                f"{source}: no target column named '{name}'; columns found: {', '.join(table.columns)}; name targets with --label-col A,B"
            )
        values = []
        bad = []
        for row, line in zip(table.rows, table.lines, strict=True):
            value = row[col]
            try:
                number = float(value) if not isinstance(value, bool) else math.nan
            except (TypeError, ValueError):
                number = math.nan
            if not math.isfinite(number):
                bad.append((line, value))
            values.append(number)
        if bad:
            shown = ", ".join(f"line {line}: {value!r}" for line, value in bad[:5])
            problems.append(
                f"{len(bad)} row(s) have a non-numeric target in column '{col}' ({shown}); regression needs numbers: fix or remove them"
            )
        columns.append(values)
    if problems:
        raise UserError(f"{source}: " + "; ".join(problems))
    return TargetTexts(source, base.texts, np.asarray(columns, dtype=np.float64).T, base.rows, base.text_col, list(names))


TARGET_COLUMN_NAMES = ("score", "rating", "ratings", "value", "target", "y", "label", "sentiment", "valence", "stars", "grade")


def _detect_target(table) -> list[str] | None:
    """A column named like a score, or else the only numeric column; None leaves it to the label detection."""
    by_name = {c.strip().casefold(): c for c in table.columns}
    for name in TARGET_COLUMN_NAMES:
        if name in by_name:
            return [by_name[name]]
    numeric = []
    for col in table.columns:
        values = [row[col] for row in table.rows[:200] if row[col] not in (None, "")]
        try:
            if values and all(math.isfinite(float(v)) for v in values) and not col.startswith("Unnamed"):
                numeric.append(col)
        except (TypeError, ValueError):
            continue
    return numeric[:1] if len(numeric) == 1 else None


def _dedupe(data: TargetTexts) -> tuple[TargetTexts, int]:
    first: dict[str, int] = {}
    for i, text in enumerate(data.texts):
        first.setdefault(text, i)
    keep = sorted(first.values())
    return data.subset(keep), len(data) - len(keep)


def prepare_regression(data: DataConfig, seed: int) -> PreparedTargets:
    """Load, validate, dedupe and split the data of a regression run (seeded random holdout)."""
    cols = target_columns(data.label_col)
    train = load_targets(data.train, data.text_col, cols, encoding=data.encoding)
    rows_read = len(train)
    removed = 0
    if data.dedupe:
        train, removed = _dedupe(train)
    report: dict[str, Any] = {
        "source": data.train,
        "eval_source": data.eval,
        "text_col": train.text_col,
        "targets": train.names,
        "rows_read": rows_read,
        "duplicates_removed": removed,
    }
    if data.eval is None:
        n_eval = math.ceil(data.eval_fraction * len(train))
        if len(train) - n_eval < 2 or n_eval < 2:
            raise UserError(
                f"{train.source}: {len(train)} rows are too few for a {data.eval_fraction * 100:g}% eval split; add rows or give --eval FILE"
            )
        order = np.random.default_rng(seed).permutation(len(train))
        evaluation, train = train.subset(sorted(order[:n_eval].tolist())), train.subset(sorted(order[n_eval:].tolist()))
        report["split"] = f"random holdout {data.eval_fraction * 100:g}%, seed {seed}"
    else:
        evaluation = load_targets(data.eval, train.text_col, train.names, encoding=data.encoding)
        if data.dedupe:
            evaluation, _ = _dedupe(evaluation)
        report["split"] = "eval file"
    if len(train) < 2:
        raise UserError(f"{train.source}: regression needs at least 2 training rows, got {len(train)}")
    report.update(
        train_size=len(train),
        eval_size=len(evaluation),
        target_mean_train=train.targets.mean(axis=0).round(4).tolist(),
        target_std_train=train.targets.std(axis=0).round(4).tolist(),
    )
    return PreparedTargets(train=train, eval=evaluation, names=train.names, report=report)
