"""A run's self-contained HTML report: ``tunesmith report RUN`` or ``write_report(run_dir)``."""

from tunesmith.report.html import render_report, write_report

__all__ = ["render_report", "write_report"]
