"""Zero-shot labelling by label-description similarity: the numerics, the input checks, the verb end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_texts, write_csv
from tunesmith.errors import UserError
from tunesmith.evaluate.zeroshot import (
    label_prompts,
    load_descriptions,
    parse_labels,
    similarity_probabilities,
    zero_shot,
)


def test_parse_labels_needs_two_distinct_labels():
    assert parse_labels(" ham, spam ,") == ["ham", "spam"]
    with pytest.raises(UserError, match="at least 2 labels"):
        parse_labels("spam")
    with pytest.raises(UserError, match="more than once"):
        parse_labels("spam,SPAM")


def test_prompts_use_descriptions_case_insensitively_and_the_template_otherwise():
    prompts = label_prompts(["ham", "Spam"], {"spam": "an advert"})
    assert prompts == ["This text is about ham.", "an advert"]
    assert label_prompts(["a", "b"], None, "{label}") == ["a", "b"]
    with pytest.raises(UserError, match="not among --labels"):
        label_prompts(["a", "b"], {"c": "x"})
    with pytest.raises(UserError, match="must contain"):
        label_prompts(["a", "b"], None, "no placeholder")


def test_descriptions_from_json_and_yaml(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps({"spam": "an advert"}))
    (tmp_path / "d.yaml").write_text("spam: an advert\nham: a note\n")
    assert load_descriptions(tmp_path / "d.json") == {"spam": "an advert"}
    assert load_descriptions(tmp_path / "d.yaml") == {"spam": "an advert", "ham": "a note"}
    (tmp_path / "bad.yaml").write_text("- a\n- b\n")
    with pytest.raises(UserError, match="mapping"):
        load_descriptions(tmp_path / "bad.yaml")
    with pytest.raises(UserError, match="not found"):
        load_descriptions(tmp_path / "missing.yaml")


def test_similarity_softmax_at_temperature():
    texts = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    labels = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    sims, probs = similarity_probabilities(texts, labels, temperature=0.05)
    assert sims == pytest.approx(np.array([[1.0, 0.0], [0.6, 0.8]]))
    assert probs.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert probs[1, 1] == pytest.approx(1 / (1 + np.exp(-0.2 / 0.05)), rel=1e-5)


def test_zero_shot_scores_gold_labels_and_rejects_unknown_ones(tmp_path, tiny_model):
    data = write_csv(tmp_path / "d.csv", [(t, lab.upper()) for t, lab in make_texts(40)])
    result = zero_shot(str(data), "ham,spam", descriptions={"spam": "free prize cash win"}, model=str(tiny_model))
    assert len(result.predictions) == 40
    assert result.metrics["n"] == 40 and 0.0 <= result.metrics["accuracy"] <= 1.0
    assert result.metrics["labels"] == ["ham", "spam"]  # gold "SPAM" matched to --labels "spam"
    first = result.predictions[0]
    assert first["label"] in ("ham", "spam") and sum(first["probabilities"].values()) == pytest.approx(1.0)
    assert first["gold"] in ("HAM", "SPAM")
    with pytest.raises(UserError, match="not among --labels: HAM, SPAM; --labels is news, sport"):
        zero_shot(str(data), "news,sport", model=str(tiny_model))


def test_zeroshot_cli_writes_metrics_and_predictions_and_exits_2_on_one_label(tmp_path, tiny_model):
    from tunesmith.cli import main

    data = write_csv(tmp_path / "d.csv", make_texts(20))
    desc = tmp_path / "labels.yaml"
    desc.write_text("spam: an unsolicited advertisement or scam message\nham: an ordinary personal text message\n")
    target = tmp_path / "zs" / "metrics.json"
    args = ["zeroshot", str(data), "--labels", "ham,spam", "--descriptions", str(desc), "--model", str(tiny_model), "--out", str(target)]
    assert main(args) == 0
    metrics = json.loads(target.read_text())
    assert metrics["n"] == 20 and "majority_baseline" in metrics
    assert metrics["label_prompts"]["spam"].startswith("an unsolicited")
    assert len((tmp_path / "zs" / "predictions.jsonl").read_text().splitlines()) == 20
    assert main(["zeroshot", str(data), "--labels", "spam", "--model", str(tiny_model)]) == 2
