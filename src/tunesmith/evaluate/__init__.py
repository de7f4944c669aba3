"""Metrics and evaluation of finished runs."""

from tunesmith.evaluate.metrics import classification_metrics, majority_baseline

__all__ = ["classification_metrics", "majority_baseline"]
