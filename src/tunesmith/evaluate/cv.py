"""K-fold cross-validation: every fold a normal run directory, then mean ± std and a 95% interval.

One holdout split of a small dataset moves the score by points from seed to seed; k folds use every
example for evaluation exactly once and show that spread. Each fold is written as JSONL files and
trained with :func:`tunesmith.training.runner.train`, so every fold is a run that ``tunesmith
predict``/``eval`` can open, and a fold whose run finished is reused when the cv is run again::

    OUT/folds.json                   the plan: settings and fold of every row (a rerun must match it)
    OUT/fold-1/train.jsonl, eval.jsonl
    OUT/fold-1/run/                  a run directory (metrics.json, eval_predictions.jsonl, model/)
    ...
    OUT/oof_predictions.jsonl        every example once, predicted by the fold that held it out
    OUT/cv.json                      per-fold metrics, mean, std, 95% t-interval, pooled out-of-fold metrics
"""

from __future__ import annotations

import difflib
import json
import math
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from tunesmith.config import RunConfig, build_config
from tunesmith.errors import UserError

PLAN_FILE = "folds.json"
OOF_FILE = "oof_predictions.jsonl"
RESULT_FILE = "cv.json"


@dataclass(frozen=True)
class _TaskSpec:
    """What cv needs to know of a task: the metrics to aggregate and the run's classical baseline."""

    metrics: tuple[str, ...]
    table_metrics: tuple[str, ...]
    baseline_key: str
    baseline_title: str
    baseline_model: str


TASK_SPECS: dict[str, _TaskSpec] = {
    "classify": _TaskSpec(
        ("accuracy", "macro_f1", "weighted_f1"), ("accuracy", "macro_f1", "weighted_f1"), "tfidf_svm_baseline", "SVM", "linear SVM"
    ),
    "regress": _TaskSpec(
        ("rmse", "mae", "r2", "pearson", "spearman"), ("rmse", "r2", "spearman"), "tfidf_ridge_baseline", "ridge", "ridge regression"
    ),
}


@dataclass
class _Examples:
    """The deduplicated examples cv splits, with what each fold file needs."""

    texts: list[str]
    rows: list[int]
    records: list[dict[str, Any]]  # one fold-file line per example
    strata: list[str] | None  # class labels to stratify on (classify), None for regress
    text_key: str
    label_key: str
    classes: list[str] = field(default_factory=list)  # classify: sorted label names
    names: list[str] = field(default_factory=list)  # regress: target names
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class CVResult:
    """A finished cross-validation (what ``OUT/cv.json`` holds).

    Attributes:
        out: the cv directory.
        task: ``classify`` or ``regress``.
        folds: per fold: its run directory, sizes, whether it was reused, the model's and the
            TF-IDF baseline's metrics.
        summary: ``summary["model"|"baseline"][metric]`` -> :func:`t_interval` of the per-fold values.
        pooled: metrics of all out-of-fold predictions scored together.
        info: the data and split settings (source, rows, duplicates removed, folds, groups, seed).
    """

    out: Path
    task: str
    folds: list[dict[str, Any]]
    summary: dict[str, dict[str, dict[str, Any]]]
    pooled: dict[str, Any]
    info: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as written to ``cv.json``."""
        return {
            "task": self.task,
            "out": str(self.out),
            **self.info,
            "per_fold": self.folds,
            "summary": self.summary,
            "pooled_oof": self.pooled,
        }


def t_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean, sample standard deviation and Student-t confidence interval of the mean of ``values``.

    The interval is ``mean ± t(1 - (1 - confidence) / 2, n - 1) * std / sqrt(n)``. Across cv folds
    it is optimistic: the folds share most of their training data, so their scores are not independent
    (Bengio & Grandvalet, 2004); read it as the spread of this estimate, not a guarantee.

    Returns:
        ``{"n", "mean", "std", "ci_low", "ci_high", "confidence"}``; with fewer than two values
        ``std`` and the interval are None.
    """
    from scipy.stats import t

    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    mean = float(x.mean())
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci_low": None, "ci_high": None, "confidence": confidence}
    std = float(x.std(ddof=1))
    half = float(t.ppf(1 - (1 - confidence) / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "confidence": confidence}


def default_cv_dir(config: RunConfig) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(config.data.train).stem) or "data"
    return Path("runs") / f"cv-{stem}-{datetime.now():%Y%m%d-%H%M%S}"


