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
from typing import TYPE_CHECKING, Any

from tunesmith.data import PACKAGED, LabelledTexts, Table, load_texts, packaged_path, read_table
from tunesmith.data.texts import natural_key, normalise_label, texts_from_table
from tunesmith.doctor.findings import MAX_EXAMPLES, Finding, excerpt
from tunesmith.errors import UserError

if TYPE_CHECKING:
    from tunesmith.doctor.duplicates import DuplicateIndex

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
        text_col_given / label_col_given: the columns the user named, repeated in remedy commands.
        summary: figures the checks leave for the report's summary (token lengths, language shares).
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
    summary: dict[str, Any] = field(default_factory=dict)

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
        labels = self.train.labels
        if labels is None:
            return {}
        counts = Counter(labels[i] for i in self.first_occurrences)
        return {label: counts[label] for label in sorted(counts, key=natural_key)}

    @cached_property
    def duplicate_index(self) -> DuplicateIndex:
        """Rows grouped by normalised text and near-duplicate cluster (see :mod:`tunesmith.doctor.duplicates`)."""
        from tunesmith.doctor.duplicates import build_index

        return build_index(self.train.texts, self.eval.texts if self.eval is not None else None)

    @cached_property
    def tokenizer(self) -> tuple[Any, str]:
        """The model's tokenizer and "", or None and why it could not be loaded (never downloads)."""
        if self.model is None:
            return None, "no model given"
        try:
            from tunesmith.models.registry import resolve_model

            ref = resolve_model(self.model)
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(ref, local_files_only=True), ""
        except UserError as exc:
            return None, str(exc)
        except Exception as exc:  # a broken or foreign model directory: skip the checks, say why
            first = str(exc).splitlines()[0] if str(exc) else ""
            return None, f"{type(exc).__name__}: {first}"[:300]

    @cached_property
    def token_ids(self) -> list[list[int]]:
        """Token ids of every training text with the model's special tokens, untruncated."""
        from transformers.utils import logging as hf_logging

        tokenizer, _ = self.tokenizer
        previous = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # its "longer than the maximum" warning is what the truncation check reports
        try:
            return tokenizer(list(self.train.texts), add_special_tokens=True, truncation=False)["input_ids"]
        finally:
            hf_logging.set_verbosity(previous)

    def train_command(self, *extra: str) -> str:
        """A `tunesmith train` command line on this data, with ``extra`` flags appended."""
        parts = ["tunesmith", "train", "--train", self.train.source]
        if self.eval is not None:
            parts += ["--eval", self.eval.source]
        if self.text_col_given:
            parts += ["--text-col", self.train.text_col]
        if self.label_col_given and self.train.label_col:
            parts += ["--label-col", self.train.label_col]
        if self.model and self.model != "minilm" and "--model" not in extra:
            parts += ["--model", self.model]
        return shlex.join([*parts, *extra])

    def example(self, i: int, *, width: int = 80, **extra: Any) -> dict[str, Any]:
        """An evidence row of training position ``i``: its file row number, label, ``extra`` and a text excerpt."""
        item: dict[str, Any] = {"row": self.train.rows[i]}
        if self.train.labels is not None:
            item["label"] = self.train.labels[i]
        item.update(extra)
        item["text"] = excerpt(self.train.texts[i], width)
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


def _empty_text(value: Any) -> bool:
    if value is None or isinstance(value, (list, dict)):
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _no_label(value: Any) -> bool:
    return isinstance(value, (list, dict)) or normalise_label(value) is None


def _lenient(
    table: Table, source: str, text_col: str | None, label_col: str | None, label_names: dict[str, str] | None
) -> tuple[LabelledTexts, list[int], list[int]] | None:
    """The rows that have a text and a label, with the lines of those that lack one; None if the columns cannot be resolved.

    The columns are resolved as the data layer does, on a copy whose missing values are filled in;
    the rows are then read from the original table.
    """
    filled = [{k: _PLACEHOLDER if _empty_text(v) or _no_label(v) else v for k, v in row.items()} for row in table.rows]
    try:
        probe = texts_from_table(
            Table(table.path, table.kind, table.columns, filled, table.lines), source, text_col, label_col, require_labels=False
        )
    except UserError:
        return None
    text, label = probe.text_col, probe.label_col
    if label is not None and label_col is None and all(_no_label(row[label]) for row in table.rows):
        label = None  # an unlabelled file may keep an empty label column from its template
    empty = [i for i, row in enumerate(table.rows) if _empty_text(row[text])]
    unlabelled = [] if label is None else [i for i, row in enumerate(table.rows) if _no_label(row[label]) and not _empty_text(row[text])]
    dropped = set(empty) | set(unlabelled)
    keep = [i for i in range(len(table.rows)) if i not in dropped]
    if not keep:
        return None
    kept_table = Table(table.path, table.kind, table.columns, [table.rows[i] for i in keep], [table.lines[i] for i in keep])
    try:
        kept = texts_from_table(kept_table, source, text, label, require_labels=False, label_names=label_names)
    except UserError:
        return None
    return kept, [table.lines[i] for i in empty], [table.lines[i] for i in unlabelled]


def _set_aside_findings(lenient: tuple[LabelledTexts, list[int], list[int]], source: str, role: str) -> list[Finding]:
    kept, empty, unlabelled = lenient
    findings = []
    if empty:
        findings.append(
            Finding(
                check="text_lengths",
                severity="error",
                message=f"{_rows(len(empty), role)} of {source} {'has' if len(empty) == 1 else 'have'} an empty text in column '{kept.text_col}'; "
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
                message=f"{_rows(len(unlabelled), role)} of {source} {'has' if len(unlabelled) == 1 else 'have'} no label in column '{kept.label_col}'; "
                "`tunesmith train` refuses the file until they are labelled or removed",
                evidence={"rows": len(unlabelled), "row_numbers": unlabelled[:MAX_EXAMPLES]},
                remedy=f"label or delete the rows listed in {source}",
            )
        )
    return findings


def _rows(n: int, role: str) -> str:
    return f"{n:,} {role} row{'' if n == 1 else 's'}"
