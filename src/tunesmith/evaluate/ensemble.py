"""Soft-voting ensembles of classify runs and saved classical baselines, scored on a labelled file.

Each member gives class probabilities for every text; the ensemble averages them (equal weights,
or non-negative weights summing to 1 fitted to minimise the log-loss on the same data, which makes
its score optimistic) and predicts the most probable class. The ensemble and every member are
scored with accuracy, macro-F1 and log-loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from tunesmith.errors import UserError

_EPS = 1e-12


def ensemble(
    runs: Sequence[str | Path],
    data: str,
    baselines: Sequence[str | Path] = (),
    fit_weights: bool = False,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    out: str | Path | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Score a soft-voting ensemble of classify runs (and baselines that give probabilities) on ``data``.

    Args:
        runs: run directories of finished single-label classify runs, all with the same label set.
        data: a labelled file or packaged dataset name.
        baselines: ``models/NAME`` directories written by ``tunesmith baseline``, or its output
            directory (every saved model there that gives probabilities is used).
        fit_weights: fit non-negative weights (summing to 1) minimising the log-loss on ``data``;
            otherwise every member weighs the same.
        text_col: text column of ``data`` (default: the first run's, else detected).
        label_col: label column of ``data`` (default: the first run's, else detected).
        out: a JSON file to write the result to.
        console: where progress goes (default: stderr).

    Returns:
        ``{"data", "n", "labels", "weights_fitted", "note", "members": [...], "ensemble": {...}}``;
        each member has ``name``, ``kind``, ``path``, ``weight``, ``accuracy``, ``macro_f1``, ``log_loss``.

    Raises:
        UserError: fewer than two members, a run that is not single-label classify, differing label
            sets, a baseline without probabilities, or gold labels no member knows.
    """
    from tunesmith.data.texts import load_texts
    from tunesmith.run import Run

    console = console or Console(stderr=True)
    loaded = [Run.load(r) for r in runs]
    for run in loaded:
        if run.config.task != "classify" or run.config.data.multi_label:
            kind = "multi-label classify" if run.config.task == "classify" else run.config.task
            raise UserError(f"{run.dir} is a {kind} run; ensemble votes over single-label classify runs only")
    models = [(str(b), m) for path in baselines for b, m in _load_baselines(Path(path), console)]
    if len(loaded) + len(models) < 2:
        raise UserError(f"an ensemble needs at least two members, got {len(loaded) + len(models)}; pass more RUNs or --baseline DIR")

    members: list[tuple[str, str, str, list[str]]] = [(run.dir.name, "run", str(run.dir), list(run.labels)) for run in loaded]
    members += [(Path(path).name, "baseline", path, list(map(str, model.classes))) for path, model in models]
    labels = members[0][3]
    differing = [m for m in members if set(m[3]) != set(labels)]
    if differing:
        listed = "; ".join(f"{path}: {', '.join(map(repr, sorted(lab)))}" for _, _, path, lab in [members[0], *differing])
        raise UserError(
            f"ensemble members must share one label set, but they differ ({listed}); vote only over models trained on the same labels"
        )

    first = loaded[0].config.data if loaded else None
    texts = load_texts(
        data,
        text_col or (first.text_col if first else None),
        label_col or (first.label_col if first else None),
        encoding=first.encoding if first else "utf-8",
    )
    unknown = sorted({g for g in texts.labels if g not in set(labels)})
    if unknown:
        raise UserError(
            f"{data}: label(s) {', '.join(map(repr, unknown))} are unknown to the members, which know {', '.join(map(repr, labels))}"
        )
    label_id = {name: i for i, name in enumerate(labels)}
    y_true = np.array([label_id[g] for g in texts.labels])

    probs = []
    for run in loaded:
        console.print(f"predicting {len(texts.texts):,} texts with {run.dir}")
        rows = run.predict(texts.texts)
        probs.append(np.array([[row["probabilities"][name] for name in labels] for row in rows]))
    for path, model in models:
        console.print(f"predicting {len(texts.texts):,} texts with baseline {path}")
        p = np.asarray(model.predict_proba(texts.texts), dtype=float)
        order = [list(map(str, model.classes)).index(name) for name in labels]
        probs.append(p[:, order])
    stacked = np.stack(probs)  # [members, texts, classes]

    weights = fitted_weights(stacked, y_true) if fit_weights else np.full(len(members), 1.0 / len(members))
    combined = np.tensordot(weights, stacked, axes=1)
    result = {
        "data": data,
        "n": len(y_true),
        "labels": labels,
        "weights_fitted": fit_weights,
        "note": (
            f"weights fitted to minimise log-loss on {data} itself: the ensemble's score on it is optimistic; check it on other data"
            if fit_weights
            else "equal weights"
        ),
        "members": [
            {"name": name, "kind": kind, "path": path, "weight": round(float(w), 6), **_scores(p, y_true, labels)}
            for (name, kind, path, _), w, p in zip(members, weights, stacked, strict=True)
        ],
        "ensemble": _scores(combined, y_true, labels),
    }
    if out is not None:
        from tunesmith.training.rundir import atomic_write_json

        atomic_write_json(Path(out), result)
    return result


