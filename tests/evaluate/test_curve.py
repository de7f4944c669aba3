"""Learning curves: the power-law fit, the subsamples, the bootstrap check, and the verb end to end."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from conftest import make_texts, write_csv
from tunesmith.cli import main
from tunesmith.errors import UserError
from tunesmith.evaluate.curve import (
    CurveResult,
    PowerLaw,
    doubling_sentence,
    fit_curve,
    fit_power_law,
    learning_curve,
    macro_f1,
    nested_subsets,
    parse_fractions,
    validate_extrapolation,
)
from tunesmith.evaluate.metrics import classification_metrics


def test_fit_recovers_known_parameters():
    n = np.array([50, 100, 200, 400, 800, 1600, 3200])
    law = fit_power_law(n, 3.0 * n**-0.4 + 0.05)
    assert law.a == pytest.approx(3.0, rel=1e-3)
    assert law.b == pytest.approx(0.4, rel=1e-3)
    assert law.c == pytest.approx(0.05, abs=1e-4)
    noisy = 3.0 * n**-0.4 + 0.05 + np.random.default_rng(0).normal(0, 0.002, len(n))
    rough = fit_power_law(np.repeat(n, 1), noisy)
    assert rough.b == pytest.approx(0.4, abs=0.1) and rough.c == pytest.approx(0.05, abs=0.02)
    assert float(rough.score(6400)) == pytest.approx(1 - (3.0 * 6400**-0.4 + 0.05), abs=0.01)


def test_fit_needs_three_sizes_and_handles_perfect_scores():
    assert fit_power_law([10, 10, 20], [0.3, 0.31, 0.2]) is None
    perfect = fit_power_law([10, 20, 40], [0.0, 0.0, 0.0])
    assert perfect == PowerLaw(0.0, 0.0, 0.0) and float(perfect.score(80)) == 1.0


def test_macro_f1_matches_the_shared_metrics():
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    p[:5] = 0  # make sure every class is predicted
    assert macro_f1(y, p, 4) == pytest.approx(classification_metrics(y, p, ["a", "b", "c", "d"])["macro_f1"])


def test_subsets_are_nested_stratified_and_seeded():
    labels = ["a"] * 80 + ["b"] * 20
    subsets = nested_subsets(labels, [0.1, 0.5, 1.0], seed=3)
    assert [len(s) for s in subsets] == [10, 50, 100]
    assert set(subsets[0]) <= set(subsets[1]) <= set(subsets[2])
    assert sum(labels[i] == "b" for i in subsets[0]) == 2 and sum(labels[i] == "b" for i in subsets[1]) == 10
    assert nested_subsets(labels, [0.1, 0.5, 1.0], seed=3) == subsets
    assert nested_subsets(labels, [0.1, 0.5, 1.0], seed=4)[0] != subsets[0]
    assert [len(s) for s in nested_subsets(["a"] * 30 + ["b"] * 2, [0.01], seed=0)] == [2], "at least one per class"


def test_parse_fractions():
    assert parse_fractions("1.0, 0.2,0.1,0.2") == [0.1, 0.2, 1.0]
    for bad in ("0,0.5", "0.5,1.5", "a,b", ""):
        with pytest.raises(UserError, match="--fractions"):
            parse_fractions(bad)


def synthetic_result(law: PowerLaw, sizes, repeats=2, n_eval=3000, seed=0) -> CurveResult:
    """Predictions whose error at each size follows ``law`` (plus sampling noise)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n_eval)
    points, preds = [], []
    for r in range(repeats):
        for n in sizes:
            wrong = rng.random(n_eval) < float(law.error(n))
            pred = np.where(wrong, 1 - y, y)
            points.append(
                {"fraction": n / max(sizes), "repeat": r, "n": n, "macro_f1": macro_f1(y, pred, 2), "accuracy": float((pred == y).mean())}
            )
            preds.append(pred)
    return CurveResult(dir=None, summary={"level": 0.9}, points=points, labels=["a", "b"], y_true=y, predictions=preds)


