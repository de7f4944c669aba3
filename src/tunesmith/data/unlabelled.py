"""Raw texts for language modelling: loading, dedupe and a seeded random holdout.

A source is a ``.txt`` file with one text per line (blank lines skipped), a CSV/TSV/JSONL/Parquet
file with a text column, or a packaged dataset name (its texts; a tagged dataset's sentences are
joined with spaces). Labels play no part here: a label column is neither needed nor validated.
"""

from __future__ import annotations

import difflib
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tunesmith.config import DataConfig
from tunesmith.data.loading import Table, _decode, read_table
from tunesmith.data.packaged import PACKAGED
from tunesmith.data.texts import LABEL_COLUMN_NAMES, load_texts, texts_from_table
from tunesmith.errors import UserError


@dataclass
class RawTexts:
    """Texts with the file lines they came from (``text_col`` is None for a ``.txt`` file)."""

    source: str
    texts: list[str]
    rows: list[int]
    text_col: str | None

    def __len__(self) -> int:
        """Number of texts."""
        return len(self.texts)

    def subset(self, idx: list[int]) -> RawTexts:
        """The texts at positions ``idx``, in that order."""
        return RawTexts(self.source, [self.texts[i] for i in idx], [self.rows[i] for i in idx], self.text_col)


@dataclass
class PreparedTexts:
    """Train and eval texts for a language-modelling run, and how they were made (``report``, JSON-ready)."""

    train: RawTexts
    eval: RawTexts
    report: dict[str, Any]


def load_unlabelled(source: str, text_col: str | None = None, *, encoding: str = "utf-8") -> RawTexts:
    """Load raw texts from a ``.txt`` file, a table file or a packaged dataset.

    Args:
        source: a ``.txt`` file (one text per line), a CSV/TSV/JSONL/Parquet file, or a packaged
            dataset name (``sms_spam``); an existing file wins over a dataset of the same name.
        text_col: column holding the text in a table; detected from common names when None.
        encoding: text encoding of text files.

    Returns:
        The texts as written (a ``.txt`` line without its line break), in file order.

    Raises:
        UserError: a missing, unreadable or empty file, an undetectable text column or empty texts.
    """
    source = str(source)
    path = Path(source)
    if source in PACKAGED and not path.exists():
        return _packaged_texts(source, text_col, encoding)
    if path.suffix.lower() == ".txt":
        return _read_lines(path, source, encoding)
    if not path.exists():
        close = difflib.get_close_matches(source, list(PACKAGED), n=1)
        if close:
            raise UserError(
                f"file not found: {source}; check the path, or did you mean the packaged dataset '{close[0]}'? "
                "(list them with `tunesmith data list`)"
            )
    table = read_table(source, encoding=encoding)
    data = texts_from_table(_without_labels(table, text_col), source, text_col, None, require_labels=False)
    return RawTexts(source, data.texts, data.rows, data.text_col)


def _packaged_texts(name: str, text_col: str | None, encoding: str) -> RawTexts:
    if PACKAGED[name].task == "ner":
        # late: sequences builds on the data modules this one imports
        from tunesmith.data.sequences import read_tagged

        tagged = read_tagged(name, encoding=encoding)
        return RawTexts(name, [" ".join(tokens) for tokens in tagged.tokens], list(tagged.lines), None)
    data = load_texts(name, text_col, None, require_labels=False, encoding=encoding)
    return RawTexts(name, data.texts, data.rows, data.text_col)


def _without_labels(table: Table, text_col: str | None) -> Table:
    """The table minus columns a label would be detected from, so stray or missing labels never fail an LM run."""
    keep_name = (text_col or "").strip().casefold()
    labels = set(LABEL_COLUMN_NAMES)
    columns = [c for c in table.columns if c.strip().casefold() == keep_name or c.strip().casefold() not in labels]
    if not columns:  # a lone column named like a label ("label") still holds the texts
        return table
    rows = [{c: row[c] for c in columns} for row in table.rows]
    return Table(path=table.path, kind=table.kind, columns=columns, rows=rows, lines=table.lines)


