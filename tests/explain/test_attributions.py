"""`tunesmith explain` on a tiny classify run: integrated gradients add up, words carry their offsets, attention is a share."""

from __future__ import annotations

import json
import shutil

import pytest

import tunesmith
from conftest import make_texts, write_csv
from tunesmith.cli import main
from tunesmith.errors import UserError
from tunesmith.explain import explain

TEXTS = ["WIN a free prize, txt now!!", "claimable offerings for mum", "see you at dinner later"]


@pytest.fixture(scope="module")
def run_dir(tiny_model, tmp_path_factory):
    """A trained tiny run whose weights are then jittered: the tiny model barely moves its logits, and
    completeness is only a meaningful check when logit(text) - logit(baseline) is far from zero."""
    import torch
    from transformers import AutoModelForSequenceClassification

    tmp = tmp_path_factory.mktemp("explain")
    data = write_csv(tmp / "spam.csv", make_texts(60))
    args = {"model": str(tiny_model), "epochs": 1, "batch_size": 8, "lr": 1e-3, "max_length": 32, "precision": "fp32", "threads": 1}
    run = tunesmith.train({"data": {"train": str(data)}}, **args, doctor=False, baseline=False, out=str(tmp / "run"))
    model = AutoModelForSequenceClassification.from_pretrained(run.dir / "model")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.2)
    model.save_pretrained(run.dir / "model")
    return run.dir


def test_integrated_gradients_are_complete(run_dir):
    explanations = explain(run_dir, TEXTS, steps=64)
    assert len(explanations) == len(TEXTS)
    for e in explanations:
        delta = e.logit - e.baseline_logit
        assert abs(delta) > 0.02, "the check needs a logit that moves"
        total = sum(w.attribution for w in e.words)
        assert total - delta == pytest.approx(e.completeness_gap, abs=1e-5)
        assert abs(e.completeness_gap) < 0.01 * abs(delta), (e.text, e.completeness_gap, delta)
    coarse = explain(run_dir, TEXTS[:1], steps=2)[0]
    assert abs(coarse.completeness_gap) >= abs(explanations[0].completeness_gap), "more steps, smaller gap"


def test_words_carry_offsets_and_attention_is_a_share(run_dir):
    (e,) = explain(run_dir, TEXTS[1:2], steps=8)
    text = TEXTS[1]
    assert [w.word for w in e.words] == text.split(), "sub-tokens (claim ##able ...) merge back into words"
    for w in e.words:
        assert text[w.start : w.end] == w.word
        assert w.attention >= 0
    assert [w.start for w in e.words] == sorted(w.start for w in e.words)
    assert sum(w.attention for w in e.words) <= 1 + 1e-6, "[CLS] and [SEP] keep the rest"
    (p,) = explain(run_dir, TEXTS[:1], steps=8)
    assert [w.word for w in p.words] == ["WIN", "a", "free", "prize", ",", "txt", "now", "!", "!"]


def test_target_defaults_to_prediction_and_can_be_chosen(run_dir):
    (e,) = explain(run_dir, TEXTS[:1], steps=4)
    assert e.target == e.label
    other = "spam" if e.label == "ham" else "ham"
    (f,) = explain(run_dir, TEXTS[:1], target=other, steps=4)
    assert f.target == other and f.label == e.label
    with pytest.raises(UserError, match="'ham', 'spam'"):
        explain(run_dir, TEXTS[:1], target="eggs")
    with pytest.raises(UserError, match="single string"):
        explain(run_dir, "one text")


