"""Turn a table into labelled texts, validate them, drop duplicates and split train/eval.

Validation collects every bad row before raising, so one message lists all the lines to fix
instead of making the user rerun once per mistake.
"""

from __future__ import annotations

import difflib
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.config import DataConfig
from tunesmith.data.loading import Table, read_table
from tunesmith.data.packaged import PACKAGED
from tunesmith.errors import UserError

TEXT_COLUMN_NAMES: tuple[str, ...] = (
    "text", "sentence", "sentences", "content", "review", "message", "sms", "body", "document", "tweet", "comment",
    "utterance", "input", "question", "prompt", "query", "review_text", "abstract", "description", "passage", "post",
    "email", "msg", "headline", "title",
)  # fmt: skip
"""Column names tried, in this order and ignoring case, when no text column is given."""

LABEL_COLUMN_NAMES: tuple[str, ...] = (
    "label", "labels", "class", "category", "target", "y", "intent", "sentiment", "spam", "topic", "label_name",
    "class_label", "emotion", "polarity", "stance", "tag", "rating", "stars",
)  # fmt: skip
"""Column names tried, in this order and ignoring case, when no label column is given."""

_SHOWN_LINES = 5
_MISSING_LABELS = {"", "nan", "null"}
# pandas writes an integer column with gaps as floats ("1.0"); the label is still "1".
_INTEGRAL_FLOAT = re.compile(r"^(-?\d+)\.0+$")
_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


@dataclass
class LabelledTexts:
    """Texts with their labels and the file lines they came from."""

    source: str
    texts: list[str]
    labels: list[str] | None
    rows: list[int]
    text_col: str
    label_col: str | None

    def __len__(self) -> int:
        """Number of examples."""
        return len(self.texts)

    def subset(self, idx: Sequence[int]) -> LabelledTexts:
        """The examples at positions ``idx``, in that order."""
        return LabelledTexts(
            source=self.source,
            texts=[self.texts[i] for i in idx],
            labels=None if self.labels is None else [self.labels[i] for i in idx],
            rows=[self.rows[i] for i in idx],
            text_col=self.text_col,
            label_col=self.label_col,
        )


@dataclass
class PreparedData:
    """Train and eval examples ready for a classification task, and how they were made."""

    train: LabelledTexts
    eval: LabelledTexts
    labels: list[str]
    report: dict[str, Any]
    languages: dict[str, list[str]] | None = None  # split -> each example's language, when known


def load_texts(
    source: str,
    text_col: str | None = None,
    label_col: str | None = None,
    *,
    require_labels: bool = True,
    encoding: str = "utf-8",
    read_labels: bool = True,
) -> LabelledTexts:
    """Load texts (and labels) from a file or a packaged dataset.

    Args:
        source: a data file path, or a packaged dataset name (``sms_spam``); an existing file wins.
        text_col: column holding the text; detected from :data:`TEXT_COLUMN_NAMES` when None.
        label_col: column holding the label; detected from :data:`LABEL_COLUMN_NAMES` when None.
        require_labels: when False a missing label column is allowed (``labels`` is None).
        encoding: text encoding of CSV/TSV/JSONL files.
        read_labels: False to load only the texts (for prediction), whatever a label column holds.

    Returns:
        The texts as written (unstripped), labels normalised to strings (``1.0`` -> ``"1"``,
        ``True`` -> ``"true"``; packaged datasets map raw values to label names).

    Raises:
        UserError: unreadable file, missing or undetectable column, empty texts or missing labels
            (all offending lines are counted and the first ones named).
    """
    source = str(source)
    label_names: dict[str, str] | None = None
    if source in PACKAGED and not Path(source).exists():
        ds = PACKAGED[source]
        table = ds.table(encoding=encoding)
        chosen_label = label_col if label_col is not None else ds.label_col
        if chosen_label == ds.label_col:
            label_names = ds.label_names
        return texts_from_table(
            table,
            source,
            text_col or ds.text_col,
            chosen_label,
            require_labels=require_labels,
            label_names=label_names,
            read_labels=read_labels,
        )
    close = difflib.get_close_matches(source, list(PACKAGED), n=1)
    if close and not Path(source).exists():
        raise UserError(
            f"file not found: {source}; check the path, or did you mean the packaged dataset '{close[0]}'? (list them with `tunesmith data list`)"
        )
    table = read_table(source, encoding=encoding)
    return texts_from_table(table, source, text_col, label_col, require_labels=require_labels, read_labels=read_labels)