def assign_folds(n: int, folds: int, seed: int, strata: Sequence[str] | None = None, groups: Sequence[str] | None = None) -> np.ndarray:
    """The fold (0-based) of each of ``n`` examples: stratified by ``strata`` and keeping ``groups`` whole when given.

    StratifiedKFold, StratifiedGroupKFold, KFold or GroupKFold, all shuffled with ``seed``.
    """
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    if strata is not None:
        splitter = (
            StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
            if groups is not None
            else StratifiedKFold(folds, shuffle=True, random_state=seed)
        )
    else:
        splitter = (
            GroupKFold(folds, shuffle=True, random_state=seed) if groups is not None else KFold(folds, shuffle=True, random_state=seed)
        )
    fold_of = np.full(n, -1, dtype=np.int64)
    with warnings.catch_warnings():
        # "the least populated class has fewer members than n_splits": cross_validate says it in its own words
        warnings.simplefilter("ignore", UserWarning)
        try:
            for k, (_, held_out) in enumerate(splitter.split(np.zeros(n), strata, groups)):
                fold_of[held_out] = k
        except ValueError as exc:
            raise UserError(f"cannot split {n} examples into {folds} folds ({exc}); use fewer --folds or add examples") from None
    return fold_of


def cross_validate(
    config: RunConfig | dict[str, Any] | None = None,
    folds: int = 5,
    group_col: str | None = None,
    console: Console | None = None,
    **overrides: Any,
) -> CVResult:
    """K-fold cross-validation of a fine-tuning config; each fold is trained with :func:`~tunesmith.training.runner.train`.

    Args:
        config: a :class:`RunConfig`, a nested dict, or None for the defaults; ``data.train`` is split
            into folds (``data.eval`` is ignored: every example is evaluated once, in its fold), ``out``
            is the cv directory (default ``runs/cv-<data>-<time>``).
        folds: number of folds, at least 2.
        group_col: column of ``data.train`` whose values must never be split between train and eval
            (a speaker, document or patient id); read from the same table as the texts.
        console: where progress goes (default: stderr).
        **overrides: flat config keys, as for ``train``.

    Returns:
        The :class:`CVResult`, also written to ``OUT/cv.json``, with ``OUT/oof_predictions.jsonl``.
        Running it again with the same ``out`` reuses every fold whose run finished.

    Raises:
        UserError: unsupported task, bad data, a missing group column, too few examples, classes or
            groups for ``folds``, or an ``out`` that holds a cv with other settings.
    """
    if isinstance(config, RunConfig):
        config = build_config(config.model_dump(), overrides) if overrides else config
    else:
        config = build_config(config or {}, overrides)
    console = console or Console(stderr=True)
    if config.task not in TASK_SPECS or config.data.multi_label:
        task = "classify --multi-label" if config.data.multi_label else config.task
        raise UserError(f"cv supports the tasks {', '.join(TASK_SPECS)} (single label); got {task}")
    if not isinstance(folds, int) or folds < 2:
        raise UserError(f"`--folds` must be an integer of at least 2, got {folds!r}")
    spec = TASK_SPECS[config.task]
    seed = config.training.seed

    examples = _load_examples(config)
    groups = _read_groups(config, group_col, examples.rows) if group_col else None
    _check_sizes(examples, folds, groups, console)
    fold_of = assign_folds(len(examples.texts), folds, seed, examples.strata, groups)
    if examples.strata is not None:
        _check_every_class_trains(examples.strata, examples.classes, fold_of, folds, group_col)

    out_dir = Path(config.out) if config.out else default_cv_dir(config)
    if config.data.eval:
        console.print(
            f"[yellow]note:[/] cv ignores the eval file {config.data.eval}: every training example is evaluated once, in the fold that "
            f"holds it out. Score a fold's run on it with: tunesmith eval {out_dir / 'fold-1' / 'run'} --data {config.data.eval}"
        )
    info = {
        "data": config.data.train,
        **examples.report,
        "folds": folds,
        "group_col": group_col,
        "groups": len(set(groups)) if groups is not None else None,
        "seed": seed,
        "splitter": _splitter_name(examples.strata is not None, groups is not None, seed),
    }
    _check_plan(out_dir, config, info, fold_of)
    console.print(
        f"{folds}-fold cv of {len(examples.texts):,} examples ({info['splitter']}) into {out_dir}; rerun with --out {out_dir} to resume"
    )

    per_fold: list[dict[str, Any]] = []
    oof: list[dict[str, Any] | None] = [None] * len(examples.texts)
    for k in range(folds):
        train_idx = np.flatnonzero(fold_of != k).tolist()
        eval_idx = np.flatnonzero(fold_of == k).tolist()
        per_fold.append(_run_fold(config, examples, spec, out_dir, k, folds, train_idx, eval_idx, oof, console))

    from tunesmith.training.rundir import atomic_write_json, write_jsonl

    records = [r for r in oof if r is not None]
    if len(records) != len(examples.texts):  # every fold ran, so this is a programming error
        raise RuntimeError(f"out-of-fold predictions cover {len(records)} of {len(examples.texts)} examples")
    summary = {
        "model": {m: t_interval([f["model"][m] for f in per_fold]) for m in spec.metrics},
    }
    if all(f["baseline"] for f in per_fold):
        summary["baseline"] = {m: t_interval([f["baseline"][m] for f in per_fold]) for m in spec.metrics if m in per_fold[0]["baseline"]}
    result = CVResult(out=out_dir, task=config.task, folds=per_fold, summary=summary, pooled=_pooled(examples, records), info=info)
    write_jsonl(out_dir / OOF_FILE, records)
    atomic_write_json(out_dir / RESULT_FILE, result.to_dict())
    return result