def test_cli_explain_prints_writes_html_and_json(run_dir, tmp_path, capsys):
    page = tmp_path / "why.html"
    assert main(["explain", str(run_dir), "--text", "free <script>alert(1)</script> prize", "--text", TEXTS[2], "--html", str(page)]) == 0
    printed = capsys.readouterr().out
    assert "completeness gap" in printed and "top words" in printed
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "<style>" in html
    assert "<script>" not in html and "</script>" not in html, "user text is escaped"
    assert ">&lt;</span>" in html and ">script</span>" in html, "each word escaped in its own span"
    assert "http" not in html, "self-contained: no external assets"
    assert main(["explain", str(run_dir), "--text", TEXTS[0], "--json", "--steps", "4"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["text"] == TEXTS[0] and record["steps"] == 4 and record["words"][0]["word"] == "WIN"


def test_unsupported_task_exits_2(run_dir, tmp_path, capsys):
    other = tmp_path / "regress-run"
    shutil.copytree(run_dir, other, ignore=shutil.ignore_patterns("checkpoints"))
    config = other / "config.yaml"
    config.write_text(config.read_text(encoding="utf-8").replace("task: classify", "task: regress", 1), encoding="utf-8")
    assert main(["explain", str(other), "--text", "hello"]) == 2
    message = capsys.readouterr().err
    assert "classify" in message and "'regress'" in message
    assert main(["explain", str(run_dir)]) == 2, "no --text"


def test_multi_label_run_is_explained(tiny_model, tmp_path):
    rows = [(text, "spam|promo" if label == "spam" else label) for text, label in make_texts(40)]
    data = write_csv(tmp_path / "ml.csv", rows)
    args = {"model": str(tiny_model), "epochs": 1, "batch_size": 8, "max_length": 32, "precision": "fp32", "threads": 1}
    run = tunesmith.train(
        {"data": {"train": str(data), "multi_label": True}}, **args, doctor=False, baseline=False, out=str(tmp_path / "ml")
    )
    (e,) = explain(run.dir, ["free prize now"], target="promo", steps=8)
    assert e.target == "promo" and e.label in {"ham", "promo", "spam"}
    assert 0 < e.target_probability < 1 and [w.word for w in e.words] == ["free", "prize", "now"]


def test_attention_method_gives_word_shares_and_a_map(run_dir, tmp_path, capsys):
    (e,) = explain(run_dir, TEXTS[1:2], method="attention")
    assert e.method == "attention" and e.completeness_gap is None and all(w.attribution is None for w in e.words)
    (ig,) = explain(run_dir, TEXTS[1:2], steps=4)
    assert [w.attention for w in e.words] == pytest.approx([w.attention for w in ig.words]), "the same [CLS] attention"
    n = len(e.words)
    assert len(e.attention_map) == n and all(len(row) == n for row in e.attention_map)
    assert all(0 <= sum(row) <= 1 + 1e-4 for row in e.attention_map), "each row is a share of one token's attention"
    page = tmp_path / "map.html"
    assert main(["explain", str(run_dir), "--text", TEXTS[1], "--method", "attention", "--html", str(page)]) == 0
    assert "top words by attention" in capsys.readouterr().out
    html = page.read_text(encoding="utf-8")
    assert '<table class="map">' in html and html.count("<td style=") == n * n
    with pytest.raises(SystemExit):  # argparse names the choices
        main(["explain", str(run_dir), "--text", "x", "--method", "shap"])
    with pytest.raises(UserError, match="ig, attention"):
        explain(run_dir, ["x"], method="shap")


@pytest.fixture(scope="module")
def ner_run(tiny_model, tmp_path_factory):
    import random

    rng = random.Random(0)
    lines = []
    for _ in range(120):
        filler = rng.sample(["we", "met", "saw", "at", "the", "cafe", "today"], 2)
        person, place = rng.choice(["alice", "bob", "carol"]), rng.choice(["paris", "rome"])
        lines += [f"{t}\t{g}" for t, g in zip([*filler, person, "in", place], ["O", "O", "B-PER", "O", "B-LOC"])] + [""]
    tmp = tmp_path_factory.mktemp("explain-ner")
    (tmp / "train.conll").write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = {"model": str(tiny_model), "epochs": 3, "batch_size": 8, "lr": 1e-2, "max_length": 32, "precision": "fp32", "threads": 1}
    args |= {"early_stopping": None, "head_lr": 1e-2}
    run = tunesmith.train(
        {"task": "ner", "data": {"train": str(tmp / "train.conll")}}, **args, doctor=False, baseline=False, out=str(tmp / "run")
    )
    return run


def test_ner_is_explained_per_entity(ner_run, tmp_path, capsys):
    text = "we met bob in rome"
    predicted = ner_run.predict([text])[0]["entities"]
    assert predicted, "the tiny tagger finds entities to explain"
    explanations = explain(ner_run.dir, [text, "the the"], steps=32)
    *entities, empty = explanations
    assert [(e.entity["type"], e.entity["start"], e.entity["end"]) for e in entities] == [
        (p["type"], p["start"], p["end"]) for p in predicted
    ]
    for e in entities:
        assert e.text == text and e.label == e.entity["type"] and e.target.startswith(e.entity["type"])
        assert [w.word for w in e.words] == text.split()
        total = sum(w.attribution for w in e.words)
        assert total - (e.logit - e.baseline_logit) == pytest.approx(e.completeness_gap, abs=1e-4)
        assert abs(e.completeness_gap) < 0.01 * abs(e.logit - e.baseline_logit) + 1e-4
        assert sum(w.attention for w in e.words) <= 1 + 1e-5
    assert empty.label == "O" and empty.entity is None and empty.logit is None
    kinds = {e.entity["type"] for e in entities}
    only = sorted(kinds)[0]
    assert {e.entity["type"] for e in explain(ner_run.dir, [text], target=only, method="attention")} == {only}
    with pytest.raises(UserError, match="entity type"):
        explain(ner_run.dir, [text], target="spam")
    page = tmp_path / "ner.html"
    assert main(["explain", str(ner_run.dir), "--text", text, "--text", "the the", "--html", str(page), "--steps", "8"]) == 0
    printed = capsys.readouterr().out
    assert "entity " in printed and "no entity predicted" in printed
    assert page.read_text(encoding="utf-8").count('class="w ent"') >= len(entities)
