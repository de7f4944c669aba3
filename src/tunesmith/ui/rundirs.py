"""Reading the runs directory for the web UI: safe paths, run summaries, one run's files, comparisons.

Everything here is plain functions over files, so the pages and the tests read the same thing. Every run
file is optional (a run may still be training, have crashed, or come from an older tunesmith): a missing
or half-written file reads as absent, never as an error.

Paths from the browser are run ids (a run directory's path relative to the runs directory, ``demo`` or
``cv-spam/fold-1``) and file names inside a run; :func:`resolve_run` and :func:`resolve_run_file` refuse
anything that would leave the runs directory (``..``, absolute paths, symlinks pointing outside).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import yaml

from tunesmith.errors import UserError

PROGRESS = "progress.json"
"""Written by the UI's training worker: state, step, loss, eval metric, ETA (see :mod:`tunesmith.ui.worker`)."""
TRAIN_LOG = "train.log"
"""The worker's console output (what `tunesmith train` prints)."""
UPLOADS = ".uploads"
"""Uploaded data files live under RUNS/.uploads/<sha>/<name> (hidden: never listed as runs)."""

ACTIVE_STATES = ("starting", "preparing", "training", "finishing")
FINAL_STATUSES = ("finished", "cancelled", "failed", "interrupted", "incomplete")
RESUMABLE = ("cancelled", "interrupted", "failed")
# directories inside a run that never hold other runs; not descended into when scanning
_RUN_INTERNALS = {"model", "checkpoints", "export", "eval", "explain"}
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=+-]*")
_SCAN_DEPTH = 3
_CLI_RUN_FRESH_S = 120.0  # a run without a UI worker whose history changed this recently is taken to be training
# lower is better for these, whatever the task registry says about other names
_LOWER_IS_BETTER = re.compile(r"(^|_)(loss|rmse|mae|mse|perplexity|hamming_loss)$")
GENERATIVE_TASKS = ("sft", "dpo", "clm", "seq2seq")
"""Tasks whose model writes text: the run page offers a chat (through tunesmith.generate) beside the try box."""


# ---------------------------------------------------------------- safe paths


def resolve_run(root: Path, run_id: str) -> Path:
    """The directory of run ``run_id`` inside ``root``.

    Raises:
        UserError: the id is malformed, leaves ``root`` (``..``, absolute, a symlink outside) or names no run.
    """
    parts = run_id.split("/") if run_id else []
    if not parts or len(parts) > _SCAN_DEPTH or not all(_PART.fullmatch(p) for p in parts):
        raise UserError(f"{run_id!r} is not a run id: use the run directory's path inside the runs directory, e.g. 'demo' or 'cv/fold-1'")
    base = root.resolve()
    path = (base / Path(*parts)).resolve()
    if not path.is_relative_to(base) or path == base:
        raise UserError(f"run {run_id!r} is outside the runs directory {root}")
    if not path.is_dir() or not is_run_dir(path):
        raise UserError(f"no run {run_id!r} in {root}")
    return path


def resolve_run_file(root: Path, run_id: str, name: str) -> Path:
    """A file inside a run directory, refusing any path that leaves the run (or the runs directory).

    Raises:
        UserError: the path is malformed, leaves the run, or is not a file.
    """
    run = resolve_run(root, run_id)
    parts = name.split("/") if name else []
    if not parts or any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts) or name.startswith("/"):
        raise UserError(f"{name!r} is not a file name inside run {run_id!r}")
    path = (run / Path(*parts)).resolve()
    if not path.is_relative_to(run) or not path.is_relative_to(root.resolve()):
        raise UserError(f"{name!r} is outside run {run_id!r}")
    if not path.is_file():
        raise UserError(f"run {run_id!r} has no file {name!r}")
    return path


def is_run_dir(path: Path) -> bool:
    """A run directory holds a config.yaml (written by `tunesmith train`) or a UI worker's progress.json."""
    return (path / "config.yaml").is_file() or (path / PROGRESS).is_file()


def run_id_of(root: Path, path: Path) -> str:
    return path.resolve().relative_to(root.resolve()).as_posix()


