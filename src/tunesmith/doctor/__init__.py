"""Dataset diagnostics with remedies: ``tunesmith doctor DATA`` and :func:`diagnose`.

Finds what would hurt fine-tuning or mislead its eval score (too few examples, class and language
imbalance, duplicates and train/eval leakage, conflicting and likely wrong labels, truncation, texts
the model's vocabulary does not cover) and names for each a command or an action that fixes it.
"""

from tunesmith.doctor.checks import CHECKS, diagnose
from tunesmith.doctor.findings import SEVERITIES, Finding, Report, Severity, render_table

__all__ = ["CHECKS", "SEVERITIES", "Finding", "Report", "Severity", "diagnose", "render_table"]
