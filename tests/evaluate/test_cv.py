"""Cross-validation on the tiny BERT: one run per fold, every row out-of-fold once, the interval, resume, groups."""

from __future__ import annotations

import csv
import io
import json
import math
import random

import numpy as np
import pytest
from rich.console import Console

import tunesmith
from conftest import HAM_WORDS, SPAM_WORDS, make_texts, write_csv
from tunesmith.cli import main
from tunesmith.errors import UserError
from tunesmith.evaluate.cv import assign_folds, cross_validate, t_interval


@pytest.fixture
def fast(tiny_args) -> dict:
    return {**tiny_args, "epochs": 1, "max_steps": 2}


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def grouped_csv(path, n=60, speakers=12, seed=0):
    """Texts with a speaker column; each speaker says n/speakers texts."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "speaker"])
        for i, (text, label) in enumerate(make_texts(n, seed)):
            w.writerow([text, label, f"s{i % speakers}"])
    return path


def test_t_interval_by_hand():
    s = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    t_975_4 = 2.7764451051977987  # Student t quantile 0.975 at 4 degrees of freedom
    half = t_975_4 * math.sqrt(2.5) / math.sqrt(5)
    assert s["n"] == 5 and s["mean"] == pytest.approx(3.0) and s["std"] == pytest.approx(math.sqrt(2.5))
    assert s["ci_low"] == pytest.approx(3.0 - half) and s["ci_high"] == pytest.approx(3.0 + half)
    assert t_interval([0.9, 0.9, 0.9])["ci_low"] == pytest.approx(0.9) == t_interval([0.9, 0.9, 0.9])["ci_high"]
    wider = t_interval([1.0, 2.0, 3.0, 4.0, 5.0], confidence=0.99)
    assert wider["ci_low"] < s["ci_low"] and wider["ci_high"] > s["ci_high"]
    single = t_interval([0.7])
    assert single["mean"] == 0.7 and single["std"] is None and single["ci_low"] is None


def test_assign_folds_stratifies_and_keeps_groups_whole():
    labels = ["a"] * 40 + ["b"] * 20
    fold_of = assign_folds(60, 4, seed=0, strata=labels)
    assert sorted(set(fold_of.tolist())) == [0, 1, 2, 3]
    for k in range(4):
        held = [lab for lab, f in zip(labels, fold_of) if f == k]
        assert held.count("a") == 10 and held.count("b") == 5
    groups = [f"g{i % 15}" for i in range(60)]
    fold_of = assign_folds(60, 3, seed=1, strata=labels, groups=groups)
    for g in set(groups):
        assert len({int(f) for f, gg in zip(fold_of, groups) if gg == g}) == 1, f"group {g} split across folds"
    plain = assign_folds(10, 5, seed=0)  # regression: plain shuffled KFold
    assert np.bincount(plain).tolist() == [2, 2, 2, 2, 2]


def test_cv_runs_every_fold_and_resumes(tmp_path, fast):
    data = write_csv(tmp_path / "d.csv", make_texts(60))
    out = tmp_path / "cv"
    result = cross_validate({"data": {"train": str(data)}}, folds=3, out=str(out), console=Console(file=io.StringIO()), **fast)

    # every fold is a normal, reloadable run
    for k in (1, 2, 3):
        run = tunesmith.load(out / f"fold-{k}" / "run")
        assert (run.dir / "metrics.json").is_file() and (out / f"fold-{k}" / "eval.jsonl").is_file()
    assert [f["train_size"] + f["eval_size"] for f in result.folds] == [60, 60, 60]
    assert sum(f["eval_size"] for f in result.folds) == 60

    # out-of-fold predictions: every data row exactly once, predicted by the fold that held it out
    oof = read_jsonl(out / "oof_predictions.jsonl")
    assert sorted(r["row"] for r in oof) == list(range(2, 62)), "CSV rows start at line 2, after the header"
    for k in (1, 2, 3):
        held_out = {r["text"] for r in read_jsonl(out / f"fold-{k}" / "eval.jsonl")}
        assert {r["text"] for r in oof if r["fold"] == k} == held_out
        trained_on = {r["text"] for r in read_jsonl(out / f"fold-{k}" / "train.jsonl")}
        assert not held_out & trained_on
    assert {"row", "fold", "text", "gold", "label", "probabilities"} <= set(oof[0])
    assert set(oof[0]["probabilities"]) == {"ham", "spam"}

    saved = json.loads((out / "cv.json").read_text())
    accs = [f["model"]["accuracy"] for f in saved["per_fold"]]
    assert saved["summary"]["model"]["accuracy"] == pytest.approx(t_interval(accs))
    assert all(f["baseline"]["accuracy"] > 0.8 for f in saved["per_fold"]), "TF-IDF + SVM separates the synthetic classes"
    assert "baseline" in saved["summary"] and saved["pooled_oof"]["n"] == 60
    assert saved["rows"] == 60 and saved["folds"] == 3

    # resume: finished folds are reused, an unfinished one is completed
    stamps = {k: (out / f"fold-{k}" / "run" / "metrics.json").stat().st_mtime_ns for k in (1, 3)}
    (out / "fold-2" / "run" / "metrics.json").unlink()
    log = io.StringIO()
    again = cross_validate({"data": {"train": str(data)}}, folds=3, out=str(out), console=Console(file=log, width=200), **fast)
    assert [f["reused"] for f in again.folds] == [True, False, True]
    assert log.getvalue().count("reusing the finished run") == 2
    assert {k: (out / f"fold-{k}" / "run" / "metrics.json").stat().st_mtime_ns for k in (1, 3)} == stamps
    assert again.folds[0]["model"] == result.folds[0]["model"]
    assert len(read_jsonl(out / "oof_predictions.jsonl")) == 60

    # the same directory with other settings is refused, not mixed
    with pytest.raises(UserError, match=r"other settings \(folds: 3 then, 2 now"):
        cross_validate({"data": {"train": str(data)}}, folds=2, out=str(out), **fast)
    with pytest.raises(UserError, match=r"training.max_steps: 2 then, 3 now"):
        cross_validate({"data": {"train": str(data)}}, folds=3, out=str(out), **{**fast, "max_steps": 3})


def test_cli_cv_keeps_groups_apart(tmp_path, tiny_model, capsys):
    data = grouped_csv(tmp_path / "grouped.csv")
    out = tmp_path / "cv"
    flags = [
        "--model",
        str(tiny_model),
        "--max-steps",
        "2",
        "--batch-size",
        "8",
        "--max-length",
        "32",
        "--precision",
        "fp32",
        "--threads",
        "1",
    ]
    rc = main(["cv", str(data), "--folds", "3", "--group-col", "speaker", "--out", str(out), "--lr", "1e-3", *flags])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "mean" in printed and "95% lo" in printed and "SVM" in printed
    speaker_of = {row["text"]: row["speaker"] for row in csv.DictReader(data.open(encoding="utf-8"))}
    oof = read_jsonl(out / "oof_predictions.jsonl")
    assert len(oof) == 60
    folds_of_speaker: dict[str, set[int]] = {}
    for r in oof:
        folds_of_speaker.setdefault(speaker_of[r["text"]], set()).add(r["fold"])
    assert all(len(f) == 1 for f in folds_of_speaker.values()), folds_of_speaker
    saved = json.loads((out / "cv.json").read_text())
    assert saved["group_col"] == "speaker" and saved["groups"] == 12 and saved["splitter"].startswith("StratifiedGroupKFold")


def test_cv_errors_before_training(tmp_path, fast):
    data = grouped_csv(tmp_path / "grouped.csv")
    with pytest.raises(UserError, match=r"no group column named 'speakr'; did you mean --group-col 'speaker'\?"):
        cross_validate({"data": {"train": str(data)}}, folds=3, group_col="speakr", out=str(tmp_path / "a"), **fast)
    with pytest.raises(UserError, match="at least 2"):
        cross_validate({"data": {"train": str(data)}}, folds=1, out=str(tmp_path / "b"), **fast)
    with pytest.raises(UserError, match="distinct groups"):
        cross_validate({"data": {"train": str(data)}}, folds=20, group_col="speaker", out=str(tmp_path / "c"), **fast)
    lonely = write_csv(tmp_path / "lonely.csv", [*make_texts(20), ("a text of its own", "rare")])
    with pytest.raises(UserError, match="'rare'.*single example"):
        cross_validate({"data": {"train": str(lonely)}}, folds=3, out=str(tmp_path / "d"), **fast)
    with pytest.raises(UserError, match="cv supports"):
        cross_validate({"task": "ner"}, folds=3, out=str(tmp_path / "e"), **fast)
    assert not any((tmp_path / name).exists() for name in "abcde"), "a refused cv writes nothing"


def test_cv_regression_uses_kfold(tmp_path, fast):
    rng = random.Random(0)
    path = tmp_path / "scores.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "score"])
        for i in range(30):
            k = rng.randint(0, 6)
            w.writerow([" ".join(rng.sample(SPAM_WORDS, k) + rng.sample(HAM_WORDS, 6 - k)) + f" {i}", f"{10 + 5 * k:.1f}"])
    result = cross_validate(
        {"task": "regress", "data": {"train": str(path)}}, folds=3, out=str(tmp_path / "cv"), console=Console(file=io.StringIO()), **fast
    )
    assert result.info["splitter"].startswith("KFold")
    assert set(result.summary["model"]) == {"rmse", "mae", "r2", "pearson", "spearman"}
    oof = read_jsonl(tmp_path / "cv" / "oof_predictions.jsonl")
    assert sorted(r["row"] for r in oof) == list(range(2, 32)) and "value" in oof[0]
    assert result.pooled["n"] == 30
