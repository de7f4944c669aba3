"""The overfitting monitor: synthetic logs through its hooks for each verdict, and one tiny real run."""

from __future__ import annotations

import io
import json
import shlex
from types import SimpleNamespace

import pytest
from rich.console import Console

import tunesmith
from tunesmith.config import build_config
from tunesmith.training.monitor import OVERFITTING_FILE, OverfitMonitor


def run_monitor(evals, *, run_dir=None, config=None, metric="macro_f1", greater_is_better=True, main_process=True):
    """Feed ``evals`` (per evaluation: train losses logged before it, eval loss, eval metric) through the hooks."""
    buf = io.StringIO()
    monitor = OverfitMonitor(Console(file=buf, width=300, force_terminal=False), run_dir, config)
    args = SimpleNamespace(metric_for_best_model=metric, greater_is_better=greater_is_better, weight_decay=0.01)
    state = SimpleNamespace(global_step=0, epoch=0.0, is_world_process_zero=main_process, log_history=[])
    monitor.on_train_begin(args, state, None)
    for epoch, (losses, eval_loss, value) in enumerate(evals, 1):
        for loss in losses:
            state.global_step += 1
            state.epoch = epoch - 1 + state.global_step / 1000
            monitor.on_log(args, state, None, logs={"loss": loss, "learning_rate": 1e-4})
        state.epoch = float(epoch)
        monitor.on_evaluate(args, state, None, metrics={"eval_loss": eval_loss, f"eval_{metric}": value, "eval_runtime": 0.1})
    monitor.on_train_end(args, state, None)
    return monitor, buf.getvalue()


MEMORISING = [
    ([0.60, 0.50, 0.40], 0.30, 0.80),
    ([0.20, 0.15, 0.15], 0.21, 0.90),
    ([0.09, 0.08, 0.08], 0.25, 0.89),
    ([0.03, 0.02, 0.02], 0.29, 0.88),
]


def test_rising_eval_loss_while_train_loss_falls_is_overfitting(tmp_path):
    monitor, printed = run_monitor(MEMORISING, run_dir=tmp_path)
    assert "eval loss rose 0.21 -> 0.29 over 2 epochs while train loss fell" in printed
    assert "memorising the training set" in printed
    report = json.loads((tmp_path / OVERFITTING_FILE).read_text())
    assert report["verdict"] == "overfitting"
    assert report["best_epoch"] == 2.0 and report["best_metric"] == pytest.approx(0.90)
    evals = report["evaluations"]
    assert [e["eval_loss"] for e in evals] == [0.30, 0.21, 0.25, 0.29]
    assert all(e["gap"] == pytest.approx(e["eval_loss"] - e["train_loss"]) for e in evals)
    assert evals[-1]["gap"] > evals[1]["gap"] > 0
    remedies = [r["remedy"] for r in report["remedies"]]
    for expected in (
        "--epochs 2",
        "--weight-decay 0.1",
        "--dropout 0.2",
        "--label-smoothing 0.1",
        "--early-stopping 2",
        "--method lora --lora-r 8",
        "augment",
        "more data",
    ):
        assert expected in remedies
    assert report["warnings"], "the console warnings are kept in the file too"


def test_stalled_metric_while_train_loss_falls_warns():
    evals = [([0.7, 0.6], 0.40, 0.80), ([0.4, 0.3], 0.35, 0.85), ([0.2, 0.15], 0.34, 0.84), ([0.1, 0.05], 0.34, 0.845)]
    monitor, printed = run_monitor(evals)
    assert "eval macro_f1 has not improved for 2 evaluations (best 0.8500 at epoch 2)" in printed
    assert monitor.diagnosis["verdict"] == "overfitting"
    assert monitor.diagnosis["best_epoch"] == 2.0


def test_noisy_train_loss_still_counts_as_falling():
    """A real tiny run: eval peaks at epoch 2, then drifts down while the noisy train loss falls overall."""
    train = [0.662, 0.62, 0.465, 0.481, 0.483, 0.419, 0.461, 0.411]
    eval_loss = [0.653, 0.478, 0.48, 0.478, 0.515, 0.51, 0.558, 0.549]
    metric = [0.388, 0.791, 0.791, 0.791, 0.759, 0.775, 0.733, 0.733]
    monitor, printed = run_monitor([([t], e, m) for t, e, m in zip(train, eval_loss, metric)])
    assert monitor.diagnosis["verdict"] == "overfitting"
    assert "peaked at epoch 2 (0.7910)" in monitor.diagnosis["reason"] and "gap grew" in monitor.diagnosis["reason"]
    assert "has not improved for 2 evaluations" in printed