def _splitter_name(stratified: bool, grouped: bool, seed: int) -> str:
    name = ("Stratified" if stratified else "") + ("GroupKFold" if grouped else "KFold")
    return f"{name}, shuffled, seed {seed}"


def _load_examples(config: RunConfig) -> _Examples:
    data = config.data
    if config.task == "classify":
        from tunesmith.data.texts import dedupe, load_texts, natural_key

        texts = load_texts(data.train, data.text_col, data.label_col, encoding=data.encoding)
        rows_read = len(texts)
        removed = conflicting = 0
        if data.dedupe:
            texts, removed, conflicting = dedupe(texts)
        labels = texts.labels or []
        classes = sorted(set(labels), key=natural_key)
        if len(classes) < 2:
            raise UserError(
                f"{texts.source}: column '{texts.label_col}' has a single class {classes[0]!r}; classification needs at least two classes"
            )
        return _Examples(
            texts=texts.texts,
            rows=texts.rows,
            records=[{"text": t, "label": lab} for t, lab in zip(texts.texts, labels, strict=True)],
            strata=labels,
            text_key="text",
            label_key="label",
            classes=classes,
            report={
                "text_col": texts.text_col,
                "label_col": texts.label_col,
                "rows_read": rows_read,
                "rows": len(texts),
                "duplicates_removed": removed,
                "conflicting_duplicates": conflicting,
            },
        )
    from tunesmith.data.targets import load_targets, target_columns

    targets = load_targets(data.train, data.text_col, target_columns(data.label_col), encoding=data.encoding)
    rows_read = len(targets)
    if data.dedupe:
        first: dict[str, int] = {}
        for i, text in enumerate(targets.texts):
            first.setdefault(text, i)
        targets = targets.subset(sorted(first.values()))
    # a target may itself be named "text"; the fold files then keep the text under another key
    text_key = "text" if "text" not in targets.names else "input_text"
    records = [
        {text_key: t, **dict(zip(targets.names, map(float, y), strict=True))} for t, y in zip(targets.texts, targets.targets, strict=True)
    ]
    return _Examples(
        texts=targets.texts,
        rows=targets.rows,
        records=records,
        strata=None,
        text_key=text_key,
        label_key=",".join(targets.names),
        names=targets.names,
        report={
            "text_col": targets.text_col,
            "targets": targets.names,
            "rows_read": rows_read,
            "rows": len(targets),
            "duplicates_removed": rows_read - len(targets),
        },
    )


def _read_groups(config: RunConfig, group_col: str, rows: list[int]) -> list[str]:
    """The group of each kept example, read from the same table as the texts and matched by line."""
    from tunesmith.data.loading import read_table
    from tunesmith.data.packaged import PACKAGED, packaged_path
    from tunesmith.data.texts import normalise_label

    source = config.data.train
    path = packaged_path(source) if source in PACKAGED and not Path(source).exists() else source
    table = read_table(path, encoding=config.data.encoding)
    column = group_col if group_col in table.columns else None
    if column is None:
        folded = [c for c in table.columns if c.strip().casefold() == group_col.strip().casefold()]
        column = folded[0] if len(folded) == 1 else None
    if column is None:
        close = difflib.get_close_matches(group_col, table.columns, n=1)
        hint = f"did you mean --group-col '{close[0]}'? " if close else ""
        raise UserError(
            f"{source}: no group column named '{group_col}'; {hint}columns found: {', '.join(table.columns)}; "
            "name the column whose values must stay together (speaker, document, patient id) with --group-col NAME, or leave it out"
        )
    by_line = {line: normalise_label(row[column]) for row, line in zip(table.rows, table.lines, strict=True)}
    groups = [by_line[r] for r in rows]
    missing = [r for r, g in zip(rows, groups, strict=True) if g is None]
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (f", ... {len(missing) - 5} more" if len(missing) > 5 else "")
        raise UserError(
            f"{source}: {len(missing)} row(s) have no value in group column '{column}' (lines {shown}); fill them or remove the rows"
        )
    return [str(g) for g in groups]


