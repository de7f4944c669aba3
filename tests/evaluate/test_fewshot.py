"""Few-shot: shot sampling, prototypes and SetFit pairs on synthetic data, then both methods end to end on the tiny model."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from conftest import make_texts, write_csv
from tunesmith.errors import UserError
from tunesmith.evaluate.fewshot import class_prototypes, contrastive_pairs, few_shot, nearest_prototype, sample_shots


def test_sample_shots_is_seeded_and_per_class():
    labels = ["a"] * 10 + ["b"] * 10 + ["c"] * 2
    chosen = sample_shots(labels, 3, seed=0)
    assert Counter(labels[i] for i in chosen) == {"a": 3, "b": 3, "c": 2}  # a short class gives all it has
    assert chosen == sample_shots(labels, 3, seed=0) and chosen != sample_shots(labels, 3, seed=1)
    with pytest.raises(UserError, match="--shots must be >= 1"):
        sample_shots(labels, 0)


def test_prototypes_classify_synthetic_embeddings():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    train = np.concatenate([c + 0.1 * rng.normal(size=(4, 8)) for c in centres])
    test = np.concatenate([c + 0.1 * rng.normal(size=(5, 8)) for c in centres])
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    protos = class_prototypes(unit(train), np.repeat(np.arange(3), 4), 3)
    assert np.linalg.norm(protos, axis=1) == pytest.approx([1.0, 1.0, 1.0])
    predicted, probs = nearest_prototype(unit(test), protos)
    assert predicted.tolist() == np.repeat(np.arange(3), 5).tolist()
    assert probs.sum(axis=1) == pytest.approx(np.ones(15)) and (probs.argmax(axis=1) == predicted).all()


def test_contrastive_pairs_are_capped_and_labelled():
    ids = [0] * 50 + [1] * 50
    pairs = contrastive_pairs(ids, max_pairs=20, seed=0)
    assert len(pairs) == 100 * 20  # linear in the examples, not 100 * 99
    assert all(target == float(ids[i] == ids[j]) and i != j for i, j, target in pairs)
    assert sum(t for _, _, t in pairs) == len(pairs) / 2
    few = contrastive_pairs([0, 0, 1], max_pairs=20)  # short sides give what they have
    assert sorted(few) == sorted([(0, 1, 1.0), (0, 2, 0.0), (1, 0, 1.0), (1, 2, 0.0), (2, 0, 0.0), (2, 1, 0.0)])


@pytest.mark.parametrize("method", ["prototypes", "setfit"])
def test_few_shot_end_to_end(tmp_path, tiny_model, method):
    data = write_csv(tmp_path / "d.csv", make_texts(80))
    result = few_shot(str(data), shots=4, method=method, model=str(tiny_model), max_length=32, out=tmp_path / "fs")
    assert result["shots_per_class"] == {"ham": 4, "spam": 4}
    metrics = json.loads((tmp_path / "fs" / "metrics.json").read_text())
    assert metrics["eval"]["n"] == 16 and metrics["eval"]["majority_baseline"]["predicts"] == "ham"
    assert len((tmp_path / "fs" / "predictions.jsonl").read_text().splitlines()) == 16
    if method == "setfit":
        assert metrics["contrastive"]["pairs"] == 8 * 7 and metrics["contrastive"]["steps"] == 4


def test_fewshot_cli(tmp_path, tiny_model):
    from tunesmith.cli import main

    data = write_csv(tmp_path / "d.csv", make_texts(60))
    assert main(["fewshot", str(data), "--shots", "2", "--model", str(tiny_model), "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["shots"] == 2
    assert main(["fewshot", str(data), "--shots", "0", "--model", str(tiny_model), "--out", str(tmp_path / "o")]) == 2