def texts_from_table(
    table: Table,
    source: str,
    text_col: str | None = None,
    label_col: str | None = None,
    *,
    require_labels: bool = True,
    label_names: dict[str, str] | None = None,
    read_labels: bool = True,
) -> LabelledTexts:
    """Like :func:`load_texts` for a table already read; ``source`` names it in messages."""
    resolved_label = _resolve_label_column(table, source, label_col, text_col, require_labels and read_labels)
    resolved_text = _resolve_text_column(table, source, text_col, resolved_label)
    if resolved_text == resolved_label:
        raise UserError(
            f"{source}: --text-col and --label-col both name column '{resolved_text}'; the text and the label must be different columns"
        )

    texts, text_problems = _collect_texts(table, resolved_text)
    labels: list[str] | None = None
    label_problems: list[str] = []
    if not read_labels:
        resolved_label = None  # found only so it is not mistaken for the text column
    if resolved_label is not None:
        labels, label_problems = _collect_labels(table, resolved_label, label_names)
        if not require_labels and label_col is None and all(normalise_label(row[resolved_label]) is None for row in table.rows):
            # An unlabelled file to predict on may keep an empty label column from its template.
            labels, label_problems, resolved_label = None, [], None
    problems = text_problems + label_problems
    if len(problems) == 1:
        raise UserError(f"{source}: {problems[0]}")
    if problems:
        raise UserError(f"{source} has {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))
    return LabelledTexts(
        source=source, texts=texts, labels=labels, rows=list(table.lines), text_col=resolved_text, label_col=resolved_label
    )


def _match_column(columns: list[str], name: str) -> str | None:
    if name in columns:
        return name
    folded = [c for c in columns if c.strip().casefold() == name.strip().casefold()]
    return folded[0] if len(folded) == 1 else None


def _detect(columns: list[str], candidates: tuple[str, ...], exclude: str | None) -> str | None:
    by_name = {c.strip().casefold(): c for c in reversed(columns) if c != exclude}
    for candidate in candidates:
        if candidate in by_name:
            return by_name[candidate]
    return None


def _missing_column(source: str, columns: list[str], name: str, role: str, flag: str) -> UserError:
    close = difflib.get_close_matches(name, columns, n=1)
    hint = f"did you mean {flag} '{close[0]}'? " if close else ""
    return UserError(
        f"{source}: no {role} column named '{name}'; {hint}columns found: {', '.join(columns)}; name the {role} column with {flag} NAME"
    )


def _resolve_label_column(table: Table, source: str, requested: str | None, text_col: str | None, require: bool) -> str | None:
    if requested is not None:
        match = _match_column(table.columns, requested)
        if match is None:
            raise _missing_column(source, table.columns, requested, "label", "--label-col")
        return match
    exclude = _match_column(table.columns, text_col) if text_col else None
    found = _detect(table.columns, LABEL_COLUMN_NAMES, exclude)
    if found is None and require:
        text = exclude or _detect(table.columns, TEXT_COLUMN_NAMES, None)
        others = [c for c in table.columns if c != text and not _looks_like_index(table, c)]
        guess = f"; perhaps --label-col '{others[0]}'" if text and len(others) == 1 else ""
        raise UserError(
            f"{source}: no label column found among the columns {', '.join(table.columns)} "
            f"(looked for {', '.join(LABEL_COLUMN_NAMES[:8])}, ...); name it with --label-col NAME{guess}{_header_note(table)}"
        )
    return found


def _resolve_text_column(table: Table, source: str, requested: str | None, label_col: str | None) -> str:
    if requested is not None:
        match = _match_column(table.columns, requested)
        if match is None:
            raise _missing_column(source, table.columns, requested, "text", "--text-col")
        return match
    found = _detect(table.columns, TEXT_COLUMN_NAMES, label_col)
    if found is not None:
        return found
    # A file of just texts (plus perhaps a label and an index) needs no column name.
    candidates = [c for c in table.columns if c != label_col and _holds_text(table, c) and not _looks_like_index(table, c)]
    if len(candidates) == 1:
        return candidates[0]
    which = f"several columns could hold it ({', '.join(candidates)})" if candidates else "none of them holds text"
    raise UserError(
        f"{source}: no text column found among the columns {', '.join(table.columns)} "
        f"(looked for {', '.join(TEXT_COLUMN_NAMES[:8])}, ...) and {which}; name it with --text-col NAME{_header_note(table)}"
    )


def _header_note(table: Table) -> str:
    # A headerless CSV shows its first example as the column names; say why.
    return ". The first line is read as the header" if table.kind in ("csv", "tsv") else ""


def _holds_text(table: Table, column: str) -> bool:
    values = [row[column] for row in table.rows[:200] if row[column] is not None]
    return any(isinstance(v, str) and v.strip() and not _NUMBER.match(v) for v in values)


def _looks_like_index(table: Table, column: str) -> bool:
    return column.startswith("Unnamed: ") or column.strip().casefold() in ("", "id", "idx", "index")


def _collect_texts(table: Table, column: str) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    empty: list[int] = []
    not_text: list[int] = []
    for row, line in zip(table.rows, table.lines, strict=True):
        value = row[column]
        if isinstance(value, str):
            if not value.strip():
                empty.append(line)
            texts.append(value)
        elif value is None or (isinstance(value, float) and math.isnan(value)):
            empty.append(line)
            texts.append("")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            # JSONL/Parquet keep numbers typed; in CSV the same cell would already be the string.
            texts.append(_scalar_to_str(value))
        else:
            not_text.append(line)
            texts.append("")
    problems = []
    if empty:
        problems.append(f"{_rows(empty)} an empty text in column '{column}' ({_lines(empty)}); remove or fill them")
    if not_text:
        problems.append(
            f"{_rows(not_text)} a list, object or true/false instead of a text in column '{column}' ({_lines(not_text)}); store the text as a string"
        )
    return texts, problems


def _collect_labels(table: Table, column: str, label_names: dict[str, str] | None) -> tuple[list[str], list[str]]:
    labels: list[str] = []
    missing: list[int] = []
    nested: list[int] = []
    for row, line in zip(table.rows, table.lines, strict=True):
        label = normalise_label(row[column])
        if label is None:
            missing.append(line)
            labels.append("")
        elif isinstance(row[column], (list, dict)):
            nested.append(line)
            labels.append("")
        else:
            labels.append(label_names.get(label, label) if label_names else label)
    problems = []
    if missing:
        problems.append(
            f"{_rows(missing)} no label in column '{column}' (empty, null or NaN; {_lines(missing)}); label them or remove them"
        )
    if nested:
        problems.append(
            f"{_rows(nested)} a list or object as the label in column '{column}' ({_lines(nested)}); each example needs exactly one label"
        )
    return labels, problems


def normalise_label(value: Any) -> str | None:
    """A label as a string (``1.0`` -> ``"1"``, ``True`` -> ``"true"``, outer spaces stripped); None when missing."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return _scalar_to_str(value)
    text = str(value).strip()
    if text.casefold() in _MISSING_LABELS:
        return None
    integral = _INTEGRAL_FLOAT.match(text)
    return integral.group(1) if integral else text


def _scalar_to_str(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _rows(lines: list[int]) -> str:
    return "1 row has" if len(lines) == 1 else f"{len(lines)} rows have"


def _lines(lines: list[int]) -> str:
    shown = ", ".join(str(n) for n in lines[:_SHOWN_LINES])
    word = "line" if len(lines) == 1 else "lines"
    more = f", ... {len(lines) - _SHOWN_LINES} more" if len(lines) > _SHOWN_LINES else ""
    return f"{word} {shown}{more}"


def natural_key(label: str) -> tuple[Any, ...]:
    """Sort key that orders ``"2"`` before ``"10"`` and ``"class2"`` before ``"class10"``."""
    parts = re.split(r"(\d+)", label)
    # Even positions are text, odd positions digits, so the tuples never compare str with int.
    return (tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)), label)


def dedupe(data: LabelledTexts) -> tuple[LabelledTexts, int, int]:
    """Drop exact-duplicate texts, keeping the first occurrence.

    Returns:
        The kept examples, how many were dropped, and how many distinct texts occur with more
        than one label (conflicting duplicates).
    """
    first: dict[str, int] = {}
    seen_labels: dict[str, set[str]] = {}
    for i, text in enumerate(data.texts):
        first.setdefault(text, i)
        if data.labels is not None:
            seen_labels.setdefault(text, set()).add(data.labels[i])
    keep = sorted(first.values())
    conflicting = sum(1 for labels in seen_labels.values() if len(labels) > 1)
    return data.subset(keep), len(data) - len(keep), conflicting


def _labels_of(data: LabelledTexts) -> list[str]:
    if data.labels is None:  # load_texts(require_labels=True) never returns this
        raise RuntimeError(f"{data.source}: labels were required but not loaded")
    return data.labels


def _counts(labels: list[str], order: list[str]) -> dict[str, int]:
    counter = Counter(labels)
    return {label: counter[label] for label in order if counter[label]}


def prepare_classification(data: DataConfig, seed: int) -> PreparedData:
    """Load, validate, dedupe and split the data of a classification run.

    Args:
        data: the ``data`` section of the run config.
        seed: seed of the stratified split; the same seed gives the same split.

    Returns:
        Train and eval examples (each in file order), the sorted label names and a JSON-ready report.

    Raises:
        UserError: any load or validation problem, a single class, a split too small to hold every
            class, or eval labels never seen in training.
    """
    train = load_texts(data.train, data.text_col, data.label_col, encoding=data.encoding)
    rows_read = len(train)
    deduped, removed, conflicting = dedupe(train)
    if data.dedupe:
        train = deduped
    train_labels = _labels_of(train)
    counts = Counter(train_labels)
    if len(counts) < 2:
        ((only, n),) = counts.items()
        raise UserError(
            f"{train.source}: column '{train.label_col}' has a single class '{only}' ({n} rows); classification needs at least two classes"
        )
    labels = sorted(counts, key=natural_key)
    report: dict[str, Any] = {
        "source": train.source,
        "eval_source": data.eval,
        "text_col": train.text_col,
        "label_col": train.label_col,
        "rows_read": rows_read,
        "duplicates_removed": removed if data.dedupe else 0,
        "conflicting_duplicates": conflicting,
    }
    if data.eval is None:
        train, evaluation = _stratified_split(train, counts, data.eval_fraction, seed)
        report["split"] = f"stratified holdout {data.eval_fraction * 100:g}%, seed {seed}"
    else:
        evaluation, eval_removed = _load_eval(data.eval, data, train, labels)
        report["split"] = "eval file"
        report["eval_rows_read"] = len(evaluation) + eval_removed
        report["eval_duplicates_removed"] = eval_removed
        known = set(train.texts)
        report["eval_texts_in_train"] = sum(1 for text in evaluation.texts if text in known)
    report.update(
        train_size=len(train),
        eval_size=len(evaluation),
        class_counts_train=_counts(_labels_of(train), labels),
        class_counts_eval=_counts(_labels_of(evaluation), labels),
    )
    return PreparedData(train=train, eval=evaluation, labels=labels, report=report)


def _stratified_split(train: LabelledTexts, counts: Counter[str], fraction: float, seed: int) -> tuple[LabelledTexts, LabelledTexts]:
    rare = sorted((label for label, n in counts.items() if n < 2), key=natural_key)
    if rare:
        lines = [row for row, label in zip(train.rows, _labels_of(train), strict=True) if label in rare]
        raise UserError(
            f"{train.source}: {len(rare)} class{'es' if len(rare) > 1 else ''} in column '{train.label_col}' "
            f"{'have' if len(rare) > 1 else 'has'} a single example ({', '.join(repr(r) for r in rare[:10])}; {_lines(lines)}); "
            "a stratified eval split needs at least 2 per class; add examples, remove the class, or give an eval file with --eval FILE"
        )
    total = len(train)
    # The sizes sklearn uses: the eval share is rounded up, and both sides must hold every class.
    n_eval = math.ceil(fraction * total)
    n_train = total - n_eval
    if n_eval < len(counts) or n_train < len(counts):
        side, size = ("eval", n_eval) if n_eval < len(counts) else ("train", n_train)
        raise UserError(
            f"{train.source}: a {fraction * 100:g}% eval split of {total} rows leaves {size} {side} examples, too few to hold each of "
            f"the {len(counts)} classes ({', '.join(sorted(counts, key=natural_key)[:10])}); "
            "change --eval-fraction, add examples, remove rare classes, or give an eval file with --eval FILE"
        )
    # Imported here: scikit-learn takes over a second to import and only this split needs it.
    from sklearn.model_selection import train_test_split

    try:
        train_idx, eval_idx = train_test_split(list(range(total)), test_size=fraction, random_state=seed, stratify=_labels_of(train))
    except ValueError as exc:
        raise UserError(f"{train.source}: cannot make a stratified eval split ({exc}); give an eval file with --eval FILE") from None
    # File order makes eval predictions easy to line up with the source; training shuffles anyway.
    return train.subset(sorted(train_idx)), train.subset(sorted(eval_idx))


def _load_eval(path: str, data: DataConfig, train: LabelledTexts, labels: list[str]) -> tuple[LabelledTexts, int]:
    table = read_table(path, encoding=data.encoding)
    # Same columns as training when the eval file has them, else detect them afresh.
    text_col = train.text_col if _match_column(table.columns, train.text_col) else None
    label_col = train.label_col if train.label_col and _match_column(table.columns, train.label_col) else None
    label_names = None
    if data.train in PACKAGED and label_col == PACKAGED[data.train].label_col:
        # Raw packaged labels ("0"/"1") in an eval file map to the same names as in training.
        label_names = PACKAGED[data.train].label_names
    evaluation = texts_from_table(table, path, text_col, label_col, label_names=label_names)
    removed = 0
    if data.dedupe:
        evaluation, removed, _ = dedupe(evaluation)
    eval_labels = _labels_of(evaluation)
    known = set(labels)
    unseen = sorted({label for label in eval_labels if label not in known}, key=natural_key)
    if unseen:
        lines = [row for row, label in zip(evaluation.rows, eval_labels, strict=True) if label not in known]
        counts = Counter(label for label in eval_labels if label not in known)
        listed = ", ".join(f"'{label}' ({counts[label]} rows)" for label in unseen[:10])
        raise UserError(
            f"{path}: {len(unseen)} label{'s' if len(unseen) > 1 else ''} never seen in training: {listed}; {_lines(lines)}. "
            f"Labels in {train.source}: {', '.join(labels)}. Fix the eval labels or add training examples for them"
        )
    return evaluation, removed
