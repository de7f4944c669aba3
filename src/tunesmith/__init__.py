"""tunesmith: fine-tune language models on the data you actually have, and know whether it worked."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from tunesmith.run import Run


def train(config: Any = None, **overrides: Any) -> Run:
    """Fine-tune as the config says; see :func:`tunesmith.training.runner.train`."""
    from tunesmith.training.runner import train as _train

    return _train(config, **overrides)


def distill(teacher: Any = None, student: str = "layers:every-other", **kwargs: Any) -> Run:
    """Distil a classify run into a smaller student; see :func:`tunesmith.compress.distill.distill`."""
    from tunesmith.compress.distill import distill as _distill

    return _distill(teacher, student, **kwargs)


def load(run_dir: Any) -> Run:
    """Open a finished run directory; see :class:`tunesmith.run.Run`."""
    from tunesmith.run import Run

    return Run.load(run_dir)


__all__ = ["__version__", "distill", "load", "train"]
