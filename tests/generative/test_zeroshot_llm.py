"""Zero-shot labels scored by an instruct LLM's log-likelihood (tiny random Llama: checks the arithmetic, not quality)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from tunesmith.errors import UserError
from tunesmith.evaluate.llm_scoring import answer_log_likelihoods, build_prefixes, llm_label_scores
from tunesmith.evaluate.zeroshot import zero_shot


def _load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_scores_are_the_answer_tokens_log_probability(tiny_llama):
    model, tokenizer = _load(tiny_llama)
    prefixes = build_prefixes(tokenizer, ["the cat eats fish", "good morning teacher , thank you very much"], ["cat", "dog"])
    assert prefixes[0].startswith("<|im_start|>user\n") and prefixes[0].endswith("<|im_start|>assistant\n")
    batched = answer_log_likelihoods(model, tokenizer, prefixes, ["cat", "red big dog"], batch_size=4)
    one_by_one = answer_log_likelihoods(model, tokenizer, prefixes, ["cat", "red big dog"], batch_size=1)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-4)  # padding and batching change nothing
    # by hand, for the second prefix and the three-token answer
    prefix_ids = tokenizer(prefixes[1], add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(" red big dog", add_special_tokens=False)["input_ids"]
    assert len(answer_ids) == 3
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prefix_ids + answer_ids])).logits[0]
    log_probs = torch.log_softmax(logits, dim=-1)
    expected = sum(log_probs[len(prefix_ids) - 1 + t, tok].item() for t, tok in enumerate(answer_ids))
    assert batched[1, 1] == pytest.approx(expected, abs=1e-4)
    assert (batched < 0).all()


def test_calibration_subtracts_the_content_free_scores(tiny_llama):
    raw, _ = llm_label_scores(["the cat", "the dog"], ["cat", "dog"], model=str(tiny_llama), calibrate=False, precision="fp32")
    calibrated, info = llm_label_scores(["the cat", "the dog"], ["cat", "dog"], model=str(tiny_llama), precision="fp32")
    bias = np.array([info["content_free_bias"]["cat"], info["content_free_bias"]["dog"]])
    np.testing.assert_allclose(calibrated, raw - bias, atol=1e-6)


def test_zero_shot_llm_end_to_end(tmp_path, tiny_llama):
    data = tmp_path / "pets.csv"
    with data.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text", "label"), ("the cat eats fish", "cat"), ("the dog", "dog"), ("big cat", "cat")])
    result = zero_shot(str(data), "cat,dog", method="llm", model=str(tiny_llama))
    assert result.metrics["method"] == "llm" and result.metrics["llm"]["calibrated"]
    assert len(result.predictions) == 3
    for p in result.predictions:
        assert p["label"] in ("cat", "dog") and sum(p["probabilities"].values()) == pytest.approx(1.0)
        assert max(p["log_likelihoods"], key=p["log_likelihoods"].get) == p["label"]


def test_an_encoder_is_refused_for_llm_scoring(tiny_model):
    with pytest.raises(UserError, match="zeroshot"):
        llm_label_scores(["a text"], ["a", "b"], model=str(tiny_model))
