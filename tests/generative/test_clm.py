"""Continued pre-training of the tiny Llama on raw text: perplexity before/after, long texts split not cut, eval and generate on the run."""

from __future__ import annotations

import itertools
import json

import pytest

from generative.conftest import make_tokenizer
from tunesmith.cli import main
from tunesmith.tasks.clm import tokenize_texts

CORPUS = [
    f"{a} {b} eats {c} ."
    for a, b, c in itertools.product(["the", "a"], ["cat", "dog", "big cat", "small dog"], ["fish", "one fish", "two fish"])
]


def test_texts_end_with_eos_and_long_ones_are_split_not_cut():
    tokenizer = make_tokenizer()
    long_text = " ".join(["cat"] * 25)
    features, split = tokenize_texts(tokenizer, ["the cat eats fish", long_text], max_length=10)
    assert split == 1
    assert features[0]["input_ids"][-1] == tokenizer.eos_token_id and features[0]["labels"] == features[0]["input_ids"]
    assert [len(f["input_ids"]) for f in features[1:]] == [10, 10, 6]  # 25 words + EOS, nothing dropped


def test_clm_run_end_to_end(tiny_llama, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    flags = ["--task", "clm", "--train", str(corpus), "--model", str(tiny_llama), "--max-steps", "8", "--batch-size", "4"]
    flags += ["--lr", "3e-3", "--max-length", "32", "--precision", "fp32", "--threads", "1", "--no-report", "--method", "full"]
    assert main(["train", *flags, "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["eval"]
    assert metrics["perplexity_after"] < metrics["perplexity_before"]
    assert "perplexity" in capsys.readouterr().out
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["packing"]["sequences"] < data["packing"]["pieces"]
    assert main(["eval", str(tmp_path / "run"), "--output", str(tmp_path / "m.json")]) == 0
    # the run's own eval split again (inference may use bf16 autocast where training used fp32)
    assert json.loads((tmp_path / "m.json").read_text())["perplexity"] == pytest.approx(metrics["perplexity_after"], rel=0.02)
    # a clm run continues text as written (no chat template) by default
    assert main(["generate", str(tmp_path / "run"), "--prompt", "the cat", "--temperature", "0", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.strip()
