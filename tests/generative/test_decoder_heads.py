"""classify and regress with a decoder backbone (tiny Llama without a pad token): a sequence-classification head on the last token."""

from __future__ import annotations

import json

import pytest

from conftest import make_texts, write_csv


@pytest.mark.parametrize("method", ["full", "lora"])
def test_classify_with_a_llama_backbone(tiny_llama_bare, tmp_path, method):
    import tunesmith

    data = write_csv(tmp_path / "spam.csv", make_texts(60))
    args = {"model": str(tiny_llama_bare), "max_steps": 3, "batch_size": 8, "max_length": 32, "precision": "fp32", "threads": 1}
    run = tunesmith.train(
        train=str(data), out=str(tmp_path / "run"), method=method, doctor=False, report=False, baseline=False, lr=1e-3, **args
    )
    saved = json.loads((run.dir / "model" / "config.json").read_text())
    assert saved["architectures"] == ["LlamaForSequenceClassification"]
    assert saved["pad_token_id"] is not None  # set from the tokenizer, which had no pad token
    rows = run.predict(["win free cash now", "see you at lunch", "a much longer message to pad the batch with tokens"])
    assert [r["label"] in ("ham", "spam") for r in rows] == [True] * 3
    # batched predictions equal one-at-a-time ones: the head reads each text's last real token, not a pad
    alone = [run.predict([t])[0]["probabilities"]["spam"] for t in ("win free cash now", "see you at lunch")]
    assert rows[0]["probabilities"]["spam"] == pytest.approx(alone[0], abs=1e-5)
    assert rows[1]["probabilities"]["spam"] == pytest.approx(alone[1], abs=1e-5)


def test_regress_with_a_llama_backbone(tiny_llama_bare, tmp_path):
    import tunesmith

    rows = [(text, "1.5" if label == "spam" else "-0.5") for text, label in make_texts(40)]
    data = write_csv(tmp_path / "scores.csv", rows, header=("text", "score"))
    args = {"model": str(tiny_llama_bare), "max_steps": 2, "batch_size": 8, "max_length": 32, "precision": "fp32", "threads": 1}
    run = tunesmith.train(
        {"task": "regress"}, train=str(data), label_col="score", out=str(tmp_path / "run"), report=False, baseline=False, **args
    )
    assert "rmse" in run.metrics["eval"] and isinstance(run.predict(["win cash"])[0]["value"], float)