def _read_lines(path: Path, shown: str, encoding: str) -> RawTexts:
    if not path.exists():
        raise UserError(f"file not found: {shown}; check the path (a .txt file holds one text per line)")
    if not path.is_file():
        raise UserError(f"{shown} is a directory, not a text file; pass a .txt file with one text per line")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {shown}: {exc.strerror or exc}; check the file's permissions") from None
    text = _decode(data, shown, encoding) if data else ""
    texts, rows = [], []
    # split("\n") rather than splitlines(): a text may hold a raw U+2028, which splitlines would cut.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if line.strip():
            texts.append(line)
            rows.append(number)
    if not texts:
        what = "is empty (0 bytes)" if not data else "holds only blank lines"
        raise UserError(f"{shown} {what}; a .txt file for language modelling holds one text per line")
    return RawTexts(shown, texts, rows, None)


def dedupe_texts(data: RawTexts) -> tuple[RawTexts, int]:
    """Drop exact-duplicate texts, keeping the first occurrence; returns the kept texts and how many were dropped."""
    first: dict[str, int] = {}
    for i, text in enumerate(data.texts):
        first.setdefault(text, i)
    keep = sorted(first.values())
    return data.subset(keep), len(data) - len(keep)


T = TypeVar("T")


def random_holdout(data: T, fraction: float, seed: int, noun: str = "text") -> tuple[T, T]:
    """A seeded random split (``ceil(fraction * n)`` held out) of anything with ``source``, ``len`` and
    ``subset(indices)``; each side kept in file order. ``noun`` names one item in the error message.

    Raises:
        UserError: when either side would be empty.
    """
    total = len(data)
    n_eval = math.ceil(fraction * total)
    if total - n_eval < 1:
        raise UserError(
            f"{data.source}: a {fraction * 100:g}% eval split of {total} {noun}{'s' if total != 1 else ''} leaves no training {noun}; "
            f"add {noun}s, lower --eval-fraction, or give an eval file with --eval FILE"
        )
    held = set(random.Random(seed).sample(range(total), n_eval))
    train_idx = [i for i in range(total) if i not in held]
    return data.subset(train_idx), data.subset(sorted(held))


def prepare_unlabelled(data: DataConfig, seed: int) -> PreparedTexts:
    """Load, dedupe and split the texts of a language-modelling run.

    Args:
        data: the ``data`` section of the run config (``train``, ``eval``, ``text_col``,
            ``eval_fraction``, ``dedupe``, ``encoding``).
        seed: seed of the random holdout; the same seed gives the same split.

    Returns:
        Train and eval texts (each in file order) and a JSON-ready report.

    Raises:
        UserError: any load problem, or too few texts to hold some out.
    """
    train = load_unlabelled(data.train, data.text_col, encoding=data.encoding)
    rows_read = len(train)
    deduped, removed = dedupe_texts(train)
    if data.dedupe:
        train = deduped
    report: dict[str, Any] = {
        "source": train.source,
        "eval_source": data.eval,
        "text_col": train.text_col,
        "rows_read": rows_read,
        "duplicates_removed": removed if data.dedupe else 0,
    }
    if data.eval is None:
        train, evaluation = random_holdout(train, data.eval_fraction, seed)
        report["split"] = f"random holdout {data.eval_fraction * 100:g}%, seed {seed}"
    else:
        evaluation = load_unlabelled(data.eval, data.text_col, encoding=data.encoding)
        eval_read = len(evaluation)
        eval_removed = 0
        if data.dedupe:
            evaluation, eval_removed = dedupe_texts(evaluation)
        known = set(train.texts)
        report.update(
            split="eval file",
            eval_rows_read=eval_read,
            eval_duplicates_removed=eval_removed,
            eval_texts_in_train=sum(1 for text in evaluation.texts if text in known),
        )
    report.update(train_size=len(train), eval_size=len(evaluation))
    return PreparedTexts(train=train, eval=evaluation, report=report)
