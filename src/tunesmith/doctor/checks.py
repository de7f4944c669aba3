"""The dataset checks and :func:`diagnose`, which runs them all and gathers a :class:`Report`.

Each check is a small function ``check_x(data) -> list[Finding]`` over the shared
:class:`~tunesmith.doctor.dataset.DoctorData`; duplicates, label errors and languages live in their
own modules. Class counts are taken after dropping exact duplicates, as `tunesmith train` does.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from tunesmith.data.texts import natural_key
from tunesmith.doctor.dataset import DoctorData, load_data
from tunesmith.doctor.duplicates import check_conflicting_labels, check_duplicates, check_leakage
from tunesmith.doctor.findings import MAX_EXAMPLES, Finding, Report
from tunesmith.doctor.label_errors import check_label_errors
from tunesmith.doctor.languages import check_languages
from tunesmith.errors import UserError

MIN_PER_CLASS = 8
"""Fewer training examples of a class than this are too few to fine-tune on."""
MIN_EVAL_PER_CLASS = 5
"""Fewer eval examples of a class than this make its eval scores swing by a large step per mistake."""
MINORITY_SHARE = 0.05
"""A class (or language) under this share of the rows is a minority."""
IMBALANCE_RATIO = 5.0
"""Majority/minority ratio from which class weights are advised."""
TRUNCATION_WARNING = 0.05
"""Share of texts over max_length from which truncation is a warning rather than a note."""
SHORT_CHARS = 3
LONG_FACTOR = 3.0
"""A text longer than this many times the 99th percentile length is very long."""


def _pct(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "0%"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def check_size(data: DoctorData) -> list[Finding]:
    """Too few examples per class to train on, or for an eval split to measure."""
    if not data.labelled:
        return [
            Finding(
                check="labels",
                severity="info",
                message=f"no label column found in {data.train.source} (columns detected: text '{data.train.text_col}'); "
                "the class, label-error and conflict checks were skipped",
                remedy="name the label column: tunesmith doctor DATA --label-col NAME",
            )
        ]
    counts = data.class_counts
    findings = []
    if len(counts) < 2:
        only = next(iter(counts), "?")
        findings.append(
            Finding(
                check="labels",
                severity="error",
                message=f"every training row has the label '{only}'; classification needs at least two classes",
                evidence={"classes": counts},
                remedy=f"add examples of the other classes to {data.train.source}, or check --label-col names the label column",
            )
        )
        return findings
    few = {label: n for label, n in counts.items() if n < MIN_PER_CLASS}
    if few:
        listed = ", ".join(f"'{label}' ({n})" for label, n in list(few.items())[:MAX_EXAMPLES])
        findings.append(
            Finding(
                check="size",
                severity="warning",
                message=f"{_plural(len(few), 'class', 'classes')} {'has' if len(few) == 1 else 'have'} fewer than {MIN_PER_CLASS} "
                f"training examples ({listed}); fine-tuning learns little from so few",
                evidence={"classes_under_minimum": few, "minimum": MIN_PER_CLASS, "classes": counts},
                remedy=f"add examples of {', '.join(list(few)[:5])} (aim for 20+ each), or merge or drop those classes",
            )
        )
    findings += _eval_size(data, counts)
    return findings


def _eval_size(data: DoctorData, counts: dict[str, int]) -> list[Finding]:
    if data.eval is None:
        # A stratified split keeps about eval_fraction of each class.
        expected = {label: round(n * data.eval_fraction) for label, n in counts.items()}
        thin = {label: n for label, n in expected.items() if n < MIN_EVAL_PER_CLASS}
        if not thin:
            return []
        listed = ", ".join(f"'{label}' ~{n}" for label, n in list(thin.items())[:MAX_EXAMPLES])
        return [
            Finding(
                check="size",
                severity="warning",
                message=f"a {data.eval_fraction:.0%} eval split would hold fewer than {MIN_EVAL_PER_CLASS} examples of "
                f"{_plural(len(thin), 'class', 'classes')} ({listed}); each mistake on them moves their scores by 20+ points",
                evidence={"expected_eval_counts": expected, "eval_fraction": data.eval_fraction},
                remedy=data.train_command("--eval", "FILE") + "  (a labelled eval file with more examples of those classes)",
            )
        ]
    eval_labels = data.eval.labels
    if eval_labels is None:
        return [
            Finding(
                check="size",
                severity="warning",
                message=f"the eval file {data.eval.source} has no label column; it cannot score a model",
                remedy=f"add the label column '{data.train.label_col}' to {data.eval.source}",
            )
        ]
    eval_counts = Counter(eval_labels)
    findings = []
    unseen = sorted((label for label in eval_counts if label not in counts), key=natural_key)
    if unseen:
        rows = [data.eval.rows[i] for i, label in enumerate(eval_labels) if label in unseen]
        findings.append(
            Finding(
                check="labels",
                severity="error",
                message=f"{_plural(len(unseen), 'label')} in {data.eval.source} never occur in training "
                f"({', '.join(repr(u) for u in unseen[:MAX_EXAMPLES])}; {_plural(len(rows), 'row')}); `tunesmith train` refuses the pair",
                evidence={"unseen_labels": {u: eval_counts[u] for u in unseen}, "row_numbers": rows[:MAX_EXAMPLES]},
                remedy=f"fix those eval labels or add training examples of them to {data.train.source}",
            )
        )
    thin = {label: eval_counts.get(label, 0) for label in counts if eval_counts.get(label, 0) < MIN_EVAL_PER_CLASS}
    if thin:
        listed = ", ".join(f"'{label}' ({n})" for label, n in list(thin.items())[:MAX_EXAMPLES])
        findings.append(
            Finding(
                check="size",
                severity="warning",
                message=f"the eval file holds fewer than {MIN_EVAL_PER_CLASS} examples of {_plural(len(thin), 'class', 'classes')} "
                f"({listed}); their eval scores rest on a handful of rows",
                evidence={"eval_counts": {label: eval_counts.get(label, 0) for label in counts}},
                remedy=f"add labelled examples of {', '.join(list(thin)[:5])} to {data.eval.source}",
            )
        )
    return findings


def check_imbalance(data: DoctorData) -> list[Finding]:
    """Majority/minority ratio and classes under 5% of the rows."""
    counts = data.class_counts
    if not data.labelled or len(counts) < 2:
        return []
    total = sum(counts.values())
    majority, minority = max(counts, key=counts.__getitem__), min(counts, key=counts.__getitem__)
    ratio = counts[majority] / counts[minority]
    small = {label: n for label, n in counts.items() if n / total < MINORITY_SHARE}
    if ratio < IMBALANCE_RATIO and not small:
        return []
    shares = {label: round(n / total, 4) for label, n in counts.items()}
    small_text = ""
    if small:
        listed = ", ".join(f"'{label}' {n / total:.1%}" for label, n in small.items())
        small_text = f"; {_plural(len(small), 'class', 'classes')} under {MINORITY_SHARE:.0%} of the rows ({listed})"
    return [
        Finding(
            check="imbalance",
            severity="warning",
            message=f"classes are unbalanced: '{majority}' has {ratio:.1f}x the examples of '{minority}' "
            f"({counts[majority]:,} vs {counts[minority]:,}){small_text}; an unweighted loss favours the majority",
            evidence={"ratio": round(ratio, 2), "counts": counts, "shares": shares, "minority_classes": list(small)},
            remedy=data.train_command("--class-weights", "auto"),
        )
    ]


def check_text_lengths(data: DoctorData) -> list[Finding]:
    """Very short and very long texts (empty ones were set aside when reading)."""
    texts = data.train.texts
    if not texts:
        return []
    lengths = np.array([len(t.strip()) for t in texts])
    findings = []
    short = np.flatnonzero(lengths < SHORT_CHARS)
    if len(short):
        share = len(short) / len(texts)
        findings.append(
            Finding(
                check="text_lengths",
                severity="warning" if share >= 0.01 else "info",
                message=f"{_plural(len(short), 'training text')} ({share:.1%}) {'is' if len(short) == 1 else 'are'} shorter than "
                f"{SHORT_CHARS} characters; check they carry their label's meaning",
                evidence={"rows": len(short), "examples": [data.example(int(i), chars=int(lengths[i])) for i in short[:MAX_EXAMPLES]]},
                remedy=f"remove or complete the listed rows in {data.train.source} if they are not real examples",
            )
        )
    limit = max(LONG_FACTOR * float(np.percentile(lengths, 99)), 200.0)
    long = np.flatnonzero(lengths > limit)
    if len(long):
        order = long[np.argsort(-lengths[long], kind="stable")]
        findings.append(
            Finding(
                check="text_lengths",
                severity="warning",
                message=f"{_plural(len(long), 'training text')} {'is' if len(long) == 1 else 'are'} over {limit:,.0f} characters "
                f"({LONG_FACTOR:g}x the 99th percentile, {np.percentile(lengths, 99):,.0f}); the longest has {lengths.max():,}: "
                "often pasted documents or merged rows",
                evidence={
                    "rows": len(long),
                    "limit_chars": round(limit),
                    "median_chars": float(np.median(lengths)),
                    "examples": [data.example(int(i), width=60, chars=int(lengths[i])) for i in order[:MAX_EXAMPLES]],
                },
                remedy=f"check the listed rows of {data.train.source}: split merged rows, trim pasted text, or drop them",
            )
        )
    return findings


def check_truncation(data: DoctorData) -> list[Finding]:
    """How many texts the model's tokenizer makes longer than max_length, and the length that keeps 95%."""
    tokenizer, problem = data.tokenizer
    if tokenizer is None:
        if data.model is None:
            return []
        return [
            Finding(
                check="truncation",
                severity="info",
                message=f"skipped the truncation and vocabulary checks: could not load the tokenizer of model '{data.model}' ({problem})",
                remedy="pass a registry name or a local model directory with --model (see `tunesmith models list`)",
            )
        ]
    lengths = np.array([len(ids) for ids in data.token_ids])
    over = np.flatnonzero(lengths > data.max_length)
    p95, p99 = (math.ceil(float(np.percentile(lengths, q))) for q in (95, 99))
    model_max = _model_max_length(tokenizer)
    data.summary["token_lengths"] = {"median": float(np.median(lengths)), "p95": p95, "p99": p99, "max": int(lengths.max())}
    evidence: dict[str, Any] = {
        "max_length": data.max_length,
        "over_max_length": len(over),
        "p50": float(np.median(lengths)),
        "p95": p95,
        "p99": p99,
        "longest": int(lengths.max()),
        "model_max": model_max,
    }
    order = over[np.argsort(-lengths[over], kind="stable")]
    if len(order):
        evidence["examples"] = [data.example(int(i), width=60, tokens=int(lengths[i])) for i in order[:MAX_EXAMPLES]]
    share = len(over) / len(lengths)
    keep95 = _round_up(p95)
    if share >= TRUNCATION_WARNING:
        if model_max is not None and keep95 > model_max:
            remedy = (
                f"{data.train_command('--max-length', str(model_max))}  (the model's limit); 95% would need {p95} tokens: "
                "split long texts into chunks or use a long-context model"
            )
        else:
            remedy = data.train_command("--max-length", str(keep95))
        return [
            Finding(
                check="truncation",
                severity="warning",
                message=f"{share:.1%} of training texts ({len(over):,}) are longer than max_length {data.max_length} tokens and lose "
                f"their ends; 95% fit in {p95} tokens (median {np.median(lengths):.0f})",
                evidence=evidence,
                remedy=remedy,
            )
        ]
    keep99 = _round_up(p99)
    faster = keep99 <= data.max_length // 2
    if not len(over) and not faster:
        return []
    parts = []
    if len(over):
        parts.append(f"{_plural(len(over), 'training text')} ({share:.1%}) exceed max_length {data.max_length} tokens and are truncated")
    if faster:
        parts.append(f"99% fit in {p99} tokens, so --max-length {keep99} would train faster")
    return [
        Finding(
            check="truncation",
            severity="info",
            message="; ".join(parts) + f" (95% fit in {p95}, longest {lengths.max():,})",
            evidence=evidence,
            remedy=data.train_command("--max-length", str(keep99))
            if faster
            else "none needed at this share; check the longest rows listed",
        )
    ]


