"""Masked-language-model pre-training end to end on the tiny BERT: before/after perplexity, fill-mask, reuse as --model."""

from __future__ import annotations

import csv
import itertools
import json

import pytest

import tunesmith
from tunesmith.cli import main
from tunesmith.config import build_config
from tunesmith.data.unlabelled import load_unlabelled, prepare_unlabelled
from tunesmith.errors import UserError
from tunesmith.tasks.mlm import premask, tokenize

# two fixed frames over the tiny vocabulary: the frame words are learnable from a few dozen texts
HAM = [
    f"{who} see you {meal} {when}"
    for who, meal, when in itertools.product(["mum", "love"], ["lunch", "dinner", "home", "meeting"], ["tomorrow", "later"])
]
SPAM = [
    f"{verb} free {what} {how} now"
    for verb, what, how in itertools.product(["win", "claim"], ["cash", "prize", "offer"], ["call", "txt", "urgent"])
]
CORPUS = HAM + SPAM  # 34 distinct texts


def corpus_txt(path, texts=CORPUS):
    """One text per line, with blank lines (skipped) and a repeated text (deduped)."""
    path.write_text("\n\n".join(texts) + "\n\n" + texts[0] + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def mlm_run(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("mlm")
    data = corpus_txt(root / "corpus.txt")
    args = {"model": str(tiny_model), "batch_size": 8, "max_length": 32, "precision": "fp32", "threads": 1}
    return tunesmith.train(
        {"task": "mlm", "data": {"train": str(data)}}, **args, epochs=10, lr=3e-3, early_stopping=None, out=str(root / "run")
    )


def test_mlm_lowers_perplexity_on_the_same_masked_positions(mlm_run):
    m = mlm_run.metrics["eval"]
    assert m["perplexity_after"] < 0.5 * m["perplexity_before"], m
    assert m["eval_loss_after"] < m["eval_loss_before"]
    assert m["perplexity"] == m["perplexity_after"] and m["masked_tokens"] >= m["n"] == 7
    assert 0 <= m["masked_accuracy_before"] <= 1 and 0 <= m["masked_accuracy_after"] <= 1
    assert m["masking"] == {"mlm_probability": 0.15, "whole_word_mask": False, "seed": 42}
    assert mlm_run.metrics["training"]["best_metric"] == pytest.approx(min(r["eval_loss"] for r in history(mlm_run) if "eval_loss" in r))


def history(run):
    return [json.loads(line) for line in (run.dir / "history.jsonl").read_text().splitlines()]


def test_mlm_run_writes_its_files(mlm_run):
    for name in ("config.yaml", "data.json", "metrics.json", "history.jsonl", "eval_predictions.jsonl", "model/config.json"):
        assert (mlm_run.dir / name).is_file(), name
    model_config = json.loads((mlm_run.dir / "model" / "config.json").read_text())
    assert model_config["architectures"] == ["BertForMaskedLM"]
    report = json.loads((mlm_run.dir / "data.json").read_text())
    assert report["rows_read"] == 35 and report["duplicates_removed"] == 1
    assert report["train_size"] == 27 and report["eval_size"] == 7
    assert report["mlm_head"].startswith("newly initialised"), "the fixture is a sequence-classification checkpoint"
    assert any("eval_masked_accuracy" in r for r in history(mlm_run))


def test_fill_mask_predicts_top_tokens_per_mask(mlm_run):
    (row,) = mlm_run.predict(["mum see you [MASK] [MASK]"])
    assert len(row["mask_predictions"]) == 2
    for preds in row["mask_predictions"]:
        assert len(preds) == 5 and set(preds[0]) == {"token", "token_id", "score"}
        scores = [p["score"] for p in preds]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    with pytest.raises(UserError, match=r"\[MASK\]"):
        mlm_run.predict(["mum see you [MASK] later", "no mask here"])


def test_evaluate_masks_deterministically(mlm_run, tmp_path):
    data = corpus_txt(tmp_path / "more.txt", CORPUS[::-1])
    first, records = mlm_run.evaluate(str(data))
    again, _ = mlm_run.evaluate(str(data))
    assert records == [] and first == again
    assert first["n"] == 35 and first["perplexity"] > 1


def test_premask_is_seeded_and_masks_every_text(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    training = build_config({"task": "mlm"}).training
    features, _ = tokenize(tokenizer, CORPUS, 32)
    once, twice = premask(tokenizer, features, training), premask(tokenizer, features, training)
    assert once == twice
    assert all(any(label != -100 for label in f["labels"]) for f in once)
    other = premask(tokenizer, features, training.model_copy(update={"seed": 7}))
    assert other != once


def test_whole_word_mask_masks_all_sub_tokens(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    training = build_config({"task": "mlm"}, {"whole_word_mask": True, "mlm_probability": 0.4}).training
    texts = ["hello world quick brown fox", "jumps over the lazy dog"]  # words outside the vocab: letter pieces
    features, _ = tokenize(tokenizer, texts, 64, offsets=True)
    for text, feat, masked in zip(texts, features, premask(tokenizer, features, training), strict=True):
        words = tokenizer(text).word_ids()
        chosen = {words[i] for i, label in enumerate(masked["labels"]) if label != -100}
        assert chosen, "every text gets a masked word"
        for i, word in enumerate(words):
            if word in chosen:
                assert masked["labels"][i] == feat["input_ids"][i] and masked["input_ids"][i] == tokenizer.mask_token_id


def test_truncation_keeps_the_closing_token(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    (feat,), cut = tokenize(tokenizer, ["mum see you lunch tomorrow later home dinner"], 6)
    assert cut == 1 and len(feat["input_ids"]) == 6
    assert feat["input_ids"][-1] == tokenizer.sep_token_id and feat["special_tokens_mask"][-1] == 1


def test_cli_mlm_then_classify_from_its_model(tmp_path, tiny_model, spam_csv, capsys):
    data = tmp_path / "texts.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows([t, "x" if i % 3 else ""] for i, t in enumerate(CORPUS))  # stray, partial labels play no part
    flags = ["--model", str(tiny_model), "--batch-size", "8", "--max-length", "32", "--precision", "fp32", "--threads", "1"]
    out = tmp_path / "mlm"
    assert main(["train", "--task", "mlm", "--train", str(data), "--epochs", "1", "--out", str(out), *flags]) == 0
    printed = capsys.readouterr().out
    assert "perplexity" in printed and "before training" in printed
    assert main(["predict", str(out), "--text", "win free [MASK] call now"]) == 0
    assert "top predictions per mask" in capsys.readouterr().out
    assert main(["predict", str(out), "--text", "win free [MASK] call now", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["mask_predictions"][0]) == 5
    assert main(["eval", str(out), "--data", str(data)]) == 0
    assert json.loads((out / "eval" / "texts" / "metrics.json").read_text())["masked_tokens"] > 0
    flags[1] = str(out / "model")
    clf = tmp_path / "clf"
    assert main(["train", "--task", "classify", "--train", str(spam_csv), "--epochs", "1", "--no-baseline", "--out", str(clf), *flags]) == 0
    capsys.readouterr()
    assert tunesmith.load(clf).predict(["free prize"])[0]["label"] in {"spam", "ham"}


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "file not found"), ("", "is empty"), ("\n  \n\n", "only blank lines")],
)
def test_bad_text_files_exit_2(tmp_path, tiny_model, capsys, content, message):
    path = tmp_path / "texts.txt"
    if content is not None:
        path.write_text(content)
    assert main(["train", "--task", "mlm", "--train", str(path), "--model", str(tiny_model), "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_txt_lines_dedupe_and_seeded_holdout(tmp_path):
    data = corpus_txt(tmp_path / "c.txt")
    texts = load_unlabelled(str(data))
    assert len(texts) == 35 and texts.rows[:3] == [1, 3, 5] and texts.text_col is None
    cfg = build_config({"task": "mlm", "data": {"train": str(data), "eval_fraction": 0.25}})
    a, b = prepare_unlabelled(cfg.data, seed=1), prepare_unlabelled(cfg.data, seed=1)
    assert a.eval.texts == b.eval.texts and len(a.eval) == 9 and len(a.train) == 25
    assert not set(a.train.texts) & set(a.eval.texts)
    assert prepare_unlabelled(cfg.data, seed=2).eval.texts != a.eval.texts
    held = corpus_txt(tmp_path / "held.txt", HAM[:4])
    with_file = prepare_unlabelled(build_config({"task": "mlm", "data": {"train": str(data), "eval": str(held)}}).data, seed=1)
    assert with_file.report["split"] == "eval file" and with_file.report["eval_texts_in_train"] == 4
    assert with_file.report["eval_duplicates_removed"] == 1


def test_packaged_texts_and_metric():
    texts = load_unlabelled("sms_spam")
    assert len(texts) == 4837 and texts.text_col == "text"
    assert build_config({"task": "mlm"}).metric == "loss"
    with pytest.raises(UserError, match="not a mlm metric"):
        build_config({"task": "mlm"}, {"metric": "accuracy"})
