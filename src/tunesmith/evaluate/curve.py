"""Learning curves: how the eval score grows with the training data, and what more data would give.

:func:`learning_curve` trains on growing, nested, stratified fractions of the training split (with
TF-IDF + linear SVM, or by fine-tuning) and scores each on the same eval split. On the error
``1 - score`` it fits an inverse power law with a floor, ``err(n) = a * n^(-b) + c``, and bootstraps
the fit for an uncertainty band: each bootstrap draw resamples the eval examples (the same draw for
every point, since they share one eval set) and the repeats at each fraction. From the fit it says
in one sentence what doubling the training data should add. :func:`validate_extrapolation` checks
the method on the data at hand: fit on the fractions up to one half, predict the full-data score,
and see whether the measured one falls inside the predicted interval.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import shutil
import textwrap
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.errors import UserError

DEFAULT_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.4, 0.7, 1.0)
ESTIMATORS = ("baseline", "finetune")
"""``baseline``: TF-IDF + linear SVM (seconds per point); ``finetune``: a full `tunesmith train` run per point."""
METRICS = ("macro_f1", "accuracy")
METRIC_NAMES = {"macro_f1": "macro-F1", "accuracy": "accuracy"}
BOOTSTRAP = 300
"""Bootstrap draws for the uncertainty band."""
LEVEL = 0.9
"""Coverage of the reported intervals."""
CURVE_FILE = "curve.json"
PLOT_FILE = "curve.png"


# ---------------------------------------------------------------- the power law


@dataclass(frozen=True)
class PowerLaw:
    """``err(n) = a * n^(-b) + c``: error falls as a power of the training size towards a floor ``c``.

    Attributes:
        a: scale, with ``n`` counted in examples.
        b: exponent (larger: faster gains from more data).
        c: floor, the error no amount of this kind of data removes.
    """

    a: float
    b: float
    c: float

    def error(self, n: Any) -> np.ndarray:
        """Predicted error at ``n`` training examples."""
        return self.a * np.power(np.asarray(n, dtype=np.float64), -self.b) + self.c

    def score(self, n: Any) -> np.ndarray:
        """Predicted score (``1 - error``) at ``n`` training examples."""
        return 1.0 - self.error(n)

    def to_dict(self) -> dict[str, float]:
        return {"a": self.a, "b": self.b, "c": self.c}


def fit_power_law(n: Sequence[float], err: Sequence[float], start: PowerLaw | None = None) -> PowerLaw | None:
    """Least-squares fit of ``err(n) = a * n^(-b) + c`` with ``a, c >= 0``, ``0 <= b <= 3``, ``c <= 1``.

    The fit runs on ``n`` divided by its largest value, so the parameters have similar scales.

    Args:
        n: training sizes (repeats allowed).
        err: the error at each size, in ``[0, 1]``.
        start: a law to start from (a fit of similar points: the bootstrap refits start from the
            central fit, which converges faster).

    Returns:
        The fitted law, or None when fewer than 3 distinct sizes were given or the fit failed.
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    x = np.asarray(n, dtype=np.float64)
    y = np.asarray(err, dtype=np.float64)
    if len(np.unique(x)) < 3:
        return None
    if np.all(y <= 1e-12):
        return PowerLaw(0.0, 0.0, 0.0)
    n_ref = float(x.max())
    xs = x / n_ref
    if start is not None:
        p0 = [min(start.a * n_ref ** (-start.b), 10.0), min(start.b, 3.0), min(start.c, 1.0)]
    else:
        c0 = float(max(0.0, y.min() * 0.5))
        p0 = [float(max(np.mean(y[xs == xs.max()]) - c0, 1e-4)), 0.5, c0]

    def law(v, a, b, c):
        return a * np.power(v, -b) + c

    def jacobian(v, a, b, c):
        p = np.power(v, -b)
        return np.stack([p, -a * p * np.log(v), np.ones_like(v)], axis=1)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            (a, b, c), _ = curve_fit(law, xs, y, p0=p0, jac=jacobian, bounds=([0.0, 0.0, 0.0], [10.0, 3.0, 1.0]), maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    return PowerLaw(a=float(a * n_ref**b), b=float(b), c=float(c))


# ---------------------------------------------------------------- scores


def label_ids(labels: Sequence[str], names: Sequence[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[label] for label in labels], dtype=np.int64)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> float:
    """Macro-F1 over ``k`` classes from label ids; a class absent from both gold and predictions scores 0.

    The same number as :func:`tunesmith.evaluate.metrics.classification_metrics` (``zero_division=0``),
    computed with one ``bincount`` so that hundreds of bootstrap draws stay fast.
    """
    confusion = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    tp = np.diag(confusion).astype(np.float64)
    denom = confusion.sum(axis=0) + confusion.sum(axis=1)  # 2tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float(f1.mean())


def score(metric: str, y_true: np.ndarray, y_pred: np.ndarray, k: int) -> float:
    if metric == "macro_f1":
        return macro_f1(y_true, y_pred, k)
    return float(np.mean(y_true == y_pred))


# ---------------------------------------------------------------- subsamples


def nested_subsets(labels: Sequence[str], fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Stratified, nested subsets: each fraction keeps that share of every class (at least one example).

    Each class's examples are shuffled once with ``seed`` and every fraction takes a prefix, so a
    smaller subset is always inside a larger one. Indices come back sorted.
    """
    from tunesmith.data.texts import natural_key

    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    orders = {label: rng.permutation(by_class[label]).tolist() for label in sorted(by_class, key=natural_key)}
    subsets = []
    for fraction in fractions:
        chosen: list[int] = []
        for order in orders.values():
            chosen.extend(order[: max(1, round(fraction * len(order)))])
        subsets.append(sorted(chosen))
    return subsets


def parse_fractions(text: str | Sequence[float]) -> list[float]:
    """``"0.1,0.2,1.0"`` (or a list) -> sorted distinct fractions in ``(0, 1]``."""
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise UserError(f"--fractions must be comma-separated numbers in (0, 1] such as 0.1,0.2,0.4,0.7,1.0, got {text!r}") from None
    else:
        values = [float(v) for v in text]
    bad = [v for v in values if not 0 < v <= 1]
    if bad or not values:
        raise UserError(f"--fractions must be numbers in (0, 1] (shares of the training split) such as 0.1,0.2,0.4,0.7,1.0, got {text!r}")
    return sorted(set(values))


# ---------------------------------------------------------------- result


@dataclass
class CurveResult:
    """A learning curve: the measured points, the fits, the sentence, and where it was written.

    ``predictions`` (eval label ids per point) and ``y_true`` stay in memory for the bootstrap.
    """

    dir: Path | None
    summary: dict[str, Any]
    points: list[dict[str, Any]]
    labels: list[str]
    y_true: np.ndarray
    predictions: list[np.ndarray]
    fits: dict[str, Any] = field(default_factory=dict)
    sentence: str = ""
    validation: dict[str, Any] | None = None

    @property
    def n_full(self) -> int:
        """Training examples at the largest fraction."""
        return max(p["n"] for p in self.points)

    def to_dict(self) -> dict[str, Any]:
        """What ``curve.json`` holds."""
        return {
            **self.summary,
            "points": self.points,
            "fit": self.fits,
            "sentence": self.sentence,
            "validation": self.validation,
        }


def _bootstrap_scores(
    result: CurveResult, use: list[int], metric: str, targets: np.ndarray, draws: int, seed: int, start: PowerLaw
) -> tuple[np.ndarray, np.ndarray]:
    """Refit on bootstrap draws; returns predicted scores ``[draws', len(targets)]`` and the fitted parameters."""
    rng = np.random.default_rng(seed)
    k = len(result.labels)
    y = result.y_true
    groups: dict[float, list[int]] = {}
    for i in use:
        groups.setdefault(result.points[i]["fraction"], []).append(i)
    sizes = np.array([result.points[i]["n"] for i in range(len(result.points))], dtype=np.float64)
    predicted, params = [], []
    for _ in range(draws):
        eval_idx = rng.integers(0, len(y), len(y))
        chosen = [int(j) for members in groups.values() for j in rng.choice(members, size=len(members), replace=True)]
        errs = [1.0 - score(metric, y[eval_idx], result.predictions[j][eval_idx], k) for j in chosen]
        law = fit_power_law(sizes[chosen], errs, start=start)
        if law is not None:
            predicted.append(law.score(targets))
            params.append((law.a, law.b, law.c))
    return np.array(predicted).reshape(-1, len(targets)), np.array(params).reshape(-1, 3)


def _interval(values: np.ndarray, level: float) -> list[float]:
    lo, hi = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2]) if len(values) else (math.nan, math.nan)
    return [float(lo), float(hi)]


def fit_curve(result: CurveResult, *, draws: int = BOOTSTRAP, level: float = LEVEL, seed: int = 0, max_fraction: float = 1.0) -> dict:
    """Fit every metric on the points up to ``max_fraction`` and bootstrap predictions at ``n_full`` and ``2 * n_full``.

    Returns:
        Per metric: the law, predicted scores, the doubling gain in points with its interval,
        and a grid with its band for the plot; None for a metric when fewer than 3 sizes are usable.
    """
    use = [i for i, p in enumerate(result.points) if p["fraction"] <= max_fraction + 1e-9]
    n_full = result.n_full
    grid = np.unique(np.geomspace(min(result.points[i]["n"] for i in use), 2 * n_full, 40).round(3))
    targets = np.concatenate([[n_full, 2 * n_full], grid])
    fits: dict[str, Any] = {}
    for metric in METRICS:
        sizes = [result.points[i]["n"] for i in use]
        law = fit_power_law(sizes, [1.0 - result.points[i][metric] for i in use])
        if law is None:
            fits[metric] = None
            continue
        boot, params = _bootstrap_scores(result, use, metric, targets, draws, seed, law)
        now, doubled = (float(v) for v in law.score([n_full, 2 * n_full]))
        gains = (boot[:, 1] - boot[:, 0]) * 100 if len(boot) else np.array([])
        band = np.quantile(boot[:, 2:], [(1 - level) / 2, 1 - (1 - level) / 2], axis=0) if len(boot) else None
        fits[metric] = {
            "formula": "err(n) = a * n^(-b) + c, err = 1 - score, n = training examples",
            **law.to_dict(),
            "ceiling": 1.0 - law.c,
            "fitted_on_fractions": sorted({result.points[i]["fraction"] for i in use}),
            "score_at_n_full": now,
            "score_at_n_full_interval": _interval(boot[:, 0], level),
            "doubling": {
                "from": n_full,
                "to": 2 * n_full,
                "score": doubled,
                "score_interval": _interval(boot[:, 1], level),
                "gain_points": (doubled - now) * 100,
                "gain_interval_points": _interval(gains, level),
            },
            "bootstrap_draws": int(len(boot)),
            "bootstrap_b_interval": _interval(params[:, 1], level) if len(params) else None,
            "grid": {
                "n": grid.tolist(),
                "score": law.score(grid).tolist(),
                "low": band[0].tolist() if band is not None else None,
                "high": band[1].tolist() if band is not None else None,
            },
        }
    return fits


def doubling_sentence(fits: dict[str, Any], level: float = LEVEL, metric: str = "macro_f1") -> str:
    """``"doubling the training data (3,617 -> 7,234) should add about 0.4 points of macro-F1 (90% interval 0.1-0.8)"``."""
    fit = fits.get(metric)
    if fit is None:
        return f"too few distinct training sizes to fit a learning curve for {METRIC_NAMES[metric]}: measure at least 3 fractions"
    d = fit["doubling"]
    lo, hi = d["gain_interval_points"]
    digits = 1 if max(abs(d["gain_points"]), abs(lo), abs(hi)) >= 0.1 else 2
    return (
        f"doubling the training data ({d['from']:,} -> {d['to']:,}) should add about {d['gain_points']:.{digits}f} points of "
        f"{METRIC_NAMES[metric]} ({level:.0%} interval {lo:.{digits}f}-{hi:.{digits}f})"
    )


def validate_extrapolation(
    result: CurveResult, *, max_fraction: float = 0.5, draws: int = BOOTSTRAP, level: float = LEVEL, seed: int = 0
) -> dict[str, Any]:
    """Fit on the fractions up to ``max_fraction`` and check the prediction at the largest fraction against its measurement.

    Returns:
        ``{"available": False, "reason": ...}`` when fewer than 3 sizes are at or below ``max_fraction``
        or none above it; else per metric the predicted score, its interval, the measured score (mean
        over repeats) and ``inside``; the top-level ``inside`` is macro-F1's.
    """
    fractions = sorted({p["fraction"] for p in result.points})
    low = [f for f in fractions if f <= max_fraction + 1e-9]
    top = fractions[-1]
    sizes = {p["n"] for p in result.points if p["fraction"] <= max_fraction + 1e-9}
    if len(sizes) < 3 or top <= max_fraction:
        return {
            "available": False,
            "reason": f"needs at least 3 fractions <= {max_fraction:g} and one above it; measured {', '.join(f'{f:g}' for f in fractions)}",
        }
    fits = fit_curve(result, draws=draws, level=level, seed=seed, max_fraction=max_fraction)
    out: dict[str, Any] = {"available": True, "max_fraction": max_fraction, "fit_fractions": low, "checked_fraction": top, "level": level}
    measured_points = [p for p in result.points if p["fraction"] == top]
    out["n_checked"] = measured_points[0]["n"]
    for metric in METRICS:
        fit = fits.get(metric)
        measured = float(np.mean([p[metric] for p in measured_points]))
        if fit is None:
            out[metric] = {"measured": measured, "predicted": None, "interval": None, "inside": None}
            continue
        lo, hi = fit["score_at_n_full_interval"]
        out[metric] = {
            "predicted": fit["score_at_n_full"],
            "interval": [lo, hi],
            "measured": measured,
            "inside": bool(lo <= measured <= hi),
            "error_points": (fit["score_at_n_full"] - measured) * 100,
        }
    out["inside"] = out["macro_f1"]["inside"]
    return out


# ---------------------------------------------------------------- measuring


def default_curve_dir(source: str) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(source).stem) or "data"
    return Path("runs") / f"curve-{stem}-{datetime.now():%Y%m%d-%H%M%S}"


