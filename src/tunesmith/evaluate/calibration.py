"""Calibration of a classifier's confidence: reliability bins and the expected calibration error (ECE).

A model is calibrated when, of the texts it labels with confidence p, a fraction p is right. ECE
(Naeini et al. 2015; Guo et al. 2017) splits the confidences into equal-width bins and averages
|accuracy - mean confidence| over the bins, weighted by how many texts fall in each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_BINS = 10


@dataclass
class CalibrationBin:
    """Texts whose confidence lies in ``(low, high]`` (the first bin also takes ``low`` itself)."""

    low: float
    high: float
    count: int
    confidence: float | None
    accuracy: float | None


def reliability_bins(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = DEFAULT_BINS) -> list[CalibrationBin]:
    """Equal-width bins over [0, 1]: each bin's text count, mean confidence and accuracy (None when empty)."""
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences but {len(correct)} correctness flags")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf = np.clip(np.asarray(confidences, dtype=float), 0.0, 1.0)
    right = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        members = index == b
        n = int(members.sum())
        bins.append(
            CalibrationBin(
                low=float(edges[b]),
                high=float(edges[b + 1]),
                count=n,
                confidence=float(conf[members].mean()) if n else None,
                accuracy=float(right[members].mean()) if n else None,
            )
        )
    return bins


def expected_calibration_error(bins: Sequence[CalibrationBin]) -> float:
    """Sum over bins of (texts in bin / all texts) x |accuracy - mean confidence|; 0 for no texts."""
    total = sum(b.count for b in bins)
    if total == 0:
        return 0.0
    return float(sum(b.count / total * abs(b.accuracy - b.confidence) for b in bins if b.count))
