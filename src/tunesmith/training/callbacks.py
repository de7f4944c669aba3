"""Trainer callbacks: a rich progress bar and the history.jsonl writer."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback


class HistoryWriter(TrainerCallback):
    """Appends every Trainer log (step losses, evaluations) to ``history.jsonl`` as it happens.

    Lines are flushed one by one so a crash keeps everything logged before it.
    """

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), "time": round(time.time(), 3), **logs}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


class RichProgress(TrainerCallback):
    """One progress bar over optimizer steps, the latest loss in its description, a line per evaluation."""

    def __init__(self, console: Console, metric: str):
        self.console = console
        self.metric = metric
        self.progress: Progress | None = None
        self.task = None
        self.loss = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.progress = Progress(
            TextColumn("[bold]train[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("", total=state.max_steps, completed=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            desc = f"epoch {state.epoch:.2f}" + (f"  loss {self.loss:.4f}" if self.loss is not None else "")
            self.progress.update(self.task, completed=state.global_step, description=desc)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss = logs["loss"]

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.progress is None or not metrics:
            return
        shown = "  ".join(
            f"{k[5:]} {v:.4f}" for k, v in metrics.items() if k.startswith("eval_") and k[5:] in ("loss", "accuracy", self.metric)
        )
        self.progress.console.print(f"  eval at epoch {state.epoch:.2f}: {shown}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class StepTimer(TrainerCallback):
    """Time spent inside optimizer steps only (no evaluation, checkpointing or data loading).

    Throughput is reported on this time so that runs with different evaluation schedules compare fairly.
    """

    def __init__(self):
        self.seconds = 0.0
        self._start = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self._start = None
