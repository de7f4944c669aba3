"""The rows the doctor examines, read as written (duplicates, empty texts and all), and what the checks share.

The data layer rejects a file with an empty text or a missing label, which is right for training but
would stop the doctor at the first problem it should report. So when :func:`load_texts` refuses the
rows, they are read again leniently: the columns are resolved the same way, the bad rows are set aside
as findings, and the rest are examined. Unreadable files still raise the data layer's UserError.
"""

from __future__ import annotations

import math
import shlex
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from tunesmith.data import PACKAGED, LabelledTexts, Table, load_texts, packaged_path, read_table
from tunesmith.data.texts import natural_key, normalise_label, texts_from_table
from tunesmith.doctor.findings import MAX_EXAMPLES, Finding, excerpt
from tunesmith.errors import UserError

_PLACEHOLDER = "<missing>"


@dataclass
class DoctorData:
    """Train (and eval) rows with the options of one diagnosis, and the work the checks share (computed once).

    Attributes:
        train: the training rows as written; ``rows`` holds each one's file line.
        eval: the eval file's rows, or None when the run would split the training data.
        model: model reference whose tokenizer is examined, or None.
        max_length: tokens per text the run would keep.
        seed: seed of the cross-validation folds.
        set_aside: findings about rows that could not be examined (empty texts, missing labels).
        eval_fraction: share a run without an eval file holds out (the ``DataConfig`` default).
    """

    train: LabelledTexts
    eval: LabelledTexts | None
    model: str | None
    max_length: int
    seed: int
    set_aside: list[Finding] = field(default_factory=list)
    eval_fraction: float = 0.2
    text_col_given: str | None = None
    label_col_given: str | None = None

    @property
    def labelled(self) -> bool:
        """Whether the training rows have labels."""
        return self.train.labels is not None

    @cached_property
    def first_occurrences(self) -> list[int]:
        """Positions of the rows `tunesmith train` keeps: the first occurrence of each exact text."""
        seen: set[str] = set()
        keep = []
        for i, text in enumerate(self.train.texts):
            if text not in seen:
                seen.add(text)
                keep.append(i)
        return keep

    @cached_property
    def class_counts(self) -> dict[str, int]:
        """Examples per class after dropping exact duplicates, in natural label order."""
        labels = self.train.labels or []
        counts = Counter(labels[i] for i in self.first_occurrences)
        return {label: counts[label] for label in sorted(counts, key=natural_key)}

    @cached_property
    def duplicate_index(self) -> Any:
        """Rows grouped by normalised text and near-duplicate cluster (see :mod:`tunesmith.doctor.duplicates`)."""
        from tunesmith.doctor.duplicates import build_index

        return build_index(self.train.texts, self.eval.texts if self.eval is not None else None)

    def train_command(self, *extra: str) -> str:
        """A `tunesmith train` command line on this data, with ``extra`` flags appended."""
        parts = ["tunesmith", "train", "--train", self.train.source]
        if self.eval is not None:
            parts += ["--eval", self.eval.source]
        if self.text_col_given:
            parts += ["--text-col", self.train.text_col]
        if self.label_col_given and self.train.label_col:
            parts += ["--label-col", self.train.label_col]
        if self.model and self.model != "minilm":
            parts += ["--model", self.model]
        return shlex.join([*parts, *extra])

    def example(self, i: int, *, which: str = "train", width: int = 80, **extra: Any) -> dict[str, Any]:
        """An evidence row: file row number, label and a text excerpt of position ``i``."""
        data = self.train if which == "train" else self.eval
        assert data is not None
        item: dict[str, Any] = {"row": data.rows[i]}
        if data.labels is not None:
            item["label"] = data.labels[i]
        item.update(extra)
        item["text"] = excerpt(data.texts[i], width)
        return item


def load_data(
    train: str, eval: str | None, text_col: str | None, label_col: str | None, *, model: str | None, max_length: int, seed: int
) -> DoctorData:
    """Read train and eval rows for the doctor.

    Raises:
        UserError: a file is missing or unreadable, or a named column does not exist.
    """
    train_texts, set_aside = read_rows(train, text_col, label_col, role="train")
    eval_texts = None
    if eval is not None:
        columns = _table_of(eval, None, None, None)[0].columns
        # Same columns as training when the eval file has them, else detected afresh (as `tunesmith train` does).
        eval_text = train_texts.text_col if train_texts.text_col in columns else None
        eval_label = train_texts.label_col if train_texts.label_col in columns else None
        label_names = None
        if _is_packaged(train) and not _is_packaged(eval) and eval_label == PACKAGED[train].label_col:
            # Raw packaged labels ("0"/"1") in an eval file map to the same names as in training.
            label_names = PACKAGED[train].label_names
        eval_texts, eval_aside = read_rows(eval, eval_text, eval_label, role="eval", label_names=label_names)
        set_aside += eval_aside
    return DoctorData(
        train=train_texts,
        eval=eval_texts,
        model=model,
        max_length=max_length,
        seed=seed,
        set_aside=set_aside,
        text_col_given=text_col,
        label_col_given=label_col,
    )


