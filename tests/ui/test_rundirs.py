"""Reading the runs directory: safe paths, scanning, status, summaries and comparisons (synthetic run files)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tunesmith.errors import UserError
from tunesmith.ui import rundirs


def make_run(root: Path, name: str, *, lr: float = 1e-3, macro_f1: float | None = 0.8, finished: bool = True, history=None) -> Path:
    run = root / name
    run.mkdir(parents=True)
    config = {
        "task": "classify",
        "data": {"train": "/data/spam.csv"},
        "model": {"model": "minilm", "method": "full"},
        "training": {"lr": lr, "metric": "auto"},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    if finished:
        (run / "model").mkdir()
        (run / "model" / "config.json").write_text("{}")
        metrics = {"eval": {"n": 10, "accuracy": 0.9, "macro_f1": macro_f1}, "training": {"wall_seconds": 12.5, "steps": 24}}
        (run / "metrics.json").write_text(json.dumps(metrics))
    records = (
        history
        if history is not None
        else [{"step": 1, "time": 100.0, "loss": 0.7}, {"step": 12, "time": 110.0, "eval_macro_f1": macro_f1}]
    )
    (run / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "runs"
    make_run(root, "a")
    make_run(root, "b", lr=3e-3, macro_f1=0.7)
    make_run(root, "cv/fold-1")
    (root / ".uploads" / "x").mkdir(parents=True)
    (root / "not-a-run").mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    return root


# ---------------------------------------------------------------- path traversal


@pytest.mark.parametrize(
    "bad", ["", "..", "../a", "a/..", "/etc", "a/../../x", ".uploads", ".uploads/x", "a//b", "a\\..\\b", "%2e%2e", "not-a-run", "a/model"]
)
def test_resolve_run_refuses_anything_but_a_run_inside_the_root(root, bad):
    with pytest.raises(UserError):
        rundirs.resolve_run(root, bad)


def test_resolve_run_accepts_runs_and_nested_runs(root):
    assert rundirs.resolve_run(root, "a") == (root / "a").resolve()
    assert rundirs.resolve_run(root, "cv/fold-1") == (root / "cv" / "fold-1").resolve()


def test_a_symlinked_run_pointing_outside_is_refused(root, tmp_path):
    outside = make_run(tmp_path / "elsewhere", "c")
    os.symlink(outside, root / "linked")
    with pytest.raises(UserError, match="outside"):
        rundirs.resolve_run(root, "linked")


@pytest.mark.parametrize(
    "bad",
    [
        "../b/config.yaml",
        "../../secret.txt",
        "/etc/passwd",
        "model/../../b/config.yaml",
        "",
        ".",
        "model",
        "a\\..\\..\\secret.txt",
        "x\x00",
    ],
)
def test_resolve_run_file_never_leaves_the_run(root, bad):
    with pytest.raises(UserError):
        rundirs.resolve_run_file(root, "a", bad)


def test_a_symlink_inside_a_run_pointing_outside_is_refused(root, tmp_path):
    os.symlink(tmp_path / "secret.txt", root / "a" / "innocent.txt")
    with pytest.raises(UserError, match="outside"):
        rundirs.resolve_run_file(root, "a", "innocent.txt")
    assert rundirs.resolve_run_file(root, "a", "model/config.json") == (root / "a" / "model" / "config.json").resolve()


def test_scan_finds_nested_runs_and_skips_hidden_and_plain_directories(root):
    assert sorted(rundirs.run_id_of(root, p) for p in rundirs.scan_runs(root)) == ["a", "b", "cv/fold-1"]


# ---------------------------------------------------------------- status


def write_progress(run: Path, **values) -> None:
    (run / rundirs.PROGRESS).write_text(json.dumps(values))


def test_status_of_finished_cancelled_failed_and_interrupted_runs(root, tmp_path):
    assert rundirs.run_status(root / "a") == "finished"
    stopped = make_run(root, "stopped", finished=False, history=[])
    os.utime(stopped / "history.jsonl", (time.time() - 3600, time.time() - 3600))
    assert rundirs.run_status(stopped) == "incomplete"
    (stopped / "checkpoints").mkdir()
    assert rundirs.run_status(stopped) == "interrupted"
    write_progress(stopped, state="cancelled")
    assert rundirs.run_status(stopped) == "cancelled"
    write_progress(stopped, state="failed", error="boom")
    assert rundirs.run_status(stopped) == "failed"
    assert rundirs.run_status(stopped, live=True) == "running"
    # a worker that died without writing its ending: its pid is gone
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_progress(stopped, state="training", pid=dead.pid, host=socket.gethostname())
    assert rundirs.run_status(stopped) == "interrupted"
    summary = rundirs.summarize(root, stopped)
    assert summary["status"] == "interrupted" and summary["resumable"] is True


def test_a_cli_run_writing_history_now_reads_as_running(root):
    fresh = make_run(root, "fresh", finished=False)
    assert rundirs.run_status(fresh) == "running"


def test_read_jsonl_waits_for_a_line_being_written(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text('{"step": 1}\n{"step": 2')
    records, offset = rundirs.read_jsonl(path)
    assert records == [{"step": 1}] and offset == len('{"step": 1}\n')
    with path.open("a") as f:
        f.write("}\n")
    records, offset2 = rundirs.read_jsonl(path, offset)
    assert records == [{"step": 2}] and offset2 == path.stat().st_size


# ---------------------------------------------------------------- summaries and comparison


def test_summaries_carry_the_main_metric_and_duration(root):
    rows = {r["id"]: r for r in rundirs.list_runs(root)}
    assert set(rows) == {"a", "b", "cv/fold-1"}
    a = rows["a"]
    assert (a["task"], a["model"], a["method"], a["data"]) == ("classify", "minilm", "full", "spam.csv")
    assert (a["metric"], a["metric_value"], a["greater_is_better"]) == ("macro_f1", 0.8, True)
    assert a["duration_s"] == 12.5 and a["status"] == "finished"


def test_a_run_without_metrics_shows_its_last_eval(root):
    make_run(root, "partial", macro_f1=0.55, finished=False)
    assert rundirs.summarize(root, root / "partial")["metric_value"] == 0.55


def test_compare_diffs_configs_and_reports_deltas_against_the_first_run(root):
    result = rundirs.compare_runs(root, ["a", "b"])
    diff = {row["key"]: row for row in result["config"]}
    assert diff["training.lr"]["differs"] and diff["training.lr"]["values"] == [1e-3, 3e-3]
    assert not diff["model.method"]["differs"]
    metrics = {row["name"]: row for row in result["metrics"]}
    assert metrics["macro_f1"]["deltas"][0] == 0 and metrics["macro_f1"]["deltas"][1] == pytest.approx(-0.1)
    assert "n" not in metrics
    assert set(result["histories"]) == {"a", "b"}


def test_compare_needs_two_distinct_runs(root):
    with pytest.raises(UserError, match="at least two"):
        rundirs.compare_runs(root, ["a"])
    with pytest.raises(UserError, match="same run twice"):
        rundirs.compare_runs(root, ["a", "a"])
    with pytest.raises(UserError):
        rundirs.compare_runs(root, ["a", "../b"])
