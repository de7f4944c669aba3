"""Soft voting over tiny classify runs and a saved baseline: per-member and ensemble metrics, weights, label checks."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from rich.console import Console

from conftest import make_texts, write_csv
from tunesmith.classic.baselines import run_baselines
from tunesmith.cli import main
from tunesmith.errors import UserError
from tunesmith.evaluate.ensemble import ensemble, fitted_weights
from tunesmith.training.runner import train

QUIET = Console(file=io.StringIO())


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("ensemble")
    data = write_csv(root / "train.csv", make_texts(60))
    heldout = write_csv(root / "heldout.csv", make_texts(30, seed=1))
    fast = {"model": str(tiny_model), "max_steps": 2, "batch_size": 8, "lr": 1e-3, "max_length": 32, "precision": "fp32", "threads": 1}
    flags = {**fast, "doctor": False, "baseline": False, "overfit_monitor": False}
    runs = [train({"data": {"train": str(data)}}, console=QUIET, out=str(root / f"run-{s}"), seed=s, **flags).dir for s in (1, 2)]
    return root, data, heldout, runs


def test_equal_weight_ensemble_scores_members_and_ensemble(two_runs):
    _, _, heldout, runs = two_runs
    result = ensemble(runs, str(heldout), console=QUIET)
    assert result["n"] == 30 and sorted(result["labels"]) == ["ham", "spam"] and not result["weights_fitted"]
    assert [m["name"] for m in result["members"]] == ["run-1", "run-2"]
    assert [m["weight"] for m in result["members"]] == [0.5, 0.5]
    for scored in [*result["members"], result["ensemble"]]:
        assert 0 <= scored["accuracy"] <= 1 and 0 <= scored["macro_f1"] <= 1 and scored["log_loss"] > 0


def test_fitted_weights_with_a_baseline_via_cli(two_runs, capsys):
    root, data, heldout, runs = two_runs
    baseline_dir = root / "baselines"
    run_baselines({"train": str(data)}, out=baseline_dir, models=["linear-svc", "logreg"], console=QUIET)
    out = root / "ensemble.json"
    rc = main(["ensemble", *map(str, runs), "--data", str(heldout), "--baseline", str(baseline_dir), "--fit-weights", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr()
    assert "ensemble" in printed.out and "optimistic" in printed.out
    assert "linear-svc gives no probabilities" in printed.err, "the SVM is skipped, with the reason"
    result = json.loads(out.read_text())
    weights = [m["weight"] for m in result["members"]]
    assert [m["kind"] for m in result["members"]] == ["run", "run", "baseline"] and result["weights_fitted"]
    assert sum(weights) == pytest.approx(1.0, abs=1e-5) and min(weights) >= 0
    # the separable synthetic data: TF-IDF + logreg beats two 2-step tiny BERTs, and log-loss weighting follows it
    assert result["members"][2]["log_loss"] < min(m["log_loss"] for m in result["members"][:2])
    assert weights[2] == max(weights)
    assert result["ensemble"]["log_loss"] <= min(m["log_loss"] for m in result["members"]) + 1e-6


def test_label_set_mismatch_exits_2(two_runs, tmp_path, capsys):
    _, _, heldout, runs = two_runs
    three = write_csv(tmp_path / "three.csv", [*make_texts(40), *[(f"other words {i}", "other") for i in range(10)]])
    run_baselines({"train": str(three)}, out=tmp_path / "b", models=["logreg"], console=QUIET)
    rc = main(["ensemble", str(runs[0]), "--data", str(heldout), "--baseline", str(tmp_path / "b" / "models" / "logreg")])
    assert rc == 2
    message = capsys.readouterr().err
    assert "must share one label set" in message and "'other'" in message
    with pytest.raises(UserError, match="at least two members"):
        ensemble(runs[:1], str(heldout), console=QUIET)


def test_fitted_weights_prefer_the_better_member_and_sum_to_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    good = np.where(np.eye(2)[y] == 1, 0.9, 0.1)
    noise = rng.dirichlet([1, 1], size=200)
    w = fitted_weights(np.stack([noise, good]), y)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all() and w[1] > 0.9
