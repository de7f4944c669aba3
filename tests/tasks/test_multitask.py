"""Multi-task fine-tuning on the tiny BERT: a classify head (spam/ham) and a regress head (ratings) on one encoder."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tunesmith
from conftest import HAM_WORDS, SPAM_WORDS, make_texts, write_csv
from tunesmith.cli import main
from tunesmith.config import build_config, flat_fields, load_config
from tunesmith.errors import UserError
from tunesmith.tasks.multitask import HeadSpec, epoch_counts, mean_pool, multitask_loss, prepare, sample_order

from .test_regress import rating_csv


def heads(spam, ratings, **extra) -> dict:
    return {
        "task": "multitask",
        "heads": [{"name": "spam", "type": "classify", "train": str(spam)}, {"name": "rating", "type": "regress", "train": str(ratings)}],
        **extra,
    }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("multitask-data")
    write_csv(d / "spam.csv", make_texts(120))
    rating_csv(d / "ratings.csv", n=120)
    return d


@pytest.fixture(scope="module")
def trained(data_dir, tiny_model, tmp_path_factory):
    args = {"model": str(tiny_model), "epochs": 4, "batch_size": 8, "lr": 3e-3, "max_length": 32, "precision": "fp32", "threads": 1}
    out = tmp_path_factory.mktemp("multitask-run") / "run"
    return tunesmith.train(heads(data_dir / "spam.csv", data_dir / "ratings.csv"), **args, out=str(out))


def test_two_heads_train_predict_and_report_per_head(trained):
    m = trained.metrics["eval"]
    assert set(m["per_head"]) == {"spam", "rating"}
    spam, rating = m["per_head"]["spam"], m["per_head"]["rating"]
    assert spam["task"] == "classify" and spam["macro_f1"] > 0.8 and "tfidf_svm_baseline" in spam and "majority_baseline" in spam
    assert rating["task"] == "regress" and rating["pearson"] > 0.5 and rating["rmse"] < rating["mean_baseline"]["rmse"]
    assert m["score"] == pytest.approx((spam["macro_f1"] + max(0.0, rating["pearson"])) / 2)
    assert m["n"] == spam["n"] + rating["n"] == 48

    model_dir = trained.dir / "model"
    assert {"config.json", "multitask_heads.safetensors", "tunesmith_multitask.json"} <= {p.name for p in model_dir.iterdir()}
    meta = json.loads((model_dir / "tunesmith_multitask.json").read_text())
    assert [(h["name"], h["type"]) for h in meta["heads"]] == [("spam", "classify"), ("rating", "regress")]
    assert meta["heads"][0]["labels"] == ["ham", "spam"] and 20 < meta["heads"][1]["scaler"]["mean"][0] < 30

    spammy, hammy = trained.predict(["free prize win cash claim urgent", "lunch meeting home mum dinner love"])
    assert spammy["heads"]["spam"]["label"] == "spam" and hammy["heads"]["spam"]["label"] == "ham"
    assert 5 < hammy["heads"]["rating"]["value"] < spammy["heads"]["rating"]["value"] < 50, "values in the targets' units"

    records = [json.loads(line) for line in (trained.dir / "eval_predictions.jsonl").read_text().splitlines()]
    assert {r["head"] for r in records} == {"spam", "rating"} and len(records) == 48

    history = [json.loads(line) for line in (trained.dir / "history.jsonl").read_text().splitlines()]
    evals = [h for h in history if "eval_score" in h]
    assert evals and {"eval_spam_macro_f1", "eval_rating_pearson", "eval_rating_rmse"} <= set(evals[-1])
    sampling = json.loads((trained.dir / "data.json").read_text())["sampling"]
    assert sampling["strategy"] == "proportional" and sampling["epoch_size"] == 192


def test_evaluate_scores_each_head_whose_column_the_file_holds(trained, tmp_path):
    rng = random.Random(3)
    path = tmp_path / "both.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "score"])
        for i in range(30):
            k = rng.randint(0, 6)
            words = rng.sample(SPAM_WORDS, k) + rng.sample(HAM_WORDS, 6 - k)
            w.writerow([" ".join(words) + f" {i}", "spam" if k > 3 else "ham", 10 + 5 * k])
    metrics, records = trained.evaluate(str(path))
    assert set(metrics["per_head"]) == {"spam", "rating"} and len(records) == 60
    assert metrics["per_head"]["rating"]["pearson"] > 0.5

    only_spam = write_csv(tmp_path / "spam_only.csv", make_texts(20, seed=9))
    metrics, records = trained.evaluate(str(only_spam))
    assert set(metrics["per_head"]) == {"spam"} and metrics["skipped_heads"] == {"rating": "no column 'score'"}
    # a head's label column can be remapped: the spam labels of the file scored under another column name
    renamed = write_csv(tmp_path / "renamed.csv", make_texts(20, seed=9), header=("text", "kind"))
    metrics, _ = trained.evaluate(str(renamed), label_col="spam=kind")
    assert metrics["per_head"]["spam"]["n"] == 20
    with pytest.raises(UserError, match="holds none of the heads' label columns"):
        trained.evaluate(str(renamed))
    with pytest.raises(UserError, match=r"HEAD=COLUMN.*spam, rating"):
        trained.evaluate(str(renamed), label_col="kind")


def test_cli_prints_every_head(trained, capsys):
    assert main(["predict", str(trained.dir), "--text", "free prize win", "--text", "lunch at home"]) == 0
    printed = capsys.readouterr().out
    assert "spam" in printed and "rating" in printed
    assert main(["predict", str(trained.dir), "--text", "free prize", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["heads"]) == {"spam", "rating"}
    assert main(["eval", str(trained.dir), "--data", str(trained.dir.parent.parent / "x.csv")]) == 2
    capsys.readouterr()


def test_model_dir_is_a_plain_encoder_for_another_task(trained, data_dir, tmp_path, tiny_args):
    run = tunesmith.train(
        {"data": {"train": str(data_dir / "spam.csv")}},
        **{**tiny_args, "model": str(trained.dir / "model"), "max_steps": 2, "baseline": False},
        out=str(tmp_path / "classify"),
    )
    assert run.predict(["free prize"])[0]["label"] in {"ham", "spam"}


@pytest.mark.parametrize("method", ["lora", "freeze"])
def test_lora_and_freeze(data_dir, tmp_path, tiny_args, method):
    args = {**tiny_args, "max_steps": 3, "baseline": False, "method": method, "lora_r": 4}
    run = tunesmith.train(heads(data_dir / "spam.csv", data_dir / "ratings.csv"), **args, out=str(tmp_path / "run"))
    params = run.metrics["training"]["parameters"]
    if method == "freeze":
        assert params["trainable"] == (32 * 2 + 2) + (32 * 1 + 1), "only the two heads train"
    from safetensors.torch import load_file

    assert not any("lora" in k for k in load_file(str(run.dir / "model" / "model.safetensors"))), "adapters merged"
    assert set(run.predict(["free prize"])[0]["heads"]) == {"spam", "rating"}


def test_temperature_sampling_evens_the_shares(tmp_path):
    spam = write_csv(tmp_path / "spam.csv", make_texts(200))
    ratings = rating_csv(tmp_path / "ratings.csv", n=40)
    cfg = build_config(heads(spam, ratings), {"task_sampling": "temperature", "sampling_temperature": "2"})
    data = prepare(cfg)
    report = data.report["sampling"]["heads"]
    assert (report["spam"]["train_examples"], report["rating"]["train_examples"]) == (160, 32)
    expected = np.sqrt([160, 32]) / np.sqrt([160, 32]).sum()
    assert report["spam"]["share"] == pytest.approx(expected[0], abs=0.01) and report["rating"]["share"] == pytest.approx(
        expected[1], abs=0.01
    )
    assert len(data.train) == 192 and report["rating"]["per_epoch"] > 32 and report["spam"]["never_seen"] > 0
    proportional = prepare(build_config(heads(spam, ratings)))
    assert proportional.report["sampling"]["heads"]["rating"]["per_epoch"] == 32


def test_epoch_counts_and_sample_order():
    assert epoch_counts([90, 10], "proportional", 2.0) == [90, 10]
    assert epoch_counts([90, 10], "temperature", 1.0) == [90, 10]
    counts = epoch_counts([900, 100], "temperature", 2.0)
    assert sum(counts) == 1000 and counts == [750, 250]
    assert epoch_counts([500, 500, 1], "temperature", 1e9)[2] == pytest.approx(334, abs=1)
    order = sample_order(4, 10, np.random.default_rng(0))
    assert len(order) == 10 and all(order.count(i) in (2, 3) for i in range(4)), "each example before any repeats"
    down = sample_order(10, 4, np.random.default_rng(0))
    assert len(set(down)) == 4


def test_loss_is_the_weighted_mean_over_present_heads():
    torch.manual_seed(0)
    specs = [HeadSpec("a", "classify", 3, weight=2.0), HeadSpec("b", "regress", 1, weight=1.0)]
    logits = torch.randn(5, 4)
    labels = torch.tensor([[0, 2], [1, 0.5], [0, 0], [1, -1.2], [0, 1]], dtype=torch.float32)
    ce = F.cross_entropy(logits[[0, 2, 4], :3], torch.tensor([2, 0, 1]))
    mse = F.mse_loss(logits[[1, 3], 3], torch.tensor([0.5, -1.2]))
    assert multitask_loss(logits, labels, specs).item() == pytest.approx(((2 * ce + mse) / 3).item(), rel=1e-5)
    only_b = labels[[1, 3]]
    assert multitask_loss(logits[[1, 3]], only_b, specs).item() == pytest.approx(mse.item(), rel=1e-5)


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    assert mean_pool(hidden, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 2.0]]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"task": "multitask", "heads": [{"name": "a", "type": "classify"}]}, r"at least 2 heads, got 1; declare them in the YAML"),
        ({"task": "multitask"}, r"at least 2 heads, got 0.*heads are not CLI flags"),
        (
            {"task": "multitask", "heads": [{"name": "a", "type": "classify"}, {"name": "a", "type": "regress", "train": "vader_tweets"}]},
            r"names must be unique: 'a' is declared 2 times",
        ),
        (
            {"heads": [{"name": "a", "type": "classify"}, {"name": "b", "type": "classify"}]},
            r"only read by task multitask, but task is 'classify'",
        ),
        (
            {"task": "multitask", "heads": [{"name": "a", "type": "classify", "labl_col": "x"}] * 2},
            r"`heads.0.labl_col` is not a config key; did you mean `label_col`",
        ),
        (
            {"task": "multitask", "heads": [{"name": "a b", "type": "classify"}, {"name": "c", "type": "tag"}]},
            r"(?s)`heads.0.name`: a head name is letters, digits, _ and -.*got 'a b'.*`heads.1.type`",
        ),
    ],
)
def test_config_errors(config, message):
    with pytest.raises(UserError, match=message):
        build_config(config)


def test_heads_are_yaml_only_and_metric_is_score(tmp_path):
    assert "heads" not in flat_fields() and {"task_sampling", "sampling_temperature"} <= set(flat_fields())
    with pytest.raises(UserError, match="not a multitask metric; choose auto or one of score"):
        build_config(heads("a.csv", "b.csv"), {"metric": "macro_f1"})
    path = tmp_path / "mt.yaml"
    path.write_text("task: multitask\nheads:\n  - {name: s, type: classify}\n  - {name: r, type: regress, train: vader_tweets}\n")
    cfg = load_config(path, {"epochs": "1"})
    assert [h.name for h in cfg.heads] == ["s", "r"] and cfg.metric == "score" and cfg.training.epochs == 1
