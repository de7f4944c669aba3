"""Remove duplicate rows from a data file, and eval rows that leak from training.

Exact duplicates are texts equal as written; with ``near=True`` texts are also grouped when they are
equal after normalising case, punctuation and digits, or share >= 90% of their character shingles
(the doctor's MinHash index). The first row of each group is kept; every other column is preserved.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from tunesmith.data.loading import Table, read_table
from tunesmith.data.packaged import PACKAGED, packaged_path
from tunesmith.data.texts import texts_from_table
from tunesmith.errors import UserError

WRITABLE = (".csv", ".tsv", ".jsonl")


def _read(source: str, text_col: str | None, encoding: str) -> tuple[Table, str]:
    path = packaged_path(source) if source in PACKAGED and not Path(source).exists() else source
    table = read_table(path, encoding=encoding)
    texts = texts_from_table(
        table,
        source,
        text_col or (PACKAGED[source].text_col if source in PACKAGED else None),
        None,
        require_labels=False,
        read_labels=False,
    )
    return table, texts.text_col


def _groups(train: list[str], evaluation: list[str], near: bool) -> tuple[list[int], list[int]]:
    """A group id per train text and per eval text: equal ids mean duplicates."""
    if not near:
        ids: dict[str, int] = {}
        return [ids.setdefault(t, len(ids)) for t in train], [ids.setdefault(t, len(ids)) for t in evaluation]
    from tunesmith.doctor.duplicates import build_index

    index = build_index(train, evaluation)
    train_ids = [-1 - i for i in range(len(train))]  # empty normalised texts stay apart
    eval_ids = [-1 - len(train) - i for i in range(len(evaluation))]
    for key, cluster in enumerate(index.cluster):
        for i in index.train_members[key]:
            train_ids[i] = cluster
        for i in index.eval_members[key]:
            eval_ids[i] = cluster
    return train_ids, eval_ids


def write_rows(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Write rows as CSV, TSV or JSONL (by the extension), atomically."""
    from tunesmith.training.rundir import atomic_write_text

    suffix = path.suffix.lower()
    if suffix not in WRITABLE:
        raise UserError(f"cannot write {path}: use one of {', '.join(WRITABLE)}")
    if suffix == ".jsonl":
        atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        return
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=columns, delimiter="\t" if suffix == ".tsv" else ",", extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def dedup_files(
    train: str,
    out: str,
    *,
    eval: str | None = None,  # noqa: A002 - the name users know from --eval
    eval_out: str | None = None,
    near: bool = False,
    text_col: str | None = None,
    encoding: str = "utf-8",
) -> dict[str, Any]:
    """Write ``out`` without duplicate rows and, with ``eval``, ``eval_out`` without duplicates and leaked rows.

    Returns:
        A report: rows read and kept, duplicates removed per file, eval rows removed because they
        occur in training, and example line numbers of each.
    """
    if eval is not None and eval_out is None:
        raise UserError("dedup with --eval needs --eval-out FILE for the cleaned eval rows")
    table, col = _read(train, text_col, encoding)
    eval_table, eval_col = _read(eval, col, encoding) if eval else (None, col)
    train_texts = [str(r[col]) for r in table.rows]
    eval_texts = [str(r[eval_col]) for r in eval_table.rows] if eval_table else []
    train_ids, eval_ids = _groups(train_texts, eval_texts, near)

    seen: set[int] = set()
    keep, dropped = [], []
    for i, gid in enumerate(train_ids):
        (dropped if gid in seen else keep).append(i)
        seen.add(gid)
    report: dict[str, Any] = {
        "mode": "near (normalised text or >= 90% shingle overlap)" if near else "exact",
        "train": train,
        "rows_read": len(train_texts),
        "rows_kept": len(keep),
        "duplicates_removed": len(dropped),
        "duplicate_lines": [table.lines[i] for i in dropped[:20]],
    }
    write_rows(Path(out), table.columns, [table.rows[i] for i in keep])
    if eval_table is not None:
        train_groups = set(train_ids)
        eval_seen: set[int] = set()
        eval_keep, leaked, eval_dupes = [], [], []
        for i, gid in enumerate(eval_ids):
            if gid in train_groups:
                leaked.append(i)
            elif gid in eval_seen:
                eval_dupes.append(i)
            else:
                eval_keep.append(i)
            eval_seen.add(gid)
        report.update(
            eval=eval,
            eval_rows_read=len(eval_texts),
            eval_rows_kept=len(eval_keep),
            eval_duplicates_removed=len(eval_dupes),
            eval_leaked_removed=len(leaked),
            leaked_lines=[eval_table.lines[i] for i in leaked[:20]],
        )
        write_rows(Path(eval_out), eval_table.columns, [eval_table.rows[i] for i in eval_keep])
    return report