def _is_packaged(source: str) -> bool:
    return source in PACKAGED and not Path(source).exists()


def read_rows(
    source: str, text_col: str | None, label_col: str | None, *, role: str, label_names: dict[str, str] | None = None
) -> tuple[LabelledTexts, list[Finding]]:
    """The examinable rows of one file and findings about the rows set aside (empty texts, missing labels).

    Raises:
        UserError: the data layer's, when the file is unreadable or its columns cannot be resolved.
    """
    try:
        if label_names is None:
            return load_texts(source, text_col, label_col, require_labels=False), []
        return texts_from_table(read_table(source), source, text_col, label_col, require_labels=False, label_names=label_names), []
    except UserError as refused:
        table, text_col, label_col, label_names = _table_of(source, text_col, label_col, label_names)
        lenient = _lenient(table, source, text_col, label_col, label_names)
        if lenient is None:
            raise refused from None
        return lenient[0], _set_aside_findings(lenient, source, role)


def _table_of(source: str, text_col: str | None, label_col: str | None, label_names: dict[str, str] | None) -> tuple[Table, Any, Any, Any]:
    if _is_packaged(source):
        ds = PACKAGED[source]
        chosen = label_col if label_col is not None else ds.label_col
        names = ds.label_names if chosen == ds.label_col else None
        return read_table(packaged_path(source)), text_col or ds.text_col, chosen, names
    return read_table(source), text_col, label_col, label_names


def _missing(value: Any) -> bool:
    if value is None or isinstance(value, (list, dict)):
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _lenient(
    table: Table, source: str, text_col: str | None, label_col: str | None, label_names: dict[str, str] | None
) -> tuple[LabelledTexts, list[int], list[int]] | None:
    """Resolve the columns on a copy whose missing values are filled in, then drop the rows that were missing."""
    filled = [{k: _PLACEHOLDER if _missing(v) else v for k, v in row.items()} for row in table.rows]
    probe = Table(table.path, table.kind, table.columns, filled, table.lines)
    try:
        resolved = texts_from_table(probe, source, text_col, label_col, require_labels=False, label_names=label_names)
    except UserError:
        return None
    empty = {i for i, row in enumerate(table.rows) if _missing(row[resolved.text_col])}
    unlabelled = set()
    if resolved.label_col is not None:
        column = resolved.label_col
        unlabelled = {i for i, row in enumerate(table.rows) if i not in empty and (_missing(row[column]) or normalise_label(row[column]) is None)}
    kept = resolved.subset([i for i in range(len(resolved)) if i not in empty and i not in unlabelled])
    return kept, [table.lines[i] for i in sorted(empty)], [table.lines[i] for i in sorted(unlabelled)]


def _set_aside_findings(lenient: tuple[LabelledTexts, list[int], list[int]], source: str, role: str) -> list[Finding]:
    kept, empty, unlabelled = lenient
    findings = []
    if empty:
        findings.append(
            Finding(
                check="text_lengths",
                severity="error",
                message=f"{len(empty):,} {role} rows of {source} have an empty text in column '{kept.text_col}'; "
                "`tunesmith train` refuses the file until they are filled or removed",
                evidence={"rows": len(empty), "row_numbers": empty[:MAX_EXAMPLES]},
                remedy=f"fill in or delete the empty texts in {source} (rows listed)",
            )
        )
    if unlabelled:
        findings.append(
            Finding(
                check="labels",
                severity="error",
                message=f"{len(unlabelled):,} {role} rows of {source} have no label in column '{kept.label_col}'; "
                "`tunesmith train` refuses the file until they are labelled or removed",
                evidence={"rows": len(unlabelled), "row_numbers": unlabelled[:MAX_EXAMPLES]},
                remedy=f"label or delete the rows listed in {source}",
            )
        )
    return findings
