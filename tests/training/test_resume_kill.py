"""Crash safety end to end: SIGKILL while a checkpoint is being committed, Ctrl-C, corrupt checkpoints, data changes.

The interrupted runs are real `tunesmith train` processes. A small callback injected into the child
freezes it (SIGSTOP) at an exact point, so the test can then SIGKILL or SIGINT it from outside at a
known step, deterministically, however busy the machine is.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tunesmith
from conftest import make_texts, write_csv
from tunesmith.errors import UserError
from tunesmith.training.rundir import CHECKPOINT_MANIFEST, checkpoint_problem

CHILD = r"""
import os, signal, sys
from transformers import TrainerCallback
import tunesmith.training.runner as runner

event, step = os.environ["FREEZE_ON"], int(os.environ["FREEZE_AT_STEP"])

class Freeze(TrainerCallback):
    # runs before tunesmith's own callbacks: on_save freezes after the Trainer wrote the checkpoint, before it is committed
    def _maybe(self, state):
        if state.global_step == step:
            os.kill(os.getpid(), signal.SIGSTOP)
    def on_save(self, args, state, control, **kwargs):
        if event == "save":
            self._maybe(state)
    def on_step_end(self, args, state, control, **kwargs):
        if event == "step":
            self._maybe(state)

original = runner.train
runner.train = lambda config, **kw: original(config, callbacks=[Freeze()], **kw)
from tunesmith.cli import main
raise SystemExit(main(sys.argv[1:]))
"""

# 96 train / 24 eval texts, batch 8: 12 steps per epoch, 36 in all; an eval and a checkpoint every 5 steps
SETTINGS = {
    "epochs": 3,
    "batch_size": 8,
    "lr": 5e-3,
    "max_length": 32,
    "precision": "fp32",
    "threads": 1,
    "doctor": False,
    "report": False,
    "baseline": False,
    "early_stopping": None,
    "eval_steps": 5,
    "seed": 7,
}


def _flags(settings: dict) -> list[str]:
    flags = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, "none" if value is None else str(value)]
    return flags


def _start_frozen(args: list[str], event: str, step: int, tmp_path: Path) -> subprocess.Popen:
    """Start `tunesmith train ARGS` in a child that stops itself at ``step``; return once it is stopped."""
    env = {**os.environ, "FREEZE_ON": event, "FREEZE_AT_STEP": str(step)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, "train", *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        pid, status = os.waitpid(proc.pid, os.WNOHANG | os.WUNTRACED)
        if pid and os.WIFSTOPPED(status):
            return proc
        if pid:  # exited before reaching the step
            out, err = proc.communicate()
            pytest.fail(f"training ended before step {step} (status {status}):\n{err[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"training did not reach step {step} in time")


def _numbers(tree, prefix=""):
    """Flatten the numeric leaves of a JSON tree: path -> value."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _numbers(sub, f"{prefix}.{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _numbers(sub, f"{prefix}[{i}]").items()}
    return {prefix: tree} if isinstance(tree, int | float) and not isinstance(tree, bool) else {}


def _eval_losses(run_dir: Path) -> list[tuple[int, float]]:
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    return [(r["step"], r["eval_loss"]) for r in map(json.loads, lines) if "eval_loss" in r]


def _probabilities(run_dir: Path) -> list[float]:
    lines = (run_dir / "eval_predictions.jsonl").read_text().splitlines()
    return [p for r in map(json.loads, lines) for p in r["probabilities"].values()]


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # rich folds long paths at 80 columns when not on a terminal


