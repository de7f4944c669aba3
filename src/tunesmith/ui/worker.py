"""The UI's training worker: ``python -m tunesmith.ui.worker --out RUN (--config-json JSON | --resume)``.

It is `tunesmith train` in its own process (a crash, or a model that eats the memory, cannot take the
UI down) with one Trainer callback added, :class:`ProgressFile`, which writes ``RUN/progress.json``
(state, step of max steps, epoch, latest loss, latest eval metric, elapsed time and ETA) at most twice
a second; the UI pushes it to the page.

Cancel is SIGINT, handled by the runner (:mod:`tunesmith.training.interrupt`): the Trainer finishes the
step, saves a checkpoint there and stops; the worker records the step and exits with code 130, and
``--resume`` continues from that checkpoint. Exit codes follow the CLI: 0 finished, 2 bad config or data
(the message is in progress.json), 130 cancelled, 1 anything else (the traceback is in the log).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from tunesmith.training.rundir import atomic_write_json
from tunesmith.ui.rundirs import PROGRESS, read_json

WRITE_EVERY_S = 0.5


class ProgressState:
    """The content of progress.json, written atomically (the UI reads it while it changes)."""

    def __init__(self, path: Path, metric: str | None):
        self.path = path
        previous = read_json(path) or {}
        self.data: dict[str, Any] = {
            "state": "preparing",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": previous.get("started") or time.time(),
            "ended": None,
            "step": None,
            "max_steps": None,
            "epoch": None,
            "loss": None,
            "metric": metric,
            "metric_value": None,
            "eval": {},
            "elapsed_s": None,
            "eta_s": None,
            "error": None,
            "exit_code": None,
            "resumed_from_step": None,
            "config": previous.get("config"),
        }
        self._written = 0.0

    def update(self, force: bool = False, **values: Any) -> None:
        self.data.update(values)
        now = time.time()
        if force or now - self._written >= WRITE_EVERY_S:
            self.data["updated"] = now
            atomic_write_json(self.path, self.data)
            self._written = now


class ProgressFile(TrainerCallback):
    """Trainer callback: keeps progress.json current."""

    def __init__(self, state: ProgressState):
        self.state = state
        self._t0 = 0.0
        self._step0 = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()
        self._step0 = state.global_step
        self.state.update(
            force=True,
            state="training",
            step=state.global_step,
            max_steps=state.max_steps,
            epoch=state.epoch or 0.0,
            resumed_from_step=state.global_step or None,
        )

    def on_step_end(self, args, state, control, **kwargs):
        elapsed = time.perf_counter() - self._t0
        done = state.global_step - self._step0
        eta = (state.max_steps - state.global_step) * elapsed / done if done > 0 else None
        self.state.update(
            step=state.global_step,
            max_steps=state.max_steps,
            epoch=round(state.epoch or 0.0, 4),
            elapsed_s=round(elapsed, 1),
            eta_s=round(eta, 1) if eta is not None else None,
        )

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and isinstance(logs.get("loss"), int | float):
            self.state.update(loss=logs["loss"])

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics:
            return
        values = {k[5:]: v for k, v in metrics.items() if k.startswith("eval_") and isinstance(v, int | float)}
        metric = self.state.data.get("metric")
        self.state.update(force=True, eval=values, metric_value=values.get(metric) if metric else None, step=state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self.state.update(force=True, state="finishing", step=state.global_step, eta_s=0.0)


def _metric_of(config) -> str | None:
    try:
        return config.metric
    except Exception:  # an unregistered task: progress without an eval metric
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunesmith.ui.worker", description="train one run for `tunesmith ui`")
    parser.add_argument("--out", required=True, help="the run directory")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config-json", help="the run's config as JSON (nested, as config.yaml)")
    source.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    args = parser.parse_args(argv)

    run_dir = Path(args.out)
    progress = ProgressState(run_dir / PROGRESS, None)
    progress.update(force=True)

    from rich.console import Console

    from tunesmith.config import build_config, load_config
    from tunesmith.errors import UserError

    code, error, cancelled_at = 0, None, None
    try:
        if args.resume:
            config = load_config(run_dir / "config.yaml", {"out": str(run_dir), "resume": True})
        else:
            config = build_config(json.loads(args.config_json), {"out": str(run_dir), "resume": False})
        progress.update(force=True, metric=_metric_of(config))
        from tunesmith.training.runner import train

        console = Console(stderr=True, force_terminal=False, width=120)
        # data-parallel ranks cannot carry a Python callback: their progress shows through history.jsonl only
        parallel = (getattr(config.training, "num_processes", 1) or 1) > 1
        train(config, console=console, callbacks=[] if parallel else [ProgressFile(progress)])
    except UserError as exc:
        code, error = exc.exit_code, str(exc)
        print(f"error: {exc}", file=sys.stderr)
    except KeyboardInterrupt as exc:  # the runner's TrainingInterrupted names the checkpoint it saved
        code = 130
        checkpoint = getattr(exc, "checkpoint", None)
        if checkpoint and Path(checkpoint).name.split("-")[-1].isdigit():
            cancelled_at = int(Path(checkpoint).name.split("-")[-1])
    except SystemExit as exc:  # a library that exits instead of raising
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:
        traceback.print_exc()
        code, error = 1, f"{type(exc).__name__}: {exc}"
    state = {0: "finished", 130: "cancelled"}.get(code, "failed")
    progress.update(force=True, state=state, ended=time.time(), exit_code=code, error=error, eta_s=None, cancelled_at_step=cancelled_at)
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