def _check_sizes(examples: _Examples, folds: int, groups: list[str] | None, console: Console) -> None:
    n = len(examples.texts)
    if n < folds:
        raise UserError(f"{folds} folds need at least {folds} examples, got {n}; use fewer --folds or add examples")
    if groups is not None and len(set(groups)) < folds:
        raise UserError(f"{folds} folds need at least {folds} distinct groups, got {len(set(groups))}; use fewer --folds")
    if examples.strata is None:
        return
    counts = Counter(examples.strata)
    single = sorted(label for label, c in counts.items() if c < 2)
    if single:
        raise UserError(
            f"class(es) {', '.join(map(repr, single[:10]))} have a single example: the fold that evaluates it cannot train on it; "
            "add examples or remove the class"
        )
    few = sorted(label for label, c in counts.items() if c < folds)
    if few:
        console.print(
            f"[yellow]warning:[/] class(es) {', '.join(f'{lab!r} ({counts[lab]})' for lab in few[:10])} have fewer examples than the {folds} folds: "
            "some folds evaluate none of them, which lowers those folds' macro-F1; consider fewer --folds"
        )


def _check_every_class_trains(labels: list[str], classes: list[str], fold_of: np.ndarray, folds: int, group_col: str | None) -> None:
    for k in range(folds):
        present = {lab for lab, f in zip(labels, fold_of, strict=True) if f != k}
        absent = [c for c in classes if c not in present]
        if absent:
            why = f" (their groups in '{group_col}' all fell into fold {k + 1})" if group_col else ""
            raise UserError(
                f"fold {k + 1} would train without any example of class(es) {', '.join(map(repr, absent[:10]))}{why}; "
                "use fewer --folds, add examples of them, or remove them"
            )


def _fold_config(config: RunConfig) -> dict[str, Any]:
    """The settings that decide what every fold trains (the data location aside): a rerun must match them."""
    dumped = config.model_dump(mode="json")
    dumped.pop("out", None)
    dumped.pop("resume", None)
    dumped["data"] = {k: v for k, v in dumped["data"].items() if k not in ("eval", "eval_fraction")}
    dumped["training"].pop("threads", None)  # how many cores a fold used does not change what it learns
    return dumped


def _check_plan(out_dir: Path, config: RunConfig, info: dict[str, Any], fold_of: np.ndarray) -> None:
    """Write ``folds.json``, or check that the one already there (an earlier run of this cv) is the same plan."""
    from tunesmith.training.rundir import atomic_write_json

    plan = {"task": config.task, **info, "config": _fold_config(config), "fold_of_example": [int(f) + 1 for f in fold_of]}
    path = out_dir / PLAN_FILE
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        then, now = _flatten(previous), _flatten(plan)
        # the fold assignment changes whenever a setting above does: name the setting first
        changed = sorted((k for k in set(then) | set(now) if then.get(k) != now.get(k)), key=lambda k: (k == "fold_of_example", k))
        if changed:
            detail = [
                "the fold of each example differs" if k == "fold_of_example" else f"{k}: {then.get(k)!r} then, {now.get(k)!r} now"
                for k in changed[:5]
            ]
            raise UserError(
                f"{out_dir} holds a cv with other settings ({'; '.join(detail)}); rerun with the same settings to resume it, "
                "or choose another --out"
            )
        return
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"{out_dir} exists and is not a tunesmith cv directory (no {PLAN_FILE}); choose another --out")
    atomic_write_json(path, plan)


def _flatten(plan: dict[str, Any]) -> dict[str, Any]:
    """``{"config": {"training": {"lr": 1}}}`` -> ``{"training.lr": 1}``: a changed setting is then named by its key."""
    flat = {k: v for k, v in plan.items() if k != "config"}
    for section, values in plan.get("config", {}).items():
        if isinstance(values, dict):
            flat.update({f"{section}.{key}": value for key, value in values.items()})
        else:
            flat[section] = values
    return flat