def fitted_weights(probs: np.ndarray, y_true: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1 that minimise the log-loss of ``sum_m w_m probs[m]``.

    Args:
        probs: ``[members, texts, classes]`` probabilities.
        y_true: gold class ids ``[texts]``.
    """
    from scipy.optimize import minimize

    n = probs.shape[0]
    gold = probs[:, np.arange(len(y_true)), y_true]  # [members, texts]: each member's probability of the gold class

    def loss(w: np.ndarray) -> float:
        return float(-np.mean(np.log(np.clip(w @ gold, _EPS, None))))

    def grad(w: np.ndarray) -> np.ndarray:
        return -np.mean(gold / np.clip(w @ gold, _EPS, None), axis=1)

    start = np.full(n, 1.0 / n)
    fit = minimize(
        loss,
        start,
        jac=grad,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * n,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
    )
    w = np.clip(fit.x if fit.success else start, 0.0, None)
    w = w / w.sum() if w.sum() > 0 else start
    return w if loss(w) <= loss(start) else start


def _scores(probs: np.ndarray, y_true: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
    from tunesmith.evaluate.metrics import classification_metrics

    m = classification_metrics(y_true.tolist(), probs.argmax(axis=1).tolist(), labels)
    log_loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(y_true)), y_true], _EPS, None))))
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "log_loss": round(log_loss, 6)}


def _load_baselines(path: Path, console: Console) -> list[tuple[Path, Any]]:
    """A saved baseline, or every saved baseline of a ``tunesmith baseline`` directory that gives probabilities."""
    from tunesmith.classic.baselines import LinearTextClassifier, load_baseline

    if not (path / "baselines.json").is_file():
        model = load_baseline(path)
        if isinstance(model, LinearTextClassifier) and model.probabilities is None:
            raise UserError(f"{path}: {model.name} gives no probabilities (a linear SVM only scores); use logreg or complement-nb")
        return [(path, model)]
    found = []
    for sub in sorted(p for p in (path / "models").iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            model = load_baseline(sub)
        except UserError as exc:
            console.print(f"[yellow]skipping[/] {sub}: {exc}")
            continue
        if isinstance(model, LinearTextClassifier) and model.probabilities is None:
            console.print(f"skipping {sub}: {model.name} gives no probabilities")
            continue
        found.append((sub, model))
    if not found:
        raise UserError(f"{path} holds no saved baseline that gives probabilities; fit logreg or complement-nb with `tunesmith baseline`")
    return found


def ensemble_table(result: dict[str, Any]) -> Table:
    """Every member, then the ensemble: weight, accuracy, macro-F1, log-loss."""
    table = Table(
        "member",
        "kind",
        "weight",
        "accuracy",
        "macro F1",
        "log-loss",
        title=f"soft-voting ensemble on {result['data']} (n={result['n']:,})",
        caption=result["note"],
    )
    for m in result["members"]:
        table.add_row(m["name"], m["kind"], f"{m['weight']:.3f}", f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}", f"{m['log_loss']:.4f}")
    table.add_section()
    e = result["ensemble"]
    table.add_row("ensemble", "", "1.000", f"{e['accuracy']:.4f}", f"{e['macro_f1']:.4f}", f"{e['log_loss']:.4f}", style="bold")
    return table
