"""A finished run: reload it, predict with it, evaluate it on new data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunesmith.config import RunConfig, load_config
from tunesmith.errors import UserError
from tunesmith.training.rundir import MODEL


class Run:
    """A run directory written by :func:`tunesmith.train`.

    Example:
        >>> run = tunesmith.load("runs/spam")
        >>> run.predict(["WIN a free prize now!"])[0]["label"]
        'spam'
    """

    def __init__(self, run_dir: Path, config: RunConfig):
        self.dir = run_dir
        self.config = config
        self._predictor = None

    @classmethod
    def load(cls, run_dir: str | Path) -> Run:
        """Open a run directory (the model itself loads lazily, on first use).

        Raises:
            UserError: when the directory is not a finished tunesmith run.
        """
        path = Path(run_dir)
        if not path.is_dir():
            raise UserError(f"run directory not found: {path}; pass the --out directory of a finished `tunesmith train`")
        if not (path / "config.yaml").is_file():
            raise UserError(f"{path} is not a tunesmith run (no config.yaml); pass the --out directory of `tunesmith train`")
        if not (path / MODEL / "config.json").is_file():
            raise UserError(
                f"{path} has no trained model yet (model/ is missing): the run did not finish; continue it with `tunesmith train --out {path} --resume`"
            )
        return cls(path, load_config(path / "config.yaml"))

    @property
    def metrics(self) -> dict[str, Any]:
        """The run's metrics.json."""
        return json.loads((self.dir / "metrics.json").read_text(encoding="utf-8"))

    @property
    def predictor(self):
        """The task's predictor for this run's model (loaded once, on first use)."""
        if self._predictor is None:
            from tunesmith.tasks import task_for
            from tunesmith.training.runner import quiet_transformers

            quiet_transformers()
            self._predictor = task_for(self.config).load_predictor(self.dir / MODEL, self.config)
        return self._predictor

    @property
    def labels(self) -> list[str]:
        """Label names (classify) or target names (regress)."""
        return self.predictor.labels

    def predict(self, texts: Sequence[str], *, batch_size: int | None = None) -> list[dict[str, Any]]:
        """One prediction dict per text, in input order (``label``/``score``/``probabilities`` for classify,
        ``value``/``values`` for regress)."""
        if isinstance(texts, str):
            raise UserError("predict expects a list of texts, got a single string; wrap it: run.predict([text])")
        return self.predictor.predict(list(texts), batch_size=batch_size)

    def evaluate(
        self, data: str | None = None, *, text_col: str | None = None, label_col: str | None = None, **options: Any
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Metrics and per-text predictions of this run on a labelled file or packaged dataset.

        A generative run (sft, clm) also takes ``data=None`` (its own eval split, the same seeded
        split as in training) and the options ``limit`` (eval prompts answered for BLEU/chrF) and
        ``max_new_tokens``.

        Raises:
            UserError: on unreadable data or labels the run was not trained on.
        """
        from tunesmith.tasks import task_for

        generative = getattr(task_for(self.config).load_predictor, "evaluates_own_split", False)
        options = {k: v for k, v in options.items() if v is not None}
        if not generative and (data is None or options):
            what = "needs --data FILE (a labelled file or packaged dataset)" if data is None else f"takes no {', '.join(options)}"
            raise UserError(f"evaluating a {self.config.task} run {what}; only generative runs (sft, clm) score their own eval split")
        return self.predictor.evaluate(
            data, text_col=text_col or self.config.data.text_col, label_col=label_col or self.config.data.label_col, **options
        )


def load(run_dir: str | Path) -> Run:
    """Open a finished run: ``tunesmith.load("runs/spam").predict(["..."])``."""
    return Run.load(run_dir)