def test_doubling_sentence_and_extrapolation_check_on_a_known_curve():
    law = PowerLaw(a=2.0, b=0.5, c=0.04)
    result = synthetic_result(law, [200, 400, 800, 1200, 1600, 2400, 4000])
    fits = fit_curve(result, draws=100, seed=0)
    expected_gain = float(law.score(8000) - law.score(4000)) * 100
    gain = fits["accuracy"]["doubling"]["gain_points"]
    lo, hi = fits["accuracy"]["doubling"]["gain_interval_points"]
    assert gain == pytest.approx(expected_gain, abs=1.0)
    assert lo <= gain <= hi
    sentence = doubling_sentence(fits, metric="accuracy")
    assert sentence.startswith("doubling the training data (4,000 -> 8,000) should add about ")
    assert "points of accuracy (90% interval " in sentence
    check = validate_extrapolation(result, draws=100)
    assert check["available"] and check["fit_fractions"] == [0.05, 0.1, 0.2, 0.3, 0.4]
    assert check["inside"] is True and check["accuracy"]["inside"] is True
    assert check["n_checked"] == 4000


def test_validate_extrapolation_says_when_it_cannot_run():
    result = synthetic_result(PowerLaw(1.0, 0.5, 0.05), [100, 1000], repeats=1)
    assert validate_extrapolation(result)["available"] is False
    assert "too few distinct training sizes" in doubling_sentence(fit_curve(result, draws=10))


def noisy_csv(path, n, flip=0.12, seed=0):
    rng = random.Random(seed)
    rows = [(t, ("ham" if lab == "spam" else "spam") if rng.random() < flip else lab) for t, lab in make_texts(n, seed)]
    return write_csv(path, rows)


def test_baseline_curve_writes_json_and_png(tmp_path):
    data = noisy_csv(tmp_path / "noisy.csv", 400)
    out = tmp_path / "curve"
    result = learning_curve({"data": {"train": str(data)}}, out=out, draws=60)
    assert (out / "curve.json").is_file() and (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "curve.json").read_text())
    assert saved["estimator"] == "baseline" and saved["repeats"] == 2 and saved["n_eval"] == 80
    assert len(saved["points"]) == 10 and {p["fraction"] for p in saved["points"]} == {0.1, 0.2, 0.4, 0.7, 1.0}
    assert [p["n"] for p in saved["points"][:5]] == sorted(p["n"] for p in saved["points"][:5])
    assert saved["points"][-1]["n"] == 320
    assert saved["sentence"] == result.sentence and result.sentence.startswith("doubling the training data (320 -> 640)")
    fit = saved["fit"]["macro_f1"]
    assert {"a", "b", "c", "doubling", "grid"} <= set(fit)
    assert saved["validation"]["available"] is True and isinstance(saved["validation"]["inside"], bool)
    assert saved["seconds"] < 60
    with pytest.raises(UserError, match="already holds a learning curve"):
        learning_curve({"data": {"train": str(data)}}, out=out)


def test_curve_cli(tmp_path, capsys):
    data = noisy_csv(tmp_path / "noisy.csv", 300, seed=2)
    out = tmp_path / "c"
    assert main(["curve", str(data), "--fractions", "0.25,0.5,0.75,1.0", "--repeats", "1", "--out", str(out), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "doubling the training data" in printed and "curve.json" in printed
    saved = json.loads((out / "curve.json").read_text())
    assert saved["seed"] == 3 and saved["repeats"] == 1 and len(saved["points"]) == 4

    assert main(["curve", str(data), "--fractions", "0.5,2", "--out", str(tmp_path / "bad")]) == 2
    assert "--fractions" in capsys.readouterr().err
    assert main(["curve", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "bad")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_finetune_estimator_on_the_tiny_model(tmp_path, tiny_args):
    data = noisy_csv(tmp_path / "noisy.csv", 100, seed=1)
    out = tmp_path / "ft"
    result = learning_curve({"data": {"train": str(data)}}, estimator="finetune", fractions=[0.5, 1.0], out=out, draws=20, **tiny_args)
    saved = json.loads((out / "curve.json").read_text())
    assert saved["estimator"] == "finetune" and saved["repeats"] == 1 and saved["model"] == tiny_args["model"]
    assert 35 <= saved["points"][0]["n"] <= 45 and saved["points"][1]["n"] == 80
    assert all(
        0.0 <= p["macro_f1"] <= 1.0 and (out / "runs" / f"f{p['fraction']:g}-r0" / "metrics.json").is_file() for p in saved["points"]
    )
    assert saved["fit"]["macro_f1"] is None and "at least 3 fractions" in result.sentence
    assert (out / "curve.png").is_file()


def test_cli_estimator_choices_match_the_library():
    from tunesmith.cli import build_parser
    from tunesmith.evaluate.curve import ESTIMATORS

    verbs = next(a for a in build_parser()._actions if a.dest == "verb")
    action = next(a for a in verbs.choices["curve"]._actions if a.dest == "estimator")
    assert tuple(action.choices) == ESTIMATORS