def scan_runs(root: Path) -> list[Path]:
    """Run directories under ``root`` (nested ones too, e.g. cv folds), hidden directories skipped."""
    found: list[Path] = []

    def walk(directory: Path, depth: int) -> None:
        try:
            children = sorted(p for p in directory.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            return
        for child in children:
            if child.name.startswith(".") or child.name in _RUN_INTERNALS or not _PART.fullmatch(child.name):
                continue
            if is_run_dir(child):
                found.append(child)
            elif depth < _SCAN_DEPTH:
                walk(child, depth + 1)

    if root.is_dir():
        walk(root, 1)
    return found


# ---------------------------------------------------------------- reading run files (all optional)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def read_jsonl(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete lines from byte ``offset`` on, and the offset after the last complete line (a line being written waits)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    records = []
    for line in data[:end].splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records, offset + end


def tail(path: Path, max_bytes: int = 12_000) -> str:
    """The end of a text file (the training log), starting at a line boundary."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if size > max_bytes and "\n" in text:
        text = text.split("\n", 1)[1]
    return text


# ---------------------------------------------------------------- status


def _pid_alive(pid: Any, host: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0 or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # Linux: make sure the pid was not reused by another program
        try:
            return b"tunesmith" in cmdline.read_bytes()
        except OSError:
            return False
    return True


def _newer(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_mtime > b.stat().st_mtime
    except OSError:
        return False


def run_status(run: Path, progress: dict[str, Any] | None = None, live: bool | None = None) -> str:
    """``running``, ``finished``, ``cancelled``, ``failed``, ``interrupted`` (resumable) or ``incomplete``.

    Args:
        run: the run directory.
        progress: its progress.json (read when None).
        live: whether this UI's job manager has the run's worker alive (None: judge by the pid in progress.json).
    """
    progress = read_json(run / PROGRESS) if progress is None else progress
    state = progress.get("state") if isinstance(progress, dict) else None
    if live:  # the worker may have written its ending already; the run is over once the process is
        return "running"
    if state in ACTIVE_STATES:
        alive = live if live is not None else _pid_alive(progress.get("pid"), progress.get("host"))
        if alive:
            return "running"
    finished = (run / "metrics.json").is_file() and (run / "model" / "config.json").is_file()
    if state in ("cancelled", "failed") and not (finished and _newer(run / "metrics.json", run / PROGRESS)):
        return state  # (a cancelled run resumed in a terminal and finished there is finished)
    if finished:
        return "finished"
    if state in ACTIVE_STATES:
        return "interrupted"  # its worker died without a word (killed, machine restarted)
    history = run / "history.jsonl"
    if history.is_file() and time.time() - history.stat().st_mtime < _CLI_RUN_FRESH_S:
        return "running"  # a `tunesmith train` in a terminal
    return "interrupted" if (run / "checkpoints").is_dir() else "incomplete"


# ---------------------------------------------------------------- summaries


def _task_record(config: dict[str, Any]):
    from tunesmith.tasks import TASKS

    task = config.get("task")
    if task == "classify" and (config.get("data") or {}).get("multi_label"):
        task = "multilabel"
    return TASKS.get(task)


def main_metric(config: dict[str, Any]) -> tuple[str | None, bool]:
    """The run's eval metric (``training.metric``, ``auto`` resolved for its task) and whether greater is better."""
    record = _task_record(config)
    metric = (config.get("training") or {}).get("metric", "auto")
    if metric in (None, "auto"):
        metric = record.default_metric if record is not None else None
    if metric is None:
        return None, True
    if record is not None and metric in record.metrics:
        return metric, record.metrics[metric]
    return metric, not _LOWER_IS_BETTER.search(metric)


def greater_is_better(name: str, config: dict[str, Any] | None = None) -> bool:
    record = _task_record(config or {})
    if record is not None and name in record.metrics:
        return record.metrics[name]
    return not _LOWER_IS_BETTER.search(name)


def _last_eval(history: list[dict[str, Any]], metric: str) -> float | None:
    for rec in reversed(history):
        if isinstance(rec.get(f"eval_{metric}"), int | float):
            return rec[f"eval_{metric}"]
    return None


def _duration(run: Path, progress: dict[str, Any] | None, metrics: dict[str, Any], history: list[dict[str, Any]]) -> float | None:
    if isinstance(progress, dict) and isinstance(progress.get("started"), int | float):
        end = progress.get("ended") if isinstance(progress.get("ended"), int | float) else None
        if end is None and progress.get("state") in ACTIVE_STATES:
            end = time.time()
        if end is not None:
            return round(end - progress["started"], 1)
    wall = (metrics.get("training") or {}).get("wall_seconds") if isinstance(metrics, dict) else None
    if isinstance(wall, int | float):
        return round(wall, 1)
    times = [r["time"] for r in history if isinstance(r.get("time"), int | float)]
    return round(max(times) - min(times), 1) if len(times) > 1 else None


def _started(run: Path, progress: dict[str, Any] | None, history: list[dict[str, Any]]) -> float | None:
    if isinstance(progress, dict) and isinstance(progress.get("started"), int | float):
        return progress["started"]
    if history and isinstance(history[0].get("time"), int | float):
        return history[0]["time"]
    try:
        return (run / "config.yaml").stat().st_mtime
    except OSError:
        return None


def summarize(root: Path, run: Path, *, live: bool | None = None) -> dict[str, Any]:
    """One row of the runs table: id, task, model, method, main metric, duration, status, started, data."""
    config = read_yaml(run / "config.yaml") or (read_json(run / PROGRESS) or {}).get("config") or {}
    metrics = read_json(run / "metrics.json") or {}
    progress = read_json(run / PROGRESS)
    history, _ = read_jsonl(run / "history.jsonl")
    metric, greater = main_metric(config)
    evaluation = metrics.get("eval") if isinstance(metrics.get("eval"), dict) else {}
    value = evaluation.get(metric) if metric else None
    if not isinstance(value, int | float) or isinstance(value, bool):
        value = _last_eval(history, metric) if metric else None
    status = run_status(run, progress, live)
    model = str((config.get("model") or {}).get("model") or "")
    return {
        "id": run_id_of(root, run),
        "task": config.get("task"),
        "model": model,
        "model_name": Path(model).name if ("/" in model and Path(model).is_absolute()) else model,
        "method": (config.get("model") or {}).get("method"),
        "data": Path(str((config.get("data") or {}).get("train") or "")).name,
        "metric": metric,
        "metric_value": value,
        "greater_is_better": greater,
        "duration_s": _duration(run, progress, metrics, history),
        "started": _started(run, progress, history),
        "status": status,
        "resumable": status in RESUMABLE and (run / "config.yaml").is_file(),
        "steps": (metrics.get("training") or {}).get("steps") if metrics else (progress or {}).get("step"),
    }


def list_runs(root: Path, live: dict[str, bool] | None = None) -> list[dict[str, Any]]:
    """Every run under ``root`` summarised, newest first."""
    live = live or {}
    rows = [summarize(root, run, live=live.get(run_id_of(root, run))) for run in scan_runs(root)]
    return sorted(rows, key=lambda r: -(r["started"] or 0))


def is_generative(config: dict[str, Any]) -> bool:
    return config.get("task") in GENERATIVE_TASKS


def run_detail(root: Path, run_id: str, *, live: bool | None = None) -> dict[str, Any]:
    """Everything the run page shows: summary, config, data, metrics, history, doctor, overfitting, progress, log."""
    run = resolve_run(root, run_id)
    history, offset = read_jsonl(run / "history.jsonl")
    config = read_yaml(run / "config.yaml")
    return {
        "summary": summarize(root, run, live=live),
        "config": config,
        "data": read_json(run / "data.json"),
        "metrics": read_json(run / "metrics.json"),
        "history": history,
        "history_offset": offset,
        "doctor": read_json(run / "doctor.json"),
        "overfitting": read_json(run / "overfitting.json"),
        "progress": read_json(run / PROGRESS),
        "log": tail(run / TRAIN_LOG),
        "has_report": (run / "report.html").is_file(),
        "has_model": (run / "model" / "config.json").is_file(),
        "generative": is_generative(config),
    }


# ---------------------------------------------------------------- comparison


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"training": {"lr": 1e-3}}`` -> ``{"training.lr": 1e-3}`` (lists kept as values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _scalars(evaluation: Any) -> dict[str, float]:
    if not isinstance(evaluation, dict):
        return {}
    return {k: v for k, v in evaluation.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def compare_runs(root: Path, run_ids: list[str]) -> dict[str, Any]:
    """Two or more runs side by side: summaries, config diff, metric deltas against the first run, histories.

    Raises:
        UserError: fewer than two runs, a repeated run, or an id that names no run.
    """
    if len(run_ids) < 2:
        raise UserError(f"compare needs at least two runs, got {len(run_ids)}; pick two or more runs in the runs table")
    if len(set(run_ids)) != len(run_ids):
        raise UserError("compare got the same run twice; pick different runs")
    runs = [resolve_run(root, rid) for rid in run_ids]
    configs = [read_yaml(r / "config.yaml") for r in runs]
    flats = [flatten({k: v for k, v in c.items() if k not in ("out", "resume")}) for c in configs]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    config_rows = [{"key": k, "values": [f.get(k) for f in flats], "differs": len({json.dumps(f.get(k)) for f in flats}) > 1} for k in keys]
    metrics = [read_json(r / "metrics.json") or {} for r in runs]
    evals = [_scalars(m.get("eval")) for m in metrics]
    names = list(dict.fromkeys(k for e in evals for k in e if k != "n"))
    metric_rows = []
    for name in names:
        values = [e.get(name) for e in evals]
        ref = values[0]
        deltas = [None if v is None or ref is None else v - ref for v in values]
        metric_rows.append({"name": name, "values": values, "deltas": deltas, "greater_is_better": greater_is_better(name, configs[0])})
    speed_rows = []
    for name in ("train_samples_per_second", "wall_seconds", "steps", "epochs"):
        values = [(m.get("training") or {}).get(name) for m in metrics]
        if any(isinstance(v, int | float) for v in values):
            speed_rows.append({"name": name, "values": values})
    return {
        "runs": [summarize(root, r) for r in runs],
        "config": config_rows,
        "metrics": metric_rows,
        "training": speed_rows,
        "histories": {rid: read_jsonl(r / "history.jsonl")[0] for rid, r in zip(run_ids, runs)},
    }
