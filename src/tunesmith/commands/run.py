"""Verbs that make and use a run: train, predict, eval."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from tunesmith.commands.flags import add_config_flags, config_overrides
from tunesmith.commands.output import (
    err,
    out,
    print_metrics_table,
    write_records,
)
from tunesmith.errors import UserError

# ---------------------------------------------------------------- verbs


def cmd_train(args: argparse.Namespace) -> int:
    from tunesmith.config import load_config
    from tunesmith.training.runner import train

    config = load_config(args.config, config_overrides(args))
    run = train(config, console=err)
    if run is None:  # another rank of a data-parallel run: rank 0 reports
        return 0
    metrics = run.metrics
    print_metrics_table(metrics["eval"], title=f"eval metrics: {run.dir}")
    speed = metrics["training"]
    if speed["stopped_early"]:
        out.print(f"stopped early after {speed['epochs']:g} epochs: no eval improvement for {config.training.early_stopping} evaluations")
    out.print(
        f"trained {speed['examples_seen']:,} examples in {speed['step_seconds']:.0f} s of steps "
        f"({speed['train_samples_per_second']:.1f} samples/s, {speed['precision']}); wall {speed['wall_seconds']:.0f} s"
    )
    out.print(f'\nrun directory: {run.dir}\npredict with:  tunesmith predict {run.dir} --text "your text here"')
    return 0


# ---------------------------------------------------------------- parser


def args_train(p: argparse.ArgumentParser) -> None:
    add_config_flags(p)


def cmd_predict(args: argparse.Namespace) -> int:
    from tunesmith.run import Run

    if not args.text and not args.input:
        raise UserError('predict needs texts: pass --text "..." (repeatable) or --input FILE (CSV/TSV/JSONL/Parquet)')
    run = Run.load(args.run)
    if args.text:
        rows = run.predict(args.text)
        if args.json:
            for text, row in zip(args.text, rows):
                out.print_json(json.dumps({"text": text, **row}))
            return 0
        shown = [text if len(text) <= 80 else text[:77] + "..." for text in args.text]
        if "entities" in rows[0]:
            table = Table("text", "entities", title=f"predictions of {run.dir}")
            for text, row in zip(shown, rows):
                table.add_row(
                    text, ", ".join(f"{e['text']} [{e['type']} {e['start']}-{e['end']} {e['score']:.2f}]" for e in row["entities"]) or "-"
                )
        elif "labels" in rows[0]:
            table = Table("text", "labels (probability)", title=f"predictions of {run.dir}")
            for text, row in zip(shown, rows):
                table.add_row(text, ", ".join(f"{lab} {row['probabilities'][lab]:.2f}" for lab in row["labels"]) or "-")
        elif "generated" in rows[0]:
            table = Table("prompt", "generated", title=f"replies of {run.dir}")
            for text, row in zip(shown, rows):
                table.add_row(text, row["generated"])
        elif "reward" in rows[0]:
            table = Table("text", "reward", title=f"rewards of {run.dir} (higher: preferred)")
            for text, row in zip(shown, rows):
                table.add_row(text, f"{row['reward']:.4f}")
        elif "mask_predictions" in rows[0]:
            table = Table("text", "top predictions per mask (probability)", title=f"predictions of {run.dir}")
            for text, row in zip(shown, rows):
                table.add_row(
                    text, " | ".join(", ".join(f"{p['token']} {p['score']:.2f}" for p in preds) for preds in row["mask_predictions"])
                )
        elif "label" in rows[0]:
            table = Table("text", "label", "score", title=f"predictions of {run.dir}")
            for text, row in zip(shown, rows):
                table.add_row(text, row["label"], f"{row['score']:.4f}")
        elif "heads" in rows[0]:
            heads = list(rows[0]["heads"])
            table = Table("text", *heads, title=f"predictions of {run.dir} (classify: label probability; regress: value)")
            for text, row in zip(shown, rows):
                cells = [row["heads"][h] for h in heads]
                table.add_row(text, *(f"{c['label']} {c['score']:.2f}" if "label" in c else f"{c['value']:.4f}" for c in cells))
        else:
            names = list(rows[0]["values"])
            table = Table("text", *names, title=f"predictions of {run.dir}")
            for text, row in zip(shown, rows):
                table.add_row(text, *(f"{row['values'][n]:.4f}" for n in names))
        out.print(table)
        return 0
    from tunesmith.data import load_texts

    texts = load_texts(
        args.input,
        args.text_col or run.config.data.text_col,
        None,
        require_labels=False,
        encoding=run.config.data.encoding,
        read_labels=False,
    )
    rows = run.predict(texts.texts)
    records = [{"row": r, "text": t, **p} for r, t, p in zip(texts.rows, texts.texts, rows)]
    write_records(records, args.output)
    if args.output:
        err.print(f"wrote {len(records):,} predictions to {args.output}")
    return 0


def args_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `tunesmith train`")
    p.add_argument("--text", action="append", help="a text to classify (repeat for several)")
    p.add_argument("--input", metavar="FILE", help="file of texts (CSV/TSV/JSONL/Parquet) to classify")
    p.add_argument("--output", metavar="FILE", help="where to write predictions (.jsonl, .csv or .tsv); default: JSONL on stdout")
    p.add_argument("--text-col", help="text column of --input (default: the run's, or detected)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table for --text")


def cmd_eval(args: argparse.Namespace) -> int:
    from tunesmith.run import Run
    from tunesmith.training.rundir import atomic_write_json, write_jsonl

    run = Run.load(args.run)
    options = {"limit": args.limit, "max_new_tokens": args.max_new_tokens}
    metrics, predictions = run.evaluate(args.data, text_col=args.text_col, label_col=args.label_col, **options)
    name = Path(args.data).stem if args.data else "eval-split"
    target = Path(args.output) if args.output else run.dir / "eval" / name / "metrics.json"
    atomic_write_json(target, {"data": args.data or "the run's eval split", **metrics})
    write_jsonl(target.with_name("predictions.jsonl"), predictions)
    print_metrics_table(metrics, title=f"{run.dir} on {args.data or 'its eval split'}")
    out.print(f"wrote {target} and {target.with_name('predictions.jsonl')}")
    return 0


def args_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `tunesmith train`")
    p.add_argument(
        "--data", help="labelled file (or packaged dataset name) to evaluate on; generative runs (sft, clm) default to their own eval split"
    )
    p.add_argument(
        "--limit", type=int, metavar="N", help="sft: eval prompts answered greedily for BLEU/chrF [default: the run's --eval-generate]"
    )
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="sft: most tokens per generated reply [default: the run's]")
    p.add_argument("--text-col", help="text column (default: the run's, or detected)")
    p.add_argument("--label-col", help="label column (default: the run's, or detected)")
    p.add_argument("--output", metavar="FILE", help="metrics JSON to write [default: RUN/eval/<data name>/metrics.json]")