def _round_up(n: int, step: int = 8) -> int:
    return max(step, math.ceil(n / step) * step)


def _model_max_length(tokenizer: Any) -> int | None:
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if isinstance(limit, int) and 0 < limit < 1_000_000 else None


CHECKS: tuple[tuple[str, Callable[[DoctorData], list[Finding]]], ...] = (
    ("size", check_size),
    ("imbalance", check_imbalance),
    ("text_lengths", check_text_lengths),
    ("duplicates", check_duplicates),
    ("conflicting_labels", check_conflicting_labels),
    ("leakage", check_leakage),
    ("label_errors", check_label_errors),
    ("truncation", check_truncation),
    ("languages", check_languages),
)
"""Every check, in the order it runs and its findings are listed within one severity."""


def diagnose(
    train: str,
    eval: str | None = None,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    model: str | None = "minilm",
    max_length: int = 128,
    seed: int = 42,
) -> Report:
    """Examine a dataset for what would hurt fine-tuning or make its eval score wrong.

    Args:
        train: training data: a CSV/TSV/JSONL/Parquet file or a packaged dataset name.
        eval: an eval file, or None when training would hold out a split of ``train``.
        text_col: text column; detected when None.
        label_col: label column; detected when None (without one, the label checks are skipped).
        model: model whose tokenizer the truncation and vocabulary checks use; None skips them.
        max_length: tokens per text the run would keep.
        seed: seed of the cross-validation folds of the label-error check.

    Returns:
        The findings, errors first, and a summary of what was read and checked.

    Raises:
        UserError: a file is missing or unreadable, or a named column does not exist.
    """
    if max_length < 1:
        raise UserError(f"--max-length must be a positive number of tokens, got {max_length}; the default is 128")
    started = time.perf_counter()
    data = load_data(train, eval, text_col, label_col, model=model, max_length=max_length, seed=seed)
    findings = list(data.set_aside)
    timings = {}
    for name, check in CHECKS:
        tick = time.perf_counter()
        findings += check(data)
        timings[name] = round(time.perf_counter() - tick, 3)
    summary: dict[str, Any] = {
        "train": data.train.source,
        "eval": data.eval.source if data.eval is not None else None,
        "text_col": data.train.text_col,
        "label_col": data.train.label_col,
        "rows": len(data.train),
        "unique_texts": len(data.first_occurrences),
        "eval_rows": len(data.eval) if data.eval is not None else None,
        "classes": data.class_counts if data.labelled else None,
        "model": model,
        "max_length": max_length,
        **data.summary,
        "seconds": {**timings, "total": round(time.perf_counter() - started, 3)},
    }
    return Report(findings=findings, summary=summary)