def _write_labelled_csv(path: Path, texts: Sequence[str], labels: Sequence[str]) -> None:
    from tunesmith.training.rundir import atomic_write_text

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(zip(texts, labels, strict=True))
    atomic_write_text(path, buf.getvalue())


def learning_curve(
    config: Any = None,
    *,
    fractions: Sequence[float] | str = DEFAULT_FRACTIONS,
    repeats: int | None = None,
    estimator: str = "baseline",
    out: str | Path | None = None,
    console: Any = None,
    draws: int = BOOTSTRAP,
    level: float = LEVEL,
    **overrides: Any,
) -> CurveResult:
    """Measure and fit a learning curve, and write ``curve.json`` and ``curve.png`` into ``out``.

    Args:
        config: a :class:`~tunesmith.config.RunConfig`, a nested dict, or None for the defaults; its
            ``data`` section says what to load and how to split it (``--eval FILE`` or a seeded
            stratified holdout, the same split `tunesmith train` makes), its ``training.seed`` seeds
            the subsamples, and for ``finetune`` the whole config is each point's training run.
        fractions: shares of the training split to train on (nested, stratified subsamples).
        repeats: subsamples per fraction, each with its own seed; default 2 for ``baseline``,
            1 for ``finetune``.
        estimator: ``baseline`` (TF-IDF + linear SVM) or ``finetune``.
        out: directory to write; default ``runs/curve-<data>-<time>``.
        console: a rich Console for progress (default: stderr).
        draws: bootstrap draws for the intervals.
        level: coverage of the intervals.
        **overrides: flat config keys (``train="data.csv"``, ``epochs=1``).

    Returns:
        The :class:`CurveResult`, with its sentence and (when the fractions allow) the extrapolation check.

    Raises:
        UserError: bad fractions/repeats/estimator, a task other than single-label classify, or bad data.
    """
    from rich.console import Console

    from tunesmith.config import RunConfig, build_config
    from tunesmith.data.texts import prepare_classification
    from tunesmith.training.rundir import atomic_write_json

    if estimator not in ESTIMATORS:
        raise UserError(f"--estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    fractions = parse_fractions(fractions)
    repeats = repeats if repeats is not None else (2 if estimator == "baseline" else 1)
    if repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {repeats}")
    if isinstance(config, RunConfig):
        config = build_config(config.model_dump(), overrides) if overrides else config
    else:
        config = build_config(config or {}, overrides)
    if config.task != "classify" or config.data.multi_label:
        raise UserError(
            f"tunesmith curve measures single-label classification; this config has task {config.task!r}"
            + (" with --multi-label" if config.data.multi_label else "")
        )
    console = console or Console(stderr=True)
    run_dir = Path(out) if out is not None else default_curve_dir(config.data.train)
    if (run_dir / CURVE_FILE).exists():
        raise UserError(f"{run_dir} already holds a learning curve ({CURVE_FILE}); choose another --out")
    seed = config.training.seed
    started = time.perf_counter()
    data = prepare_classification(config.data, seed=seed)
    train_labels = data.train.labels or []
    y_true = label_ids(data.eval.labels or [], data.labels)
    summary: dict[str, Any] = {
        "data": data.report["source"],
        "eval": data.report.get("eval_source") or data.report["split"],
        "estimator": estimator,
        "model": config.model.model if estimator == "finetune" else "tfidf-word1-2+char2-5 linear-svm",
        "labels": data.labels,
        "n_train": len(data.train),
        "n_eval": len(data.eval),
        "fractions": fractions,
        "repeats": repeats,
        "seed": seed,
        "level": level,
        "bootstrap_draws": draws,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    console.print(
        f"learning curve of {estimator} on {summary['data']}: {len(data.train):,} train / {len(data.eval):,} eval, "
        f"fractions {', '.join(f'{f:g}' for f in fractions)}, {repeats} repeat(s)"
    )
    eval_file = None
    if estimator == "finetune":
        eval_file = run_dir / "data" / "eval.csv"
        _write_labelled_csv(eval_file, data.eval.texts, data.eval.labels or [])

    points: list[dict[str, Any]] = []
    predictions: list[np.ndarray] = []
    k = len(data.labels)
    for r in range(repeats):
        rep_seed = seed + r
        for fraction, subset in zip(fractions, nested_subsets(train_labels, fractions, rep_seed), strict=True):
            tick = time.perf_counter()
            sub = data.train.subset(subset)
            name = f"f{fraction:g}-r{r}"
            point: dict[str, Any] = {"fraction": fraction, "repeat": r, "seed": rep_seed, "n": len(sub)}
            if estimator == "baseline":
                from tunesmith.classic import tfidf_svm_predict

                predicted = tfidf_svm_predict(sub.texts, sub.labels or [], data.eval.texts, seed=rep_seed)
            else:
                predicted = _finetune_point(config, sub, eval_file, run_dir, name, rep_seed, console)
                point["run"] = str(run_dir / "runs" / name)
            pred = label_ids(predicted, data.labels)
            for metric in METRICS:
                point[metric] = score(metric, y_true, pred, k)
            point["seconds"] = round(time.perf_counter() - tick, 3)
            points.append(point)
            predictions.append(pred)
            console.print(
                f"  {fraction:>5g} of the data (n={len(sub):,}, repeat {r + 1}/{repeats}): macro-F1 {point['macro_f1']:.4f}, "
                f"accuracy {point['accuracy']:.4f} ({point['seconds']:.1f} s)"
            )
    result = CurveResult(dir=run_dir, summary=summary, points=points, labels=data.labels, y_true=y_true, predictions=predictions)
    result.fits = fit_curve(result, draws=draws, level=level, seed=seed)
    result.sentence = doubling_sentence(result.fits, level)
    result.validation = validate_extrapolation(result, draws=draws, level=level, seed=seed)
    summary["plot"] = PLOT_FILE
    summary["seconds"] = round(time.perf_counter() - started, 3)
    plot_curve(result, run_dir / PLOT_FILE)
    atomic_write_json(run_dir / CURVE_FILE, result.to_dict())
    return result


def _finetune_point(config, sub, eval_file: Path, run_dir: Path, name: str, seed: int, console) -> list[str]:
    """Fine-tune on one subsample with the run's config; the eval predictions, in eval order."""
    import json

    from tunesmith.config import build_config
    from tunesmith.training.runner import train

    train_file = run_dir / "data" / f"train-{name}.csv"
    _write_labelled_csv(train_file, sub.texts, sub.labels or [])
    point_config = build_config(
        config.model_dump(),
        {
            "train": str(train_file),
            "eval": str(eval_file),
            "text_col": "text",
            "label_col": "label",
            "dedupe": False,  # the split was deduplicated already; subsample rows are distinct
            "baseline": False,
            "seed": seed,
            "out": str(run_dir / "runs" / name),
            "resume": False,
        },
        source=f"curve point {name}",
    )
    run = train(point_config, console=console)
    shutil.rmtree(run.dir / "checkpoints", ignore_errors=True)  # the final model is kept; checkpoints only serve --resume
    lines = (run.dir / "eval_predictions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["label"] for line in lines]


# ---------------------------------------------------------------- plot


def plot_curve(result: CurveResult, path: Path) -> None:
    """Scores against training size (log scale), the fitted laws, the macro-F1 band, and the doubled size."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    styles = {"macro_f1": ("tab:blue", "o"), "accuracy": ("tab:orange", "s")}
    n_full = result.n_full
    for metric in METRICS:
        color, marker = styles[metric]
        ns = [p["n"] for p in result.points]
        ax.scatter(ns, [p[metric] * 100 for p in result.points], color=color, marker=marker, s=22, label=f"{METRIC_NAMES[metric]} measured")
        fit = result.fits.get(metric)
        if fit is None:
            continue
        grid = fit["grid"]
        ax.plot(grid["n"], [s * 100 for s in grid["score"]], color=color, lw=1.5, label=f"{METRIC_NAMES[metric]} fit")
        if grid["low"] is not None and metric == "macro_f1":
            ax.fill_between(
                grid["n"],
                [s * 100 for s in grid["low"]],
                [s * 100 for s in grid["high"]],
                color=color,
                alpha=0.18,
                label=f"{result.summary['level']:.0%} band",
            )
    ax.axvline(n_full, color="grey", ls=":", lw=1)
    ax.axvline(2 * n_full, color="grey", ls="--", lw=1)
    for x, label in ((n_full, "data now"), (2 * n_full, "2x data")):
        ax.annotate(label, (x, 0.5), xycoords=("data", "axes fraction"), color="grey", fontsize=8, ha="right", va="center", rotation=90)
    ax.set_xscale("log")
    ax.set_xlabel("training examples")
    ax.set_ylabel("score (%)")
    fig.suptitle(f"learning curve: {Path(str(result.summary['data'])).name} ({result.summary['estimator']})", fontsize=11)
    ax.set_title(textwrap.fill(result.sentence, 120), fontsize=8)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=120, format="png")
    os.replace(tmp, path)
