"""Reliability bins and ECE against hand-computed values."""

from __future__ import annotations

import pytest

from tunesmith.evaluate.calibration import expected_calibration_error, reliability_bins


def test_bins_and_ece_by_hand():
    # bin (0.5, 0.6]: 0.55 right, 0.6 wrong -> confidence 0.575, accuracy 0.5; bin (0.9, 1.0]: 0.95 and 1.0 right
    bins = reliability_bins([0.55, 0.6, 0.95, 1.0], [True, False, True, True], n_bins=10)
    filled = [(round(b.low, 1), b.count, b.confidence, b.accuracy) for b in bins if b.count]
    assert filled == [(0.5, 2, pytest.approx(0.575), 0.5), (0.9, 2, pytest.approx(0.975), 1.0)]
    assert expected_calibration_error(bins) == pytest.approx(0.5 * 0.075 + 0.5 * 0.025)
    assert reliability_bins([0.0], [False])[0].count == 1, "confidence 0 falls in the first bin"
    perfect = reliability_bins([0.75] * 4, [True, True, True, False])
    assert expected_calibration_error(perfect) == pytest.approx(0.0)
    assert expected_calibration_error(reliability_bins([], [])) == 0.0
    with pytest.raises(ValueError, match="2 confidences but 1"):
        reliability_bins([0.1, 0.2], [True])
