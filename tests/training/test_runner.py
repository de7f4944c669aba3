"""The training run on a tiny random BERT: methods, metrics alignment, resume, run directory."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch

import tunesmith
from conftest import make_texts, write_csv
from tunesmith.errors import UserError
from tunesmith.training.rundir import last_checkpoint


def noisy_csv(path, n=200, flip=0.15, seed=0):
    rng = random.Random(seed)
    rows = [(t, ("ham" if lab == "spam" else "spam") if rng.random() < flip else lab) for t, lab in make_texts(n, seed)]
    return write_csv(path, rows)


def test_trainer_eval_metrics_align_with_our_predictions(tmp_path, tiny_args):
    """Length-grouped eval batches reorder examples; scoring must follow label_ids, not the dataset order.

    The Trainer's best eval metric (computed inside training on length-grouped batches) must equal the
    metric recomputed from our own in-order predictions of the same best model.
    """
    data = noisy_csv(tmp_path / "noisy.csv")
    run = tunesmith.train({"data": {"train": str(data)}}, **{**tiny_args, "epochs": 3, "lr": 3e-3}, out=str(tmp_path / "run"))
    m = run.metrics
    assert 0.5 < m["eval"]["accuracy"] < 1.0, "the check needs a model that is right on some and wrong on some"
    assert m["training"]["best_metric"] == pytest.approx(m["eval"]["macro_f1"], abs=1e-9)
    preds = [json.loads(line) for line in (run.dir / "eval_predictions.jsonl").read_text().splitlines()]
    assert sum(p["correct"] for p in preds) / len(preds) == pytest.approx(m["eval"]["accuracy"])


def test_freeze_trains_only_the_head(tmp_path, tiny_model, tiny_args, spam_csv):
    from transformers import AutoModelForSequenceClassification

    run = tunesmith.train({"data": {"train": str(spam_csv)}}, **tiny_args, method="freeze", out=str(tmp_path / "run"))
    before = AutoModelForSequenceClassification.from_pretrained(tiny_model).state_dict()
    after = AutoModelForSequenceClassification.from_pretrained(run.dir / "model").state_dict()
    assert torch.equal(
        before["bert.encoder.layer.0.attention.self.query.weight"], after["bert.encoder.layer.0.attention.self.query.weight"]
    )
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    assert run.metrics["training"]["parameters"]["trainable"] < run.metrics["training"]["parameters"]["total"] / 10


def test_lora_is_merged_into_a_plain_model(tmp_path, tiny_model, tiny_args, spam_csv):
    from transformers import AutoModelForSequenceClassification

    run = tunesmith.train({"data": {"train": str(spam_csv)}}, **tiny_args, method="lora", lora_r=4, out=str(tmp_path / "run"))
    state = AutoModelForSequenceClassification.from_pretrained(run.dir / "model").state_dict()
    assert not any("lora" in k for k in state)
    before = AutoModelForSequenceClassification.from_pretrained(tiny_model).state_dict()
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(before[key], state[key]), "merged LoRA deltas change the base weights"
    assert len(run.predict(["free prize"])) == 1


def test_class_weights_label_smoothing_and_head_lr_run(tmp_path, tiny_args, spam_csv):
    run = tunesmith.train(
        {"data": {"train": str(spam_csv)}},
        **tiny_args,
        class_weights="auto",
        label_smoothing=0.1,
        head_lr=1e-2,
        scheduler="cosine",
        out=str(tmp_path / "r"),
    )
    assert run.metrics["eval"]["n"] == 24


def test_class_weights_are_inverse_frequency():
    from tunesmith.tasks.classify import class_weights

    w = class_weights(["a"] * 30 + ["b"] * 10, ["a", "b"])
    assert w.tolist() == pytest.approx([40 / 60, 40 / 20])


def test_optimizer_groups_split_head_and_decay(tiny_model):
    from transformers import AutoModelForSequenceClassification

    from tunesmith.config import TrainingConfig
    from tunesmith.training.methods import build_optimizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    opt = build_optimizer(model, TrainingConfig(lr=1e-4, head_lr=1e-3, weight_decay=0.1), "bert")
    by_lr_decay = {(g["lr"], g["weight_decay"]): sum(p.numel() for p in g["params"]) for g in opt.param_groups}
    assert set(by_lr_decay) == {(1e-4, 0.0), (1e-4, 0.1), (1e-3, 0.0), (1e-3, 0.1)}
    assert by_lr_decay[(1e-3, 0.1)] == model.classifier.weight.numel()
    assert sum(by_lr_decay.values()) == sum(p.numel() for p in model.parameters())


def test_resume_continues_from_the_last_complete_checkpoint(tmp_path, tiny_args, spam_csv, capsys):
    out = tmp_path / "run"
    full = tunesmith.train({"data": {"train": str(spam_csv)}}, **{**tiny_args, "epochs": 3, "early_stopping": None}, out=str(out))
    steps = full.metrics["training"]["steps"]
    # simulate a crash after the first epoch: the final outputs and the later checkpoints are gone,
    # and a checkpoint was being written when the process died
    for name in ("model", "metrics.json", "eval_predictions.jsonl"):
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    ckpts = sorted((out / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[-1]))
    for p in ckpts[1:]:
        shutil.rmtree(p)
    partial = out / "checkpoints" / f"checkpoint-{steps}"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    assert last_checkpoint(out)[0] == ckpts[0]

    resumed = tunesmith.train(out=str(out), resume=True)
    assert resumed.metrics["training"]["steps"] == steps
    assert "skipping checkpoint" in capsys.readouterr().err
    assert resumed.config.model.model == tiny_args["model"], "resume keeps the run's own config"


def test_existing_run_is_not_overwritten(tmp_path, tiny_args, spam_csv):
    out = tmp_path / "run"
    tunesmith.train({"data": {"train": str(spam_csv)}}, **{**tiny_args, "epochs": 1}, out=str(out))
    with pytest.raises(UserError, match="already holds a run"):
        tunesmith.train({"data": {"train": str(spam_csv)}}, **tiny_args, out=str(out))
    with pytest.raises(UserError, match="holds no run"):
        tunesmith.train(out=str(tmp_path / "nothing"), resume=True)


def test_same_seed_same_metrics(tmp_path, tiny_args, spam_csv):
    a = tunesmith.train({"data": {"train": str(spam_csv)}}, **tiny_args, out=str(tmp_path / "a"))
    b = tunesmith.train({"data": {"train": str(spam_csv)}}, **tiny_args, out=str(tmp_path / "b"))
    assert a.metrics["eval"]["confusion_matrix"] == b.metrics["eval"]["confusion_matrix"]
    pa = a.predict(["free cash now", "see you at dinner"])
    pb = b.predict(["free cash now", "see you at dinner"])
    assert [p["probabilities"] for p in pa] == [p["probabilities"] for p in pb]


def test_max_steps_and_eval_file(tmp_path, tiny_args):
    train = write_csv(tmp_path / "train.csv", make_texts(80, seed=1))
    ev = write_csv(tmp_path / "eval.csv", make_texts(20, seed=2))
    run = tunesmith.train({"data": {"train": str(train), "eval": str(ev)}}, **tiny_args, max_steps=3, out=str(tmp_path / "r"))
    assert run.metrics["training"]["steps"] == 3
    assert run.metrics["eval"]["n"] == 20
