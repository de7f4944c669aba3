"""What the CLI prints and writes: metric tables per task, prediction records as JSONL/CSV."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

out = Console(soft_wrap=True)

err = Console(stderr=True, soft_wrap=True)


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


def print_metrics_table(metrics: dict[str, Any], title: str) -> None:
    """The task's headline metrics beside the baselines the run computed."""
    if metrics.get("generative"):
        from tunesmith.commands.generate import print_generation_table  # late: generate imports this module

        print_generation_table(metrics, title)
    elif "pairwise_accuracy" in metrics or "reward_accuracy" in metrics:
        from tunesmith.commands.preference import print_preference_table  # late: preference imports this module

        print_preference_table(metrics, title)
    elif "per_head" in metrics:
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
        out.print(
            versus(
                "the fine-tuned model (threshold 0.5)", at_half["micro_f1"], "TF-IDF + linear SVM per label", svm["micro_f1"], "micro-F1"
            )
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
        out.print(
            versus("the fine-tuned model", metrics["accuracy"], "TF-IDF + linear SVM", svm["accuracy"], "accuracy") + " on the same split"
        )


def versus(model: str, score: float, baseline: str, baseline_score: float, metric: str) -> str:
    """'<model> beats <baseline> by 0.22 accuracy points' (or trails, or ties)."""
    gap = (score - baseline_score) * 100
    if abs(gap) < 0.005:
        return f"{model} ties {baseline} on {metric}"
    return f"{model} {'beats' if gap > 0 else 'trails'} {baseline} by {abs(gap):.2f} {metric} points"
