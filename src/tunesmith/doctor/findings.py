"""What the doctor reports: one :class:`Finding` per problem, gathered in a :class:`Report`.

A finding is plain data (JSON-ready evidence, a remedy the user can run), so the CLI, tests and
other tools read the same thing; rendering to a terminal table lives here too, away from the checks.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]
"""error: training will fail or its eval score cannot be trusted; warning: likely hurts the model; info: worth knowing."""

SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")
MAX_EXAMPLES = 10
"""Example rows kept in a finding's evidence."""

_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


@dataclass
class Finding:
    """One problem found in the data, with the rows that show it and what to do about it.

    Attributes:
        check: id of the check that found it (``duplicates``, ``label_errors``, ...).
        severity: ``error``, ``warning`` or ``info``.
        message: one sentence with the numbers.
        evidence: JSON-ready counts and up to :data:`MAX_EXAMPLES` example rows, each with its file row/line number.
        remedy: a runnable ``tunesmith ...`` command or config key, or the action in words.
    """

    check: str
    severity: Severity
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    remedy: str = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {self.severity!r}")

    def to_dict(self) -> dict[str, Any]:
        """The finding as a JSON-ready dict."""
        return asdict(self)


@dataclass
class Report:
    """Everything :func:`tunesmith.doctor.diagnose` found, errors first.

    Attributes:
        findings: the findings, sorted by severity (stable within one severity: check order).
        summary: what was read and checked: sources, row and class counts, languages, model, timings.
    """

    findings: list[Finding]
    summary: dict[str, Any]

    def __post_init__(self) -> None:
        self.findings = sorted(self.findings, key=lambda f: SEVERITIES.index(f.severity))

    def by_check(self, check: str) -> list[Finding]:
        """The findings of one check."""
        return [f for f in self.findings if f.check == check]

    def counts(self) -> dict[str, int]:
        """Number of findings per severity."""
        return {s: sum(1 for f in self.findings if f.severity == s) for s in SEVERITIES}

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict: ``summary`` and ``findings``."""
        return {"summary": {**self.summary, "findings": self.counts()}, "findings": [f.to_dict() for f in self.findings]}

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON text (non-ASCII kept as is)."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, default=str)


def excerpt(text: str, width: int = 80) -> str:
    """A one-line excerpt of a text: inner whitespace collapsed, cut to ``width`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def format_evidence(evidence: dict[str, Any], max_examples: int = 3) -> str:
    """A short plain-text view of a finding's evidence for the terminal table."""
    lines: list[str] = []
    for key, value in evidence.items():
        if value in ([], {}, None):
            continue
        if isinstance(value, list) and isinstance(value[0], dict):
            lines.extend(_format_example(item) for item in value[:max_examples])
            if len(value) > max_examples:
                lines.append(f"... {len(value) - max_examples} more in --json")
        elif isinstance(value, list):
            shown = ", ".join(map(str, value[:8])) + (", ..." if len(value) > 8 else "")
            lines.append(f"{key}: {shown}")
        elif isinstance(value, dict):
            inner = ", ".join(f"{k}: {_short(v)}" for k, v in list(value.items())[:8])
            lines.append(f"{key}: {inner}" + (", ..." if len(value) > 8 else ""))
        else:
            lines.append(f"{key}: {_short(value)}")
    return "\n".join(lines)


def _format_example(item: dict[str, Any]) -> str:
    parts = []
    for key, value in item.items():
        if key in ("text", "texts"):
            continue
        parts.append(f"{key} {_short(value)}")
    text = item.get("text")
    if text is None and item.get("texts"):
        text = item["texts"][0]
    head = ", ".join(parts)
    return f"{head}: {excerpt(str(text), 50)!r}" if text is not None else head


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) <= 1 else f"{value:.3g}"
    if isinstance(value, list):
        return "/".join(map(_short, value[:6])) + ("/..." if len(value) > 6 else "")
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in list(value.items())[:4]) + "}"
    return str(value)


def render_table(report: Report, title: str | None = None) -> Any:
    """A rich Table of the findings: severity, check, finding, evidence, remedy."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, show_lines=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("check", no_wrap=True)
    for name in ("finding", "evidence", "remedy"):
        table.add_column(name, ratio=1, overflow="fold")
    for f in report.findings:
        # Text, not markup: data and messages hold brackets ("[UNK]") that rich would read as styles.
        table.add_row(
            Text(f.severity, style=_STYLE[f.severity]), Text(f.check), Text(f.message), Text(format_evidence(f.evidence)), Text(f.remedy)
        )
    return table
