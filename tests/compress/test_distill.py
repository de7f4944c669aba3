"""Distillation on tiny models: the loss, a layer-dropped student end to end, and proof that the teacher is what it learns from."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import tunesmith
from conftest import make_texts, make_tiny_model, write_csv
from tunesmith.cli import main
from tunesmith.compress import distillation_loss
from tunesmith.compress.distill import TEACHER_LOGITS
from tunesmith.errors import UserError

FAST = {"precision": "fp32", "threads": 1, "report": False, "baseline": False, "early_stopping": None}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A 4-layer tiny BERT fine-tuned on separable spam/ham texts (it gets them all right)."""
    root = tmp_path_factory.mktemp("teacher")
    base = make_tiny_model(root / "base", num_layers=4)
    data = write_csv(root / "spam.csv", make_texts(120))
    run = tunesmith.train(
        {"data": {"train": str(data)}},
        model=str(base),
        epochs=3,
        batch_size=8,
        lr=1e-2,
        max_length=32,
        doctor=False,
        freeze_embeddings=False,  # a random model must learn its embeddings: frozen, most seeds stay at the majority class
        **FAST,
        out=str(root / "teacher"),
    )
    assert run.metrics["eval"]["accuracy"] >= 0.9
    return run


def test_loss_is_cross_entropy_at_alpha_0_and_scaled_kl_at_alpha_1():
    torch.manual_seed(0)
    student, teacher, gold = torch.randn(5, 3), torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    assert torch.allclose(distillation_loss(student, teacher, gold, alpha=0.0, temperature=3.0), F.cross_entropy(student, gold))
    t = 3.0
    p = F.softmax(teacher / t, dim=-1)
    manual = (p * (p.log() - F.log_softmax(student / t, dim=-1))).sum(-1).mean() * t * t
    assert torch.allclose(distillation_loss(student, teacher, gold, alpha=1.0, temperature=t), manual, atol=1e-6)
    assert distillation_loss(teacher, teacher, gold, alpha=1.0, temperature=2.0).abs() < 1e-6
    mixed = distillation_loss(student, teacher, gold, alpha=0.25, temperature=t)
    assert torch.allclose(mixed, 0.25 * manual + 0.75 * F.cross_entropy(student, gold), atol=1e-6)


def test_every_other_layer_student_is_a_normal_run_that_exports_to_int8(teacher, tmp_path, capsys):
    out = tmp_path / "student"
    code = main(["distill", "--teacher", str(teacher.dir), "--out", str(out), "--epochs", "2", "--temperature", "2", "--threads", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "distillation:" in printed and f"tunesmith export {out} --quantize int8" in printed

    run = tunesmith.load(out)
    d = run.metrics["distillation"]
    assert d["kept_layers"] == [0, 2] and d["teacher_layers"] == 4 and d["alpha"] == 0.5
    assert d["student_parameters"] < d["teacher_parameters"] and d["student_model_bytes"] < d["teacher_model_bytes"]
    assert json.loads((out / "model" / "config.json").read_text())["num_hidden_layers"] == 2
    assert d["student_eval"]["accuracy"] == run.metrics["eval"]["accuracy"] >= 0.9
    logits = np.load(out / TEACHER_LOGITS)["logits"]
    assert logits.shape == (96, 2), "one row of teacher logits per training text"
    assert run.predict(["free cash prize now"])[0]["label"] == "spam"
    assert main(["eval", str(out), "--data", teacher.config.data.train]) == 0
    assert main(["export", str(out), "--quantize", "int8"]) == 0
    assert json.loads((out / "export" / "onnx-int8" / "export.json").read_text())["parity_passed"] is True


def _invert_teacher(teacher_dir, tmp_path):
    """A copy of the teacher run whose head swaps the two classes: right about everything, then wrong about everything."""
    import shutil

    bad = tmp_path / "inverted-teacher"
    shutil.copytree(teacher_dir, bad, ignore=shutil.ignore_patterns("checkpoints", "export"))
    weights = load_file(bad / "model" / "model.safetensors")
    weights["classifier.weight"] = weights["classifier.weight"].flip(0).contiguous()
    weights["classifier.bias"] = weights["classifier.bias"].flip(0).contiguous()
    save_file(weights, bad / "model" / "model.safetensors", metadata={"format": "pt"})
    return bad


def test_the_student_learns_from_the_teacher_not_only_the_labels(teacher, tmp_path):
    """An inverted teacher (wrong on every text) pulls its student along with alpha 1; with alpha 0 the gold labels win.

    Both students start as the inverted teacher's every-other layers, so they start out wrong: only the
    gold labels can turn them around, and only the teacher's logits can keep them wrong.
    """
    bad = _invert_teacher(teacher.dir, tmp_path)
    assert tunesmith.load(bad).predict(["free cash prize now"])[0]["label"] == "ham"
    # 6 epochs: with 3, one seed in five left the gold-label student stuck at the majority class
    settings = {"epochs": 6, "lr": 1e-2, "threads": 1, "report": False}
    soft = tunesmith.distill(bad, out=tmp_path / "soft", alpha=1.0, temperature=1.0, **settings)
    hard = tunesmith.distill(bad, out=tmp_path / "hard", alpha=0.0, temperature=1.0, **settings)
    # the last evaluation, not the kept model: the best checkpoint is chosen on the gold labels
    assert _last_eval_accuracy(soft.dir) <= 0.2, "it kept the teacher's inverted answers"
    assert _last_eval_accuracy(hard.dir) >= 0.8 and hard.metrics["eval"]["accuracy"] >= 0.8


def test_a_named_model_is_a_student_too(teacher, tmp_path, tiny_model):
    run = tunesmith.distill(teacher.dir, str(tiny_model), out=tmp_path / "named", max_steps=2, threads=1, report=False)
    d = run.metrics["distillation"]
    assert d["student"] == str(tiny_model) and "kept_layers" not in d and not (run.dir / "student_init").exists()
    assert run.config.model.model == str(tiny_model) and run.metrics["training"]["steps"] == 2


def _last_eval_accuracy(run_dir) -> float:
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "eval_accuracy" in r][-1]["eval_accuracy"]


def test_bad_settings_are_refused_before_anything_is_written(teacher, tmp_path):
    out = tmp_path / "nothing"
    with pytest.raises(UserError, match=r"--alpha must be in \[0, 1\].*--temperature must be > 0"):
        tunesmith.distill(teacher.dir, out=out, alpha=1.5, temperature=0)
    with pytest.raises(UserError, match="K must be 1..3"):
        tunesmith.distill(teacher.dir, "layers:4", out=out)
    with pytest.raises(UserError, match="distill sets `model` itself"):
        tunesmith.distill(teacher.dir, out=out, model="minilm")
    with pytest.raises(UserError, match="no distillation"):
        tunesmith.distill(out=teacher.dir, resume=True)
    with pytest.raises(UserError, match="is a distillation run; continue it with: tunesmith distill"):
        distilled = tmp_path / "d"
        distilled.mkdir()
        (distilled / "config.yaml").write_text((teacher.dir / "config.yaml").read_text())
        (distilled / "distill.json").write_text("{}")
        tunesmith.train(out=str(distilled), resume=True)
    assert not out.exists()
