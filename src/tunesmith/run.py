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
        self._model = None
        self._tokenizer = None
        self._precision: str | None = None

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
    def labels(self) -> list[str]:
        cfg = json.loads((self.dir / MODEL / "config.json").read_text(encoding="utf-8"))
        id2label = cfg.get("id2label") or {}
        return [id2label[str(i)] for i in range(len(id2label))]

    def _ensure_loaded(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from tunesmith.training.hardware import resolve_precision
        from tunesmith.training.runner import quiet_transformers

        quiet_transformers()
        self._tokenizer = AutoTokenizer.from_pretrained(self.dir / MODEL)
        self._model = AutoModelForSequenceClassification.from_pretrained(self.dir / MODEL)
        self._model.eval()
        self._precision = resolve_precision("auto")

    def predict(self, texts: Sequence[str], *, batch_size: int | None = None) -> list[dict[str, Any]]:
        """Label, score and per-label probabilities for each text, in input order."""
        from tunesmith.tasks import classify

        if isinstance(texts, str):
            raise UserError("predict expects a list of texts, got a single string; wrap it: run.predict([text])")
        self._ensure_loaded()
        probs = classify.predict_proba(
            self._model,
            self._tokenizer,
            list(texts),
            max_length=self.config.data.max_length,
            batch_size=batch_size or self.config.training.eval_batch_size,
            precision=self._precision,
        )
        return classify.prediction_rows(probs, self.labels)

    def evaluate(
        self, data: str, *, text_col: str | None = None, label_col: str | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Metrics and per-text predictions of this run on a labelled file or packaged dataset.

        Raises:
            UserError: on unreadable data or labels the run was not trained on.
        """
        from tunesmith.data import load_texts
        from tunesmith.tasks import classify

        texts = load_texts(
            data,
            text_col or self.config.data.text_col,
            label_col or self.config.data.label_col,
            encoding=self.config.data.encoding,
        )
        known = set(self.labels)
        unknown = sorted({lab for lab in texts.labels if lab not in known})
        if unknown:
            rows = [r for r, lab in zip(texts.rows, texts.labels) if lab not in known][:5]
            raise UserError(
                f"{data}: label(s) {', '.join(map(repr, unknown))} (first at lines {', '.join(map(str, rows))}) were never seen in training; "
                f"this run knows {', '.join(map(repr, self.labels))}"
            )
        self._ensure_loaded()
        return classify.evaluate_texts(
            self._model,
            self._tokenizer,
            texts.texts,
            texts.labels,
            self.labels,
            train_labels=None,
            max_length=self.config.data.max_length,
            batch_size=self.config.training.eval_batch_size,
            precision=self._precision,
            rows=texts.rows,
        )


def load(run_dir: str | Path) -> Run:
    """Open a finished run: ``tunesmith.load("runs/spam").predict(["..."])``."""
    return Run.load(run_dir)
