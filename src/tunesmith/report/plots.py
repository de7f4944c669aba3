"""Report figures as inline base64 PNGs (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any


def _figure(width: float = 6.0, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height), dpi=100)


def _png(plt, fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def img_tag(png_base64: str, alt: str) -> str:
    """An ``<img>`` with the PNG inline, so the page needs no other file."""
    import html

    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png_base64}">'


def training_curves(history: Sequence[dict[str, Any]]) -> str | None:
    """Train loss per logged step and every eval_* metric per evaluation; None when there is nothing to plot."""
    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    evals = [h for h in history if "step" in h and any(k.startswith("eval_") for k in h)]
    metric_names = sorted(
        {k for h in evals for k, v in h.items() if k.startswith("eval_") and isinstance(v, int | float)}
        - {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}
    )
    if not train and not evals:
        return None
    plt, fig, (ax_loss, ax_metric) = _figure_pair()
    if train:
        ax_loss.plot([s for s, _ in train], [v for _, v in train], label="train loss", lw=1)
    if any("eval_loss" in h for h in evals):
        ax_loss.plot(
            [h["step"] for h in evals if "eval_loss" in h], [h["eval_loss"] for h in evals if "eval_loss" in h], "o-", label="eval loss"
        )
    ax_loss.set_xlabel("step")
    ax_loss.set_title("loss")
    ax_loss.legend()
    for name in metric_names:
        if name == "eval_loss":
            continue
        points = [(h["step"], h[name]) for h in evals if name in h]
        ax_metric.plot([s for s, _ in points], [v for _, v in points], "o-", label=name.removeprefix("eval_"))
    ax_metric.set_xlabel("step")
    ax_metric.set_title("eval metrics")
    if ax_metric.lines:
        ax_metric.legend(fontsize="small")
    return _png(plt, fig)


def _figure_pair():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.4), dpi=100)
    return plt, fig, axes


def confusion_heatmap(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> str:
    """Rows: gold label, columns: predicted label, each cell its count."""
    size = max(3.5, 0.5 * len(labels) + 2.0)
    plt, fig, ax = _figure(size, size * 0.85)
    im = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels=labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels=labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _png(plt, fig)


def reliability_diagram(bins: Sequence[Any], ece: float) -> str:
    """Accuracy per confidence bin against the diagonal of perfect calibration, with each bin's text count."""
    plt, fig, (ax, ax_count) = _figure_pair()
    filled = [b for b in bins if b.count]
    width = bins[0].high - bins[0].low if bins else 0.1
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
    ax.bar([b.low for b in filled], [b.accuracy for b in filled], width=width, align="edge", edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([b.confidence for b in filled], [b.accuracy for b in filled], "o", color="black", ms=3, label="mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (probability of the predicted label)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability diagram (ECE {ece:.4f})")
    ax.legend(fontsize="small", loc="upper left")
    ax_count.bar([b.low for b in bins], [b.count for b in bins], width=width, align="edge", edgecolor="black")
    ax_count.set_yscale("log" if max((b.count for b in bins), default=0) > 50 else "linear")
    ax_count.set_xlim(0, 1)
    ax_count.set_xlabel("confidence")
    ax_count.set_title("eval texts per bin")
    return _png(plt, fig)
