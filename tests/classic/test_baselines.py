"""Classical baselines on a separable synthetic set: all beat the majority class, saved models reload without pickle."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from conftest import make_texts, write_csv
from tunesmith.classic import BASELINES, load_baseline, run_baselines, tfidf_svm_predict
from tunesmith.cli import main
from tunesmith.config import DataConfig
from tunesmith.data import prepare_classification
from tunesmith.errors import UserError

LINEAR = [name for name, spec in BASELINES.items() if spec.linear]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """All baselines fitted once on 150 separable spam/ham texts."""
    root = tmp_path_factory.mktemp("baselines")
    data = write_csv(root / "spam.csv", make_texts(150))
    result = run_baselines(DataConfig(train=str(data)), seed=42, out=root / "out")
    return data, root / "out", result


def test_every_baseline_beats_the_majority_class(fitted):
    _, out, result = fitted
    assert list(result["models"]) == list(BASELINES)
    majority = result["majority_baseline"]
    for name, r in result["models"].items():
        assert r["accuracy"] > majority["accuracy"] and r["macro_f1"] > majority["macro_f1"], name
        assert r["train_seconds"] >= r["model_seconds"] >= 0
    assert json.loads((out / "baselines.json").read_text())["models"].keys() == result["models"].keys()


def test_same_split_and_same_svm_as_a_training_run(fitted):
    data, _, result = fitted
    prepared = prepare_classification(DataConfig(train=str(data)), seed=42)
    assert result["data"]["eval_size"] == len(prepared.eval) == 30
    predicted = tfidf_svm_predict(prepared.train.texts, prepared.train.labels, prepared.eval.texts, seed=42)
    accuracy = np.mean([p == g for p, g in zip(predicted, prepared.eval.labels)])
    assert result["models"]["linear-svc"]["accuracy"] == pytest.approx(accuracy)


@pytest.mark.parametrize("name", LINEAR)
def test_linear_models_roundtrip_without_pickle(fitted, name, monkeypatch):
    from sklearn.pipeline import make_pipeline

    from tunesmith.classic.tfidf import tfidf_features

    data, out, result = fitted
    folder = out / result["models"][name]["saved"]
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "weights.npz"]

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle must never be used to load a baseline")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    model = load_baseline(folder)
    monkeypatch.undo()

    # the same pipeline fitted again in memory predicts exactly what the reloaded model predicts
    prepared = prepare_classification(DataConfig(train=str(data)), seed=42)
    texts = prepared.eval.texts + ["free prize call now", "see you at dinner later", "unseen words entirely zzz"]
    reference = make_pipeline(tfidf_features(), BASELINES[name].build(42, None)).fit(prepared.train.texts, prepared.train.labels)
    assert model.predict(texts) == [str(p) for p in reference.predict(texts)]
    if BASELINES[name].probabilities:
        np.testing.assert_allclose(model.predict_proba(texts), reference.predict_proba(texts), rtol=1e-9, atol=1e-12)
    else:
        np.testing.assert_allclose(model.decision_function(texts), reference.decision_function(texts), rtol=1e-9, atol=1e-12)
        with pytest.raises(UserError, match="no probabilities"):
            model.predict_proba(texts)


def test_tree_models_are_saved_with_skops_or_not_at_all(fitted):
    _, out, result = fitted
    files = {p.suffix for p in (out / "models").rglob("*") if p.is_file()}
    assert files <= {".json", ".npz", ".skops"}, f"only safe formats are written, got {files}"
    for name in ("decision-tree", "random-forest", "soft-vote"):
        r = result["models"][name]
        if r["saved"] is None:
            assert "skops" in r["not_saved"]
        else:
            model = load_baseline(out / r["saved"])
            assert model.predict(["free prize call now"]) in (["spam"], ["ham"])


def test_load_baseline_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(UserError, match="holds no saved baseline"):
        load_baseline(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(UserError, match="not a tunesmith linear baseline"):
        load_baseline(tmp_path)


def test_unknown_model_name_lists_the_choices(tmp_path):
    data = write_csv(tmp_path / "d.csv", make_texts(40))
    with pytest.raises(UserError, match="choose from linear-svc, logreg"):
        run_baselines({"train": str(data)}, models=["svm"], out=tmp_path / "out")


def test_cli_baseline(tmp_path, capsys):
    data = write_csv(tmp_path / "d.csv", make_texts(80))
    out = tmp_path / "out"
    assert main(["baseline", str(data), "--models", "linear-svc,complement-nb", "--seed", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "linear-svc" in printed and "complement-nb" in printed and "majority (ham)" in printed
    saved = json.loads((out / "baselines.json").read_text())
    assert list(saved["models"]) == ["linear-svc", "complement-nb"] and saved["seed"] == 3
    assert (out / "models" / "linear-svc" / "weights.npz").is_file()
    assert main(["baseline", str(data), "--eval-fraction", "2", "--out", str(tmp_path / "bad")]) == 2
    assert "eval_fraction" in capsys.readouterr().err
