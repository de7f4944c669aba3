"""`tunesmith serve --backend auto`: the startup measurement picks the fastest backend that reproduces the run."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

import tunesmith
from conftest import make_texts, write_csv
from tunesmith.cli import main
from tunesmith.deploy import backends
from tunesmith.deploy.serve import create_app
from tunesmith.training.hardware import cpu_supports_bf16


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory, tiny_model):
    """A tiny classify run with a fused fp32 and an int8 ONNX export, both past their parity checks."""
    pytest.importorskip("onnxruntime")
    tmp = tmp_path_factory.mktemp("auto-backend")
    data = write_csv(tmp / "spam.csv", make_texts(120))
    args = {"model": str(tiny_model), "epochs": 2, "batch_size": 8, "lr": 1e-3, "max_length": 32, "precision": "fp32", "threads": 1}
    run = tunesmith.train({"data": {"train": str(data)}}, **args, doctor=False, baseline=False, out=str(tmp / "run"))
    assert main(["export", str(run.dir)]) == 0
    assert main(["export", str(run.dir), "--quantize", "int8"]) == 0
    return run


def test_auto_measures_every_candidate_and_serves_the_fastest_that_passes(exported_run):
    with TestClient(create_app(exported_run.dir, max_batch=16)) as client:
        info = client.get("/info").json()
        choice = info["backend_choice"]
        names = [c["name"] for c in choice["candidates"]]
        expected = ["torch-fp32", *(["torch-bf16"] if cpu_supports_bf16() else []), "onnx", "onnx-int8"]
        assert names == expected, choice
        assert choice["measured_on"]["texts"] == 24 and choice["measured_on"]["batch_size"] == 16, "the run's 24 eval texts"
        assert choice["measured_on"]["parity_batch_sizes"] == [16, 1]
        by_name = {c["name"]: c for c in choice["candidates"]}
        assert by_name["torch-fp32"]["max_abs_logit_diff"] == 0.0 and by_name["torch-fp32"]["passed"]
        assert by_name["onnx"]["max_abs_logit_diff"] < 1e-4 and by_name["onnx"]["label_agreement"] == 1.0
        fastest = max((c for c in choice["candidates"] if c["passed"]), key=lambda c: c["texts_per_second"])
        assert info["backend"] == choice["chosen"] == fastest["name"]
        assert info["labels"] == ["ham", "spam"]
        texts = ["free prize win cash now", "see you at dinner later mum", "lunch"]
        got = client.post("/predict", json={"texts": texts}).json()["predictions"]
    assert [p["label"] for p in got] == [p["label"] for p in exported_run.predict(texts)]
    assert got[0]["probabilities"].keys() == {"ham", "spam"}


def test_candidates_outside_the_bounds_are_rejected(exported_run, monkeypatch):
    # a bound nothing but the reference itself meets: every other candidate must be refused, whatever its speed
    monkeypatch.setitem(backends.AUTO_BOUNDS, "max_abs_logit_diff", 0.0)
    chosen = backends.load_backend(tunesmith.load(exported_run.dir), "auto", max_batch=8)
    assert chosen.name == "torch-fp32"
    rejected = [c for c in chosen.choice["candidates"] if not c["passed"]]
    assert {c["name"] for c in rejected} >= {"onnx", "onnx-int8"}
    assert "rejected" in backends.summary(chosen.choice) and "torch-fp32" in backends.summary(chosen.choice)
    # onnx predictions agree with the run, in input order, across length-sorted batches
    predict, labels, _ = backends.onnx_predict(tunesmith.load(exported_run.dir), "onnx", max_batch=2)
    texts = [t for t, _ in make_texts(7, seed=3)]
    assert [r["label"] for r in predict(texts)] == [r["label"] for r in exported_run.predict(texts)] and labels == ["ham", "spam"]


def test_auto_without_exports_or_eval_texts(tmp_path, tiny_args, capsys):
    data = write_csv(tmp_path / "spam.csv", make_texts(60))
    run = tunesmith.train({"data": {"train": str(data)}}, **{**tiny_args, "epochs": 1, "baseline": False}, out=str(tmp_path / "run"))
    chosen = backends.load_backend(tunesmith.load(run.dir), "auto", max_batch=8)
    assert set(chosen.choice["unavailable"]) >= {"onnx", "onnx-int8"}
    assert "tunesmith export" in chosen.choice["unavailable"]["onnx"] and "--quantize int8" in chosen.choice["unavailable"]["onnx-int8"]
    (run.dir / "eval_predictions.jsonl").unlink()
    chosen = backends.load_backend(tunesmith.load(run.dir), "auto", max_batch=8)
    assert chosen.name.startswith("torch-") and "without a measurement" in chosen.choice["how"] and chosen.choice["candidates"] == []
    assert chosen.predict(["free cash"])[0]["label"] in ("ham", "spam")
    with pytest.raises(tunesmith.errors.UserError, match="--quantize int8"):
        create_app(run.dir, backend="onnx-int8")
    with pytest.raises(tunesmith.errors.UserError, match="unknown backend"):
        backends.load_backend(tunesmith.load(run.dir), "tensorrt", max_batch=8)
    with pytest.raises(tunesmith.errors.UserError, match="`threads` must be >= 1"):
        create_app(run.dir, threads=0)
    import torch

    with TestClient(create_app(run.dir, backend="torch-fp32", threads=1)) as client:
        assert client.get("/info").json()["limits"]["threads"] == 1 and torch.get_num_threads() == 1


def test_length_bands_keep_padding_small():
    lengths = [10, 50, 12, 48, 100, 11]
    assert backends.length_bands(lengths, max_batch=32) == [[4], [1, 3], [2, 5, 0]]
    assert backends.length_bands(lengths, max_batch=2) == [[4], [1, 3], [2, 5], [0]]
    assert backends.length_bands([], max_batch=4) == []


def test_banded_torch_predictions_come_back_in_input_order(exported_run):
    chosen = backends.load_backend(tunesmith.load(exported_run.dir), "torch-fp32", max_batch=4)
    texts = [t for t, _ in make_texts(11, seed=5)] + ["free " * 20, "see"]
    expected = exported_run.predictor
    expected.precision = "fp32"
    got, want = chosen.predict(texts), expected.predict(texts)
    assert [r["label"] for r in got] == [r["label"] for r in want]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=1e-5), "padding differs, the numbers do not"