def test_still_improving_at_the_end_is_underfitting(tmp_path):
    evals = [([0.69, 0.68], 0.66, 0.50), ([0.62, 0.60], 0.58, 0.61), ([0.52, 0.50], 0.49, 0.70)]
    config = build_config({}, {"epochs": 3, "out": str(tmp_path)})
    monitor, printed = run_monitor(evals, run_dir=tmp_path, config=config)
    report = json.loads((tmp_path / OVERFITTING_FILE).read_text())
    assert report["verdict"] == "underfitting"
    assert "more epochs" in report["reason"]
    assert [r["remedy"] for r in report["remedies"]] == ["--epochs 6"]
    assert "memorising" not in printed and "underfitting" in printed


def test_levelled_off_without_a_widening_gap_is_ok(tmp_path):
    evals = [([0.5, 0.4], 0.30, 0.85), ([0.2, 0.2], 0.22, 0.90), ([0.2, 0.21], 0.22, 0.90), ([0.21, 0.2], 0.22, 0.90)]
    monitor, printed = run_monitor(evals, run_dir=tmp_path)
    report = json.loads((tmp_path / OVERFITTING_FILE).read_text())
    assert report["verdict"] == "ok" and report["remedies"] == []
    assert printed == ""


def test_one_evaluation_is_too_few_to_judge():
    monitor, _ = run_monitor([([0.7, 0.5], 0.4, 0.8)])
    assert monitor.diagnosis["verdict"] == "ok" and "too few" in monitor.diagnosis["reason"]


def test_lower_is_better_metric():
    # rmse falls at every evaluation while train loss falls: still learning
    evals = [([1.0, 0.9], 0.9, 0.95), ([0.8, 0.7], 0.7, 0.84), ([0.6, 0.5], 0.5, 0.70)]
    monitor, _ = run_monitor(evals, metric="rmse", greater_is_better=False)
    assert monitor.diagnosis["verdict"] == "underfitting"
    assert monitor.diagnosis["best_epoch"] == 3.0


def test_only_the_main_process_writes(tmp_path):
    run_monitor(MEMORISING, run_dir=tmp_path, main_process=False)
    assert not (tmp_path / OVERFITTING_FILE).exists()


def test_resume_replays_the_restored_history():
    monitor = OverfitMonitor(Console(file=io.StringIO()), None)
    args = SimpleNamespace(metric_for_best_model="eval_macro_f1", greater_is_better=True)
    history = [
        {"loss": 0.6, "step": 5, "epoch": 0.5},
        {"eval_loss": 0.3, "eval_macro_f1": 0.8, "step": 10, "epoch": 1.0},
        {"loss": 0.2, "step": 15, "epoch": 1.5},
        {"eval_loss": 0.21, "eval_macro_f1": 0.9, "step": 20, "epoch": 2.0},
    ]
    monitor.on_train_begin(args, SimpleNamespace(log_history=history, is_world_process_zero=True), None)
    assert [e.metric for e in monitor.evaluations] == [0.8, 0.9]
    assert monitor.evaluations[1].epoch == 2.0 and monitor.best_index() == 1


def test_remedy_commands_parse_with_the_real_cli(tmp_path):
    from tunesmith.cli import build_parser

    config = build_config({"data": {"train": "data/spam.csv", "text_col": "message"}}, {"out": str(tmp_path / "run")})
    monitor, _ = run_monitor(MEMORISING, run_dir=tmp_path / "run", config=config)
    parser = build_parser()
    for remedy in monitor.diagnosis["remedies"]:
        for command in remedy["command"].split(" && "):
            argv = shlex.split(command)
            assert argv[0] == "tunesmith"
            parser.parse_args(argv[1:])  # exits on an unknown flag
    augment = next(r for r in monitor.diagnosis["remedies"] if r["remedy"] == "augment")["command"]
    assert "--eval-out" in augment and "--text-col message" in augment


def test_a_real_run_writes_overfitting_json(tmp_path, tiny_args, spam_csv):
    run = tunesmith.train({"data": {"train": str(spam_csv)}}, **{**tiny_args, "epochs": 3}, out=str(tmp_path / "run"))
    report = json.loads((run.dir / OVERFITTING_FILE).read_text())
    assert report["verdict"] in ("ok", "overfitting", "underfitting")
    assert report["metric"] == "macro_f1"
    history = [json.loads(line) for line in (run.dir / "history.jsonl").read_text().splitlines()]
    assert len(report["evaluations"]) == sum("eval_loss" in h for h in history) >= 1
    assert all(e["train_loss"] is not None for e in report["evaluations"])