def _run_fold(
    config: RunConfig,
    examples: _Examples,
    spec: _TaskSpec,
    out_dir: Path,
    k: int,
    folds: int,
    train_idx: list[int],
    eval_idx: list[int],
    oof: list[dict[str, Any] | None],
    console: Console,
) -> dict[str, Any]:
    from tunesmith.training.rundir import write_jsonl
    from tunesmith.training.runner import train

    fold_dir = out_dir / f"fold-{k + 1}"
    run_dir = fold_dir / "run"
    label = f"fold {k + 1}/{folds}"
    reused = (run_dir / "metrics.json").is_file()
    if reused:
        console.print(f"{label}: reusing the finished run {run_dir} (metrics.json found), not retraining")
    else:
        write_jsonl(fold_dir / "train.jsonl", [examples.records[i] for i in train_idx])
        write_jsonl(fold_dir / "eval.jsonl", [examples.records[i] for i in eval_idx])
        interrupted = (run_dir / "config.yaml").is_file()
        console.rule(
            f"{label}: {'continuing the interrupted run' if interrupted else 'training'} on {len(train_idx):,}, evaluating {len(eval_idx):,}"
        )
        fold_config = build_config(
            config.model_dump(mode="json"),
            {
                "train": str(fold_dir / "train.jsonl"),
                "eval": str(fold_dir / "eval.jsonl"),
                "text_col": examples.text_key,
                "label_col": examples.label_key,
                "out": str(run_dir),
                "resume": interrupted,
            },
            source=f"{label} config",
        )
        train(fold_config, console=console)

    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))["eval"]
    predictions = [json.loads(line) for line in (run_dir / "eval_predictions.jsonl").read_text(encoding="utf-8").splitlines() if line]
    expected = [examples.texts[i] for i in eval_idx]
    if [p["text"] for p in predictions] != expected:
        raise UserError(
            f"{run_dir} was not trained on this cv's fold {k + 1} (its eval predictions are of other texts); delete {fold_dir} to retrain it"
        )
    for i, pred in zip(eval_idx, predictions, strict=True):
        oof[i] = {"row": examples.rows[i], "fold": k + 1, **{key: value for key, value in pred.items() if key != "row"}}
    baseline = metrics.get(spec.baseline_key)
    return {
        "fold": k + 1,
        "run": str(run_dir),
        "train_size": len(train_idx),
        "eval_size": len(eval_idx),
        "reused": reused,
        "model": {m: metrics[m] for m in spec.metrics},
        "baseline": {m: baseline[m] for m in spec.metrics if m in baseline} if baseline else None,
    }


def _pooled(examples: _Examples, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Metrics of every out-of-fold prediction together (one model per fold, so an approximation of one model's score)."""
    if examples.strata is not None:
        from tunesmith.evaluate.metrics import classification_metrics

        label_id = {name: i for i, name in enumerate(examples.classes)}
        return classification_metrics([label_id[r["gold"]] for r in records], [label_id[r["label"]] for r in records], examples.classes)
    from tunesmith.evaluate.metrics import regression_metrics

    gold = np.array([[r["gold"][n] for n in examples.names] for r in records])
    pred = np.array([[r["values"][n] for n in examples.names] for r in records])
    return regression_metrics(gold, pred, examples.names)


_SHORT = {"accuracy": "acc", "macro_f1": "macro F1", "weighted_f1": "wtd F1", "rmse": "rmse", "r2": "r2", "spearman": "spearman"}


def cv_table(result: CVResult) -> Table:
    """One row per fold, then mean, std and the 95% interval; the model beside the TF-IDF baseline (fits 80 columns)."""
    spec = TASK_SPECS[result.task]
    has_baseline = "baseline" in result.summary
    columns = [(m, side) for m in spec.table_metrics for side in (("model", "baseline") if has_baseline else ("model",))]
    reused = [str(f["fold"]) for f in result.folds if f["reused"]]
    caption = f"{spec.baseline_title}: TF-IDF + {spec.baseline_model} on the same folds. " if has_baseline else ""
    caption += "95% CI: Student t over the folds (optimistic: folds share training data)."
    if reused:
        caption += f" Reused finished fold run(s): {', '.join(reused)}."
    table = Table(
        "fold",
        "eval n",
        *[f"{_SHORT.get(m, m)}\n{'model' if side == 'model' else spec.baseline_title}" for m, side in columns],
        title=f"{len(result.folds)}-fold cv: {result.out}",
        caption=caption,
    )
    for f in result.folds:
        table.add_row(str(f["fold"]), f"{f['eval_size']:,}", *[f"{f[side][m]:.4f}" if f[side] else "" for m, side in columns])
    table.add_section()
    for row, key in (("mean", "mean"), ("std", "std"), ("95% lo", "ci_low"), ("95% hi", "ci_high")):
        cells = [f"{result.summary[side][m][key]:.4f}" if result.summary[side][m][key] is not None else "" for m, side in columns]
        table.add_row(row, "", *cells, style="bold" if key == "mean" else None)
    return table
