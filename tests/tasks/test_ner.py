"""NER end to end on the tiny BERT: CRF and softmax heads, entity spans with offsets, constraints."""

from __future__ import annotations

import json
import random

import pytest
import torch

import tunesmith
from tunesmith.cli import main
from tunesmith.tasks.ner import entity_spans, first_subtoken_positions, split_words

PEOPLE = ["alice", "bob", "carol", "dave"]
PLACES = [["paris"], ["london"], ["new", "york"], ["rome"]]
FILLER = ["i", "met", "in", "we", "saw", "at", "the", "cafe", "today", "with"]


def sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    person = rng.choice(PEOPLE)
    place = rng.choice(PLACES)
    tokens, tags = [], []
    for w in rng.sample(FILLER, 2):
        tokens.append(w)
        tags.append("O")
    tokens.append(person)
    tags.append("B-PER")
    tokens.append("in")
    tags.append("O")
    tokens += place
    tags += ["B-LOC"] + ["I-LOC"] * (len(place) - 1)
    tokens.append(rng.choice(FILLER))
    tags.append("O")
    return tokens, tags


def write_conll(path, n=120, seed=0):
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        tokens, tags = sentence(rng)
        lines += [f"{t}\t{g}" for t, g in zip(tokens, tags, strict=True)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(path, n=20, seed=1):
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for _ in range(n):
            tokens, tags = sentence(rng)
            f.write(json.dumps({"tokens": tokens, "tags": tags}) + "\n")
    return path


@pytest.mark.parametrize("head", ["crf", "softmax"])
def test_ner_trains_predicts_spans_and_evaluates(tmp_path, tiny_args, head):
    data = write_conll(tmp_path / "train.conll")
    run = tunesmith.train(
        {"task": "ner", "data": {"train": str(data)}}, **{**tiny_args, "epochs": 8, "lr": 3e-3}, head=head, out=str(tmp_path / "run")
    )
    m = run.metrics["eval"]
    assert m["f1"] > 0.5, m
    assert set(m["per_type"]) == {"PER", "LOC"}
    assert "word_lookup_baseline" in m
    text = "we saw alice in new york today"
    (pred,) = run.predict([text])
    for ent in pred["entities"]:
        assert text[ent["start"] : ent["end"]] == ent["text"] and 0 <= ent["score"] <= 1
    assert any(e["type"] == "PER" and e["text"] == "alice" for e in pred["entities"]), pred
    metrics, records = run.evaluate(str(write_jsonl(tmp_path / "eval.jsonl")))
    assert metrics["n"] == 20 and len(records) == 20
    assert (run.dir / "model" / "crf.safetensors").is_file() == (head == "crf")


def test_crf_never_predicts_a_forbidden_sequence(tmp_path, tiny_args):
    data = write_conll(tmp_path / "train.conll", n=40)
    run = tunesmith.train({"task": "ner", "data": {"train": str(data)}}, **{**tiny_args, "max_steps": 2}, out=str(tmp_path / "run"))
    preds = run.predict(["alice london new york bob in rome", "york york new in in paris carol"] * 3)
    for p in preds:
        prev = "O"
        for tag in p["tags"]:
            if tag.startswith("I-"):
                assert prev in (f"B-{tag[2:]}", tag), p["tags"]
            prev = tag


def test_lora_with_crf_is_merged(tmp_path, tiny_args):
    data = write_conll(tmp_path / "train.conll", n=40)
    run = tunesmith.train(
        {"task": "ner", "data": {"train": str(data)}}, **{**tiny_args, "max_steps": 3}, method="lora", lora_r=4, out=str(tmp_path / "r")
    )
    from transformers import AutoModelForTokenClassification

    state = AutoModelForTokenClassification.from_pretrained(run.dir / "model").state_dict()
    assert not any("lora" in k for k in state)
    assert run.predict(["alice in paris"])[0]["tokens"] == ["alice", "in", "paris"]


def test_cli_ner_with_a_bad_file(tmp_path, tiny_model, capsys):
    bad = tmp_path / "bad.conll"
    bad.write_text("alice\tB-PER\nin O extra\tO\nparis\n\n")
    rc = main(["train", "--task", "ner", "--train", str(bad), "--model", str(tiny_model)])
    assert rc == 2 and "line 3" in capsys.readouterr().err


def test_entity_spans_bio_and_bioes():
    assert entity_spans(["B-PER", "I-PER", "O", "B-LOC"], [1.0, 0.5, 1.0, 0.2]) == [(0, 1, "PER", 0.75), (3, 3, "LOC", 0.2)]
    assert entity_spans(["S-PER", "B-LOC", "E-LOC", "O"], [1, 1, 1, 1]) == [(0, 0, "PER", 1.0), (1, 2, "LOC", 1.0)]
    # an I- of another type starts a new entity rather than extending the last one
    assert [s[2] for s in entity_spans(["B-PER", "I-LOC"], [1, 1])] == ["PER", "LOC"]


def test_split_words_offsets():
    text = "Meet Anne-Marie at 10:30, in São Paulo!"
    for word, start, end in split_words(text):
        assert text[start:end] == word
    assert [w for w, _, _ in split_words(text)][:3] == ["Meet", "Anne-Marie", "at"]


def test_first_subtoken_positions():
    starts = torch.tensor([[0, 1, 0, 1, 1, 0], [0, 1, 1, 0, 0, 0]])
    order, mask = first_subtoken_positions(starts)
    assert order[0].tolist() == [1, 3, 4] and order[1, :2].tolist() == [1, 2]
    assert mask.tolist() == [[True, True, True], [True, True, False]]
