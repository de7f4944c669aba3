"""The overfitting monitor: watches the train/eval gap during a run and says what to change.

It follows the train loss from the Trainer's logs (averaged over each evaluation interval) and every evaluation's loss and metric.
When the eval metric stops improving, or the eval loss rises, for :data:`PATIENCE` evaluations
while the train loss keeps falling, it warns on the console. At the end it writes
``overfitting.json`` into the run directory: a verdict (``ok``, ``overfitting``, ``underfitting``),
the numbers behind it, the epoch of the best evaluation and remedies as flags and commands that exist.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from transformers import TrainerCallback

from tunesmith.training.rundir import atomic_write_json

OVERFITTING_FILE = "overfitting.json"
PATIENCE = 2
"""Evaluations without improvement (or with rising eval loss) while train loss falls before a warning."""
TRAIN_FELL = 0.02
"""A train loss lower by more than this share counts as having fallen (smaller moves are noise)."""
STILL_FALLING = 0.05
"""A train loss that fell by more than this share over the last evaluation interval is still falling."""
STILL_HIGH = 0.5
"""A final train loss above this share of the first logged one is still high."""
MIN_CHANGE = 1e-4
"""Smaller metric changes than this count as no change."""


@dataclass
class Evaluation:
    """One evaluation, with the train loss at that point."""

    step: int
    epoch: float
    train_loss: float | None  # mean of the train losses logged since the previous evaluation
    eval_loss: float | None
    metric: float | None

    @property
    def gap(self) -> float | None:
        """Eval loss minus train loss: a gap that widens while train loss falls is memorisation."""
        if self.train_loss is None or self.eval_loss is None:
            return None
        return self.eval_loss - self.train_loss


class OverfitMonitor(TrainerCallback):
    """Trainer callback that warns about overfitting and writes ``overfitting.json`` at the end.

    Args:
        console: where warnings go (the console of the run's progress bar, so lines land above it).
        run_dir: run directory to write ``overfitting.json`` into; None writes nothing.
        config: the run's :class:`~tunesmith.config.RunConfig`, used to tailor the remedies
            (current weight decay, method, data file); optional.
        patience: evaluations without improvement before a warning.
    """

    def __init__(self, console: Console, run_dir: Path | str | None = None, config: Any = None, *, patience: int = PATIENCE):
        self.console = console
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.config = config
        self.patience = patience
        self.evaluations: list[Evaluation] = []
        self.warnings: list[str] = []
        self.first_train_loss: float | None = None
        self._interval_losses: list[float] = []
        self._last_loss: float | None = None
        self.metric_name: str | None = None
        self.greater_is_better = True
        self._warned: set[str] = set()
        self.diagnosis: dict[str, Any] | None = None

    # ------------------------------------------------------------ Trainer hooks

    def on_train_begin(self, args, state, control, **kwargs):
        self._read_args(args)
        if not self.evaluations and getattr(state, "log_history", None):
            # --resume: the Trainer restored the history of the steps before the checkpoint
            for logs in state.log_history:
                if "eval_loss" in logs or any(k.startswith("eval_") for k in logs):
                    self._record_eval(logs, logs.get("step", 0), logs.get("epoch", 0.0), warn=False)
                elif "loss" in logs:
                    self._record_loss(logs["loss"])

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and "eval_loss" not in logs:
            self._record_loss(logs["loss"])

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics:
            return
        self._read_args(args)
        self._record_eval(metrics, state.global_step, state.epoch or 0.0, warn=getattr(state, "is_world_process_zero", True))

    def on_train_end(self, args, state, control, **kwargs):
        self._read_args(args)
        self.diagnosis = self.diagnose(weight_decay=getattr(args, "weight_decay", None))
        if not getattr(state, "is_world_process_zero", True):
            return
        if self.run_dir is not None:
            atomic_write_json(self.run_dir / OVERFITTING_FILE, self.diagnosis)
        if self.diagnosis["verdict"] != "ok":
            where = f"; remedies in {self.run_dir / OVERFITTING_FILE}" if self.run_dir is not None else ""
            self.console.print(f"[yellow]{self.diagnosis['verdict']}:[/] {self.diagnosis['reason']}{where}", highlight=False)

    # ------------------------------------------------------------ recording

    def _read_args(self, args) -> None:
        name = getattr(args, "metric_for_best_model", None) or "loss"
        self.metric_name = name[5:] if name.startswith("eval_") else name
        gib = getattr(args, "greater_is_better", None)
        self.greater_is_better = (not self.metric_name.endswith("loss")) if gib is None else bool(gib)

    def _record_loss(self, loss: float) -> None:
        if loss is None or not math.isfinite(loss):
            return
        if self.first_train_loss is None:
            self.first_train_loss = float(loss)
        self._interval_losses.append(float(loss))
        self._last_loss = float(loss)

    def _train_loss_now(self) -> float | None:
        """The train loss for an evaluation: the mean of the logs since the previous one.

        Each log already averages the loss over its logging steps; averaging the interval smooths
        further without the lag of a moving average across intervals. With no log in the interval
        (logging rarer than evaluation) the last logged value stands in.
        """
        if self._interval_losses:
            loss = sum(self._interval_losses) / len(self._interval_losses)
            self._interval_losses = []
            return loss
        return self._last_loss

    def _record_eval(self, metrics: dict[str, Any], step: int, epoch: float, *, warn: bool) -> None:
        metric = metrics.get(f"eval_{self.metric_name}") if self.metric_name else None
        self.evaluations.append(
            Evaluation(
                step=int(step),
                epoch=round(float(epoch), 4),
                train_loss=self._train_loss_now(),
                eval_loss=_number(metrics.get("eval_loss")),
                metric=_number(metric),
            )
        )
        for kind, message in self._current_warnings():
            if kind in self._warned:
                continue
            self._warned.add(kind)
            self.warnings.append(message)
            if warn:
                self.console.print(f"[yellow]overfitting:[/] {message}", highlight=False)

    # ------------------------------------------------------------ analysis

    def _better(self, a: float, b: float) -> bool:
        """Whether metric value ``a`` beats ``b`` by more than noise."""
        return a > b + MIN_CHANGE if self.greater_is_better else a < b - MIN_CHANGE

    def best_index(self) -> int | None:
        """Index of the evaluation with the best metric (the first of equals), or None without metrics."""
        best = None
        for i, e in enumerate(self.evaluations):
            if e.metric is None:
                continue
            if best is None or self._better(e.metric, self.evaluations[best].metric):
                best = i
        return best

    def _train_fell(self, start: int, end: int) -> bool:
        """Train loss fell from evaluation ``start`` to evaluation ``end`` (net, by more than :data:`TRAIN_FELL`).

        A net fall rather than a fall at every evaluation: the train loss of small batches is noisy.
        """
        a, b = self.evaluations[start].train_loss, self.evaluations[end].train_loss
        return a is not None and b is not None and b < a * (1 - TRAIN_FELL)

    def _gap_note(self, start: int, end: int) -> str:
        a, b = self.evaluations[start].gap, self.evaluations[end].gap
        return f"; the eval-train loss gap grew {a:.2f} -> {b:.2f}" if a is not None and b is not None and b > a else ""

    def _current_warnings(self) -> list[tuple[str, str]]:
        """The warning conditions that hold at the latest evaluation."""
        evals, p = self.evaluations, self.patience
        if len(evals) < p + 1:
            return []
        first, last = evals[-p - 1], evals[-1]
        span = _span(first.epoch, last.epoch, p)
        if not self._train_fell(len(evals) - p - 1, len(evals) - 1):
            return []
        found = []
        losses = [e.eval_loss for e in evals[-p - 1 :]]
        if all(x is not None for x in losses) and all(b > a for a, b in zip(losses, losses[1:])):
            found.append(
                (
                    "eval_loss",
                    f"eval loss rose {first.eval_loss:.2f} -> {last.eval_loss:.2f} over {span} while train loss fell "
                    f"{first.train_loss:.2f} -> {last.train_loss:.2f}: the model is memorising the training set",
                )
            )
        best = self.best_index()
        if best is not None and best <= len(evals) - p - 1:
            b = evals[best]
            found.append(
                (
                    "metric",
                    f"eval {self.metric_name} has not improved for {len(evals) - 1 - best} evaluations (best {b.metric:.4f} at epoch "
                    f"{b.epoch:g}) while train loss fell {first.train_loss:.2f} -> {last.train_loss:.2f}: the model is memorising the "
                    "training set",
                )
            )
        return found

    def verdict(self) -> tuple[str, str]:
        """``(verdict, reason)`` from the whole history; see :meth:`diagnose`."""
        evals, p = self.evaluations, self.patience
        if len(evals) < 2:
            return "ok", f"only {len(evals)} evaluation{'s' if len(evals) != 1 else ''}: too few to see a trend"
        best = self.best_index()
        last = len(evals) - 1
        # overfitting: the end state shows eval getting worse (or stuck) while train loss keeps falling
        if best is not None and best <= last - p and self._train_fell(best, last):
            b, e = evals[best], evals[last]
            return "overfitting", (
                f"eval {self.metric_name} peaked at epoch {b.epoch:g} ({b.metric:.4f}) and did not improve over the last "
                f"{last - best} evaluations while train loss fell {b.train_loss:.2f} -> {e.train_loss:.2f}{self._gap_note(best, last)}"
            )
        losses = [x.eval_loss for x in evals[-p - 1 :]]
        if (
            len(evals) > p
            and all(x is not None for x in losses)
            and all(b > a for a, b in zip(losses, losses[1:]))
            and self._train_fell(last - p, last)
        ):
            a, e = evals[last - p], evals[last]
            return "overfitting", (
                f"eval loss rose {a.eval_loss:.2f} -> {e.eval_loss:.2f} over the last {p} evaluations while train loss fell "
                f"{a.train_loss:.2f} -> {e.train_loss:.2f}{self._gap_note(last - p, last)}"
            )
        # underfitting: still learning when training stopped
        prev, end = evals[-2], evals[-1]
        improving = best == last and end.metric is not None and prev.metric is not None and self._better(end.metric, prev.metric)
        if best is None and end.eval_loss is not None and prev.eval_loss is not None:
            improving = end.eval_loss < prev.eval_loss
        falling = prev.train_loss is not None and end.train_loss is not None and end.train_loss < prev.train_loss * (1 - STILL_FALLING)
        high = self.first_train_loss is not None and end.train_loss is not None and end.train_loss > STILL_HIGH * self.first_train_loss
        if improving and (falling or high):
            what = "still falling" if falling else "still high"
            return "underfitting", (
                f"the last evaluation was the best so far ({self.metric_name} {_fmt(prev.metric)} -> {_fmt(end.metric)}) and train "
                f"loss is {what} ({_fmt(prev.train_loss, 2)} -> {_fmt(end.train_loss, 2)}): more epochs should help"
            )
        return "ok", (
            f"neither overfitting (eval {self.metric_name} stuck or eval loss rising while train loss falls) nor underfitting "
            "(eval still improving at the end)"
        )

    def diagnose(self, *, weight_decay: float | None = None) -> dict[str, Any]:
        """The verdict, the numbers behind it and the remedies, as written to ``overfitting.json``.

        Verdicts:
            ``overfitting``: at the end, the eval metric has not improved for ``patience`` or more
            evaluations while the train loss fell since its best, or the eval loss rose at each of the
            last ``patience`` evaluations while the train loss fell over them.
            ``underfitting``: the last evaluation was the best and the train loss is still falling
            (or still above half its first value): train longer.
            ``ok``: neither.
        """
        verdict, reason = self.verdict()
        best = self.best_index()
        best_eval = self.evaluations[best] if best is not None else None
        if weight_decay is None and self.config is not None:
            weight_decay = self.config.training.weight_decay
        remedies = self._remedies(verdict, best_eval, weight_decay)
        return {
            "verdict": verdict,
            "reason": reason,
            "metric": self.metric_name,
            "greater_is_better": self.greater_is_better,
            "best_epoch": best_eval.epoch if best_eval else None,
            "best_step": best_eval.step if best_eval else None,
            "best_metric": best_eval.metric if best_eval else None,
            "evaluations": [{**asdict(e), "gap": e.gap} for e in self.evaluations],
            "warnings": list(self.warnings),
            "remedies": remedies,
        }

    # ------------------------------------------------------------ remedies

    def _retrain(self, tag: str, *flags: str) -> str:
        """A runnable `tunesmith train` command: this run's config with ``flags`` on top, into a new directory."""
        if self.run_dir is None:
            return shlex.join(["tunesmith", "train", *flags])
        out = f"{self.run_dir}-{tag}"
        return shlex.join(["tunesmith", "train", "--config", str(self.run_dir / "config.yaml"), "--out", out, *flags])

    def _remedies(self, verdict: str, best: Evaluation | None, weight_decay: float | None) -> list[dict[str, str]]:
        cfg = self.config
        remedies: list[dict[str, str]] = []

        def add(flag: str, key: str, why: str, tag: str) -> None:
            remedies.append({"remedy": flag, "key": key, "why": why, "command": self._retrain(tag, *shlex.split(flag))})

        if verdict == "underfitting":
            epochs = cfg.training.epochs if cfg is not None else (self.evaluations[-1].epoch if self.evaluations else 3)
            more = max(2, math.ceil(epochs * 2))
            add(f"--epochs {more}", f"training.epochs: {more}", "eval was still improving when training stopped", f"epochs{more}")
            if cfg is not None and cfg.training.early_stopping:
                remedies[-1]["why"] += "; early stopping still guards against going too far"
            return remedies
        if verdict != "overfitting":
            return remedies
        if best is not None:
            epochs = max(1, math.ceil(best.epoch - 1e-6))
            add(
                f"--epochs {epochs}",
                f"training.epochs: {epochs}",
                f"stop where eval {self.metric_name} was best (epoch {best.epoch:g})",
                f"epochs{epochs}",
            )
        if weight_decay is None or weight_decay < 0.1:
            add("--weight-decay 0.1", "training.weight_decay: 0.1", "stronger L2 pull on the weights", "wd0.1")
        if cfg is None or cfg.model.dropout is None or cfg.model.dropout < 0.2:
            add("--dropout 0.2", "model.dropout: 0.2", "more dropout in the encoder", "dropout0.2")
        if (cfg is None or cfg.task == "classify") and (cfg is None or cfg.training.label_smoothing < 0.1):
            add("--label-smoothing 0.1", "training.label_smoothing: 0.1", "softer targets make overconfident memorising costlier", "ls0.1")
        if cfg is None or not cfg.training.early_stopping:
            add("--early-stopping 2", "training.early_stopping: 2", "stop after 2 evaluations without improvement", "es2")
        if cfg is None or cfg.model.method == "full":
            add(
                "--method lora --lora-r 8",
                "model.method: lora, model.lora_r: 8",
                "train far fewer weights (low-rank adapters)",
                "lora",
            )
        remedies.append(self._augment_remedy())
        curve = ["tunesmith", "curve", cfg.data.train if cfg is not None else "DATA"]
        if cfg is not None:
            for flag, value in (("--eval", cfg.data.eval), ("--text-col", cfg.data.text_col), ("--label-col", cfg.data.label_col)):
                if value:
                    curve += [flag, value]
        remedies.append(
            {
                "remedy": "more data",
                "key": "",
                "why": "label more examples; the learning curve estimates what doubling the data would add",
                "command": shlex.join(curve),
            }
        )
        return remedies

    def _augment_remedy(self) -> dict[str, str]:
        why = "EDA copies of each training text (swap, delete, insert words); the eval split is held out first and never augmented"
        if self.config is None:
            return {
                "remedy": "augment",
                "key": "",
                "why": why,
                "command": "tunesmith augment DATA --method eda --factor 2 --out DATA-eda.csv",
            }
        data = self.config.data
        stem = Path(data.train).stem or "data"
        base = str(Path(data.train).with_name(f"{stem}-eda.csv")) if Path(data.train).suffix else f"{stem}-eda.csv"
        cmd = ["tunesmith", "augment", data.train, "--method", "eda", "--factor", "2", "--out", base]
        for flag, value in (("--text-col", data.text_col), ("--label-col", data.label_col)):
            if value:
                cmd += [flag, value]
        cmd += ["--seed", str(self.config.training.seed)]
        eval_file = data.eval
        if eval_file is None:
            # hold out the same eval split this run used, un-augmented, so the scores compare
            eval_file = str(Path(base).with_name(f"{stem}-eval.csv"))
            cmd += ["--eval-out", eval_file, "--eval-fraction", f"{data.eval_fraction:g}"]
        flags = ["--train", base, "--eval", eval_file]
        for flag, value in (("--text-col", data.text_col), ("--label-col", data.label_col)):
            if value:
                flags += [flag, value]
        return {"remedy": "augment", "key": "", "why": why, "command": f"{shlex.join(cmd)} && {self._retrain('eda', *flags)}"}


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _fmt(value: float | None, digits: int = 4) -> str:
    return "?" if value is None else f"{value:.{digits}f}"


def _span(start: float, end: float, evaluations: int) -> str:
    """The span of ``evaluations`` evaluations: "2 epochs" when they fall on whole epochs, else "2 evaluations"."""
    width = end - start
    if width > 0 and abs(width - round(width)) < 0.02 and round(width) == evaluations:
        return f"{round(width)} epochs"
    return f"{evaluations} evaluations"
