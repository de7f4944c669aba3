"""Easy data augmentation (EDA) of a labelled training file: ``tunesmith augment``.

EDA (Wei and Zou, 2019) makes label-preserving copies of a text with small random edits. Synonym
replacement needs WordNet, which is not installed, so three of its four operations are used:
random swap, random deletion and random insertion of a word taken from the same text. Texts in
languages written without spaces (Chinese, Japanese) are edited character by character.

Augmented copies are training data only. An eval split drawn from an augmented file would hold
copies of its own training texts, so ``--eval-out`` holds out the split `tunesmith train` would draw
(same seed and fraction) before augmenting, and writes it untouched.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError

METHODS = ("eda", "backtranslate", "paraphrase")
OPERATIONS = ("swap", "delete", "insert")
AUGMENTED_FROM = "augmented_from"
"""Column of the output naming, for each augmented copy, the file row (line) of its source; empty for originals."""
OUTPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}
CJK_SHARE = 0.3
"""Texts with at least this share of CJK characters (among non-space ones) are edited per character."""

_CJK_RANGES = (
    (0x3040, 0x30FF),  # hiragana, katakana
    (0x3400, 0x4DBF),  # CJK unified ideographs extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x31F0, 0x31FF),  # katakana phonetic extensions
    (0x20000, 0x2FA1F),  # CJK extensions B-F and compatibility supplement
)


def is_cjk_char(ch: str) -> bool:
    """Whether a character is a Chinese/Japanese ideograph or kana (scripts written without spaces)."""
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def is_cjk(text: str) -> bool:
    """Whether a text is mostly written without spaces (CJK): edit it per character rather than per word."""
    chars = [ch for ch in text if not ch.isspace()]
    if not chars:
        return False
    return sum(map(is_cjk_char, chars)) / len(chars) >= CJK_SHARE


def _swap(tokens: list[str], n: int, rng: random.Random) -> list[str]:
    out = list(tokens)
    for _ in range(n):
        i, j = rng.sample(range(len(out)), 2)
        out[i], out[j] = out[j], out[i]
    return out


def _delete(tokens: list[str], p: float, rng: random.Random) -> list[str]:
    kept = [t for t in tokens if rng.random() >= p]
    if len(kept) == len(tokens):  # delete at least one
        drop = rng.randrange(len(tokens))
        kept = tokens[:drop] + tokens[drop + 1 :]
    return kept or [rng.choice(tokens)]


def _insert(tokens: list[str], n: int, rng: random.Random) -> list[str]:
    out = list(tokens)
    for _ in range(n):
        out.insert(rng.randint(0, len(out)), rng.choice(tokens))
    return out


def eda(text: str, alpha: float, rng: random.Random, *, operation: str | None = None) -> str:
    """One EDA copy of a text: a random swap, deletion or insertion of about ``alpha`` of its words.

    Args:
        text: the text to edit. Texts mostly in CJK scripts are edited per character, others per
            whitespace-separated word (the copy's words are joined by single spaces).
        alpha: share of the words changed (at least one): swaps and insertions make
            ``max(1, round(alpha * n))`` edits, deletion drops each word with probability ``alpha``.
        rng: the random source; the same seed gives the same copies.
        operation: ``swap``, ``delete`` or ``insert``; drawn at random when None.

    Returns:
        The edited text. A text of one word can only grow by insertion; an empty text is returned as is.
    """
    if not 0 < alpha <= 1:
        raise UserError(f"--alpha must be in (0, 1], got {alpha}; 0.1 changes about one word in ten")
    chars = is_cjk(text)
    tokens = [ch for ch in text if not ch.isspace()] if chars else text.split()
    if not tokens:
        return text
    n = max(1, round(alpha * len(tokens)))
    op = operation or rng.choice(OPERATIONS)
    if op not in OPERATIONS:
        raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}, got {op!r}")
    if len(tokens) < 2 or (op == "swap" and len(set(tokens)) < 2):
        op = "insert"  # nothing to swap or delete
    if op == "swap":
        edited = _swap(tokens, n, rng)
    elif op == "delete":
        edited = _delete(tokens, alpha, rng)
    else:
        edited = _insert(tokens, n, rng)
    return ("" if chars else " ").join(edited)


@dataclass
class AugmentResult:
    """What :func:`augment_file` wrote."""

    out: Path
    rows_in: int
    rows_out: int
    augmented: int
    unchanged: int
    cjk_texts: int
    eval_out: Path | None = None
    eval_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def augment_file(
    source: str,
    out: str | Path,
    *,
    method: str = "eda",
    factor: int = 1,
    alpha: float = 0.1,
    seed: int = 42,
    text_col: str | None = None,
    label_col: str | None = None,
    encoding: str = "utf-8",
    eval_out: str | Path | None = None,
    eval_fraction: float = 0.2,
) -> AugmentResult:
    """Write the rows of a labelled file plus ``factor`` augmented copies of each.

    Every column of the source is kept; the label column holds the label as training reads it
    (packaged datasets' label names), and :data:`AUGMENTED_FROM` names the source row (file line) of
    each copy. The output format follows the extension of ``out`` (``.csv``, ``.tsv``, ``.jsonl``);
    it is written atomically.

    Args:
        source: a CSV/TSV/JSONL/Parquet file or a packaged dataset name.
        out: the file to write.
        method: ``eda``; ``backtranslate`` and ``paraphrase`` need a generative model and are not
            available yet.
        factor: augmented copies per row (>= 1).
        alpha: share of the words each copy changes.
        seed: seed of the edits (and of the eval split with ``eval_out``).
        text_col: text column; detected when None.
        label_col: label column; detected when None.
        encoding: text encoding of the source.
        eval_out: when given, first hold out the stratified eval split `tunesmith train` would draw
            from ``source`` (same seed, ``eval_fraction``, duplicates dropped) and write it here,
            un-augmented; only the rest is augmented. Train with ``--train OUT --eval EVAL_OUT``.
        eval_fraction: share held out with ``eval_out``.

    Raises:
        UserError: unknown or unavailable method, bad factor/alpha, unreadable source, an output
            extension other than .csv/.tsv/.jsonl, or a source that is already augmented.
    """
    from tunesmith.config import DataConfig
    from tunesmith.data.loading import read_table
    from tunesmith.data.packaged import PACKAGED, packaged_path
    from tunesmith.data.texts import load_texts, prepare_classification

    if method in ("backtranslate", "paraphrase"):
        raise UserError(
            f"--method {method} needs a generative model (translation or paraphrase) and is not available yet; "
            "use --method eda (random swap, deletion and insertion of words)"
        )
    if method != "eda":
        raise UserError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if factor < 1:
        raise UserError(f"--factor must be a whole number >= 1 (augmented copies per row), got {factor}")
    if not 0 < alpha <= 1:
        raise UserError(f"--alpha must be in (0, 1], got {alpha}; 0.1 changes about one word in ten")
    out = Path(out)
    kind = _output_kind(out)
    eval_path = Path(eval_out) if eval_out is not None else None
    if eval_path is not None:
        _output_kind(eval_path)
        if eval_path.resolve() == out.resolve():
            raise UserError(f"--eval-out and --out are the same file ({out}); give the held-out eval split its own file")
    if Path(source).exists() and out.resolve() == Path(source).resolve():
        raise UserError(f"--out {out} is the input file; write the augmented copy to a new file")

    texts = load_texts(source, text_col, label_col, encoding=encoding)
    packaged = str(source) in PACKAGED and not Path(source).exists()
    table = read_table(packaged_path(str(source)) if packaged else source, encoding=encoding)
    if any(c.strip().casefold() == AUGMENTED_FROM for c in table.columns):
        raise UserError(f"{source} already has an '{AUGMENTED_FROM}' column: it is an augmented file; augment the original instead")
    row_of_line = {line: i for i, line in enumerate(table.lines)}
    label_of_line = dict(zip(texts.rows, texts.labels or [], strict=False))

    train_lines = list(texts.rows)
    eval_lines: list[int] = []
    if eval_path is not None:
        prepared = prepare_classification(
            DataConfig(train=str(source), text_col=text_col, label_col=label_col, eval_fraction=eval_fraction, encoding=encoding),
            seed=seed,
        )
        train_lines, eval_lines = list(prepared.train.rows), list(prepared.eval.rows)

    columns = [*table.columns, AUGMENTED_FROM]
    text_of_line = dict(zip(texts.rows, texts.texts, strict=True))

    def record(line: int, text: str | None = None, origin: int | None = None) -> dict[str, Any]:
        row = dict(table.rows[row_of_line[line]])
        if texts.label_col is not None:
            row[texts.label_col] = label_of_line[line]
        if text is not None:
            row[texts.text_col] = text
        row[AUGMENTED_FROM] = origin
        return row

    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    unchanged = cjk = 0
    for line in train_lines:
        original = text_of_line[line]
        records.append(record(line))
        cjk += is_cjk(original)
        for _ in range(factor):
            copy = eda(original, alpha, rng)
            unchanged += copy == original
            records.append(record(line, copy, line))
    _write_records(out, kind, columns, records)
    result = AugmentResult(
        out=out,
        rows_in=len(texts),
        rows_out=len(records),
        augmented=len(records) - len(train_lines),
        unchanged=unchanged,
        cjk_texts=cjk,
    )
    if eval_path is not None:
        _write_records(eval_path, _output_kind(eval_path), table.columns, [record(line) for line in eval_lines], drop=AUGMENTED_FROM)
        result.eval_out, result.eval_rows = eval_path, len(eval_lines)
    return result


def _output_kind(path: Path) -> str:
    kind = OUTPUT_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"{path}: cannot write '{path.suffix or 'no extension'}'; name the output .csv, .tsv or .jsonl")
    return kind


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _write_records(path: Path, kind: str, columns: list[str], records: list[dict[str, Any]], drop: str | None = None) -> None:
    from tunesmith.training.rundir import atomic_write_text

    columns = [c for c in columns if c != drop]
    if kind == "jsonl":
        text = "".join(json.dumps({c: r.get(c) for c in columns}, ensure_ascii=False) + "\n" for r in records)
    else:
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter="\t" if kind == "tsv" else ",", lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_cell(r.get(c)) for c in columns] for r in records)
        text = buf.getvalue()
    atomic_write_text(path, text)