def test_sigkill_while_checkpointing_then_resume_matches_an_uninterrupted_run(tmp_path, tiny_model, capsys):
    data = write_csv(tmp_path / "spam.csv", make_texts(120))
    settings = {**SETTINGS, "model": str(tiny_model)}
    killed = tmp_path / "killed"

    # frozen after the Trainer wrote checkpoint-20 (mid-epoch 2) but before tunesmith committed it
    proc = _start_frozen(["--train", str(data), "--out", str(killed), *_flags(settings)], "save", 20, tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    ckpts = killed / "checkpoints"
    assert (ckpts / "checkpoint-20" / "trainer_state.json").is_file(), "the Trainer had written it"
    assert not (ckpts / "checkpoint-20" / CHECKPOINT_MANIFEST).exists(), "but it was never committed"
    assert checkpoint_problem(ckpts / "checkpoint-15") is None
    assert not (killed / "metrics.json").exists()

    capsys.readouterr()
    resumed = tunesmith.train(out=str(killed), resume=True)
    err = " ".join(capsys.readouterr().err.split())
    assert "skipping checkpoint checkpoint-20: no tunesmith_checkpoint.json" in err
    assert "resuming from" in err and "checkpoint-15 (step 15)" in err
    assert (ckpts / "skipped-checkpoint-20").is_dir(), "the broken checkpoint is kept aside, out of the Trainer's way"

    straight = tunesmith.train({"data": {"train": str(data)}}, **settings, out=str(tmp_path / "straight"))

    assert resumed.metrics["training"]["steps"] == straight.metrics["training"]["steps"] == 36
    a, b = _numbers(resumed.metrics["eval"]), _numbers(straight.metrics["eval"])
    assert a.keys() == b.keys() and a
    assert all(abs(a[k] - b[k]) <= 1e-6 for k in a), {k: (a[k], b[k]) for k in a if abs(a[k] - b[k]) > 1e-6}
    assert resumed.metrics["training"]["best_metric"] == pytest.approx(straight.metrics["training"]["best_metric"], abs=1e-6)
    # the trajectory after the resume point, not only the end: every eval loss, each step logged once
    losses_resumed, losses_straight = _eval_losses(killed), _eval_losses(tmp_path / "straight")
    assert [s for s, _ in losses_resumed] == [s for s, _ in losses_straight] == [5, 10, 15, 20, 25, 30, 35, 36]
    assert all(abs(x - y) <= 1e-6 for (_, x), (_, y) in zip(losses_resumed, losses_straight))
    assert max(abs(x - y) for x, y in zip(_probabilities(killed), _probabilities(tmp_path / "straight"))) <= 1e-6
    # both runs record what their numbers depend on, identically: seed, data hashes, library versions
    a, b = resumed.metrics["reproducibility"], straight.metrics["reproducibility"]
    assert a["seed"] == b["seed"] == 7 and a["versions"] == b["versions"]
    assert a["data_files"] == b["data_files"] and a["data_files"]["train"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()


def test_ctrl_c_saves_a_checkpoint_and_prints_the_resume_command(tmp_path, tiny_model, capsys):
    data = write_csv(tmp_path / "spam.csv", make_texts(120))
    out = tmp_path / "run"
    proc = _start_frozen(["--train", str(data), "--out", str(out), *_flags({**SETTINGS, "model": str(tiny_model)})], "step", 7, tmp_path)
    proc.send_signal(signal.SIGINT)  # delivered when it continues, inside step 7's callbacks
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    err = " ".join(err.split())
    assert proc.returncode == 130, err[-2000:]
    assert f"interrupted at step 7 of 36; checkpoint saved in {out}/checkpoints/checkpoint-7" in err
    assert f"resume with: tunesmith train --out {out} --resume" in err
    assert checkpoint_problem(out / "checkpoints" / "checkpoint-7") is None, "the interrupt checkpoint is committed"
    assert not (out / "model").exists()

    capsys.readouterr()
    run = tunesmith.train(out=str(out), resume=True)
    assert "checkpoint-7 (step 7)" in " ".join(capsys.readouterr().err.split())
    assert run.metrics["training"]["steps"] == 36


def test_corrupt_checkpoint_is_skipped_and_changed_data_refuses_to_resume(tmp_path, tiny_args, capsys):
    data = write_csv(tmp_path / "spam.csv", make_texts(60))
    out = tmp_path / "run"
    tunesmith.train({"data": {"train": str(data)}}, **{**tiny_args, "epochs": 1, "eval_steps": 2, "report": False}, out=str(out))
    newest = max((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    weights = newest / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-10] ^= 0xFF  # same size, one bit pattern changed: only the hash can tell
    weights.write_bytes(bytes(raw))
    assert "does not match its sha256" in checkpoint_problem(newest)

    capsys.readouterr()
    run = tunesmith.train(out=str(out), resume=True)
    err = " ".join(capsys.readouterr().err.split())
    assert f"skipping checkpoint {newest.name}: model.safetensors does not match its sha256 in the manifest (corrupt)" in err
    assert run.metrics["reproducibility"]["data_files"]["train"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()

    with data.open("a") as f:
        f.write("one more row,ham\n")
    with pytest.raises(UserError, match=r"its data changed since it started: train \(.*spam.csv\): sha256"):
        tunesmith.train(out=str(out), resume=True)
