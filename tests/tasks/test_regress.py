"""Regression end to end on the tiny BERT: targets standardised, predictions in their own units."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest

import tunesmith
from conftest import HAM_WORDS, SPAM_WORDS
from tunesmith.cli import main
from tunesmith.data.targets import load_targets
from tunesmith.errors import UserError


def rating_csv(path, n=160, seed=0, two_targets=False):
    """Scores driven by the share of 'spam' words: learnable from the words alone."""
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "score", "intensity"] if two_targets else ["text", "score"])
        for i in range(n):
            k = rng.randint(0, 6)
            words = rng.sample(SPAM_WORDS, k) + rng.sample(HAM_WORDS, 6 - k)
            rng.shuffle(words)
            score = 10.0 + 5.0 * k + rng.gauss(0, 0.5)  # far from zero mean, unit-free: standardisation matters
            w.writerow(
                [" ".join(words) + f" {i}", f"{score:.3f}", f"{k / 6:.3f}"] if two_targets else [" ".join(words) + f" {i}", f"{score:.3f}"]
            )
    return path


def test_regression_learns_and_reports_in_target_units(tmp_path, tiny_args):
    data = rating_csv(tmp_path / "ratings.csv")
    run = tunesmith.train(
        {"task": "regress", "data": {"train": str(data)}}, **{**tiny_args, "epochs": 6, "lr": 3e-3}, out=str(tmp_path / "run")
    )
    m = run.metrics["eval"]
    assert m["pearson"] > 0.5, m
    assert m["rmse"] < m["mean_baseline"]["rmse"]
    assert "tfidf_ridge_baseline" in m
    assert (run.dir / "model" / "tunesmith_targets.json").is_file()
    pred = run.predict(["free prize win cash claim urgent", "lunch meeting home mum dinner love"])
    assert 5 < pred[1]["value"] < pred[0]["value"] < 50, "values come back in the targets' units"
    metrics, records = run.evaluate(str(rating_csv(tmp_path / "more.csv", n=30, seed=5)))
    assert metrics["n"] == 30 and set(records[0]) >= {"row", "text", "gold", "value"}


def test_two_targets_from_the_cli(tmp_path, tiny_model, capsys):
    data = rating_csv(tmp_path / "r.csv", n=60, two_targets=True)
    out = tmp_path / "run"
    flags = [
        "--model",
        str(tiny_model),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--max-length",
        "32",
        "--precision",
        "fp32",
        "--threads",
        "1",
    ]
    assert main(["train", "--task", "regress", "--train", str(data), "--label-col", "score,intensity", "--out", str(out), *flags]) == 0
    printed = capsys.readouterr().out
    assert "per target" in printed and "training mean" in printed
    assert main(["predict", str(out), "--text", "free prize", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert set(row["values"]) == {"score", "intensity"}
    assert main(["eval", str(out), "--data", str(data)]) == 0


def test_non_numeric_target_names_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,score\nfine,1.5\nalso fine,2\nbroken,high\n")
    with pytest.raises(UserError, match=r"line 4: 'high'"):
        load_targets(str(path))


def test_vader_packaged_subsets():
    data = load_targets("vader_tweets")
    assert len(data) == 4200 and data.names == ["sentiment"]
    assert data.targets.min() >= -4 and data.targets.max() <= 4
    assert np.isfinite(data.targets).all()


def test_metric_must_suit_the_task():
    from tunesmith.config import build_config

    with pytest.raises(UserError, match="not a regress metric"):
        build_config({"task": "regress"}, {"metric": "accuracy"})
    assert build_config({"task": "regress"}).metric == "rmse"
