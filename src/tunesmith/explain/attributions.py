"""Why did a classify run predict that? Integrated gradients per word, and the last layer's [CLS] attention.

Integrated gradients (Sundararajan et al. 2017) on the input word embeddings: the straight path from a
baseline (every ordinary token replaced by [PAD]'s embedding, [CLS]/[SEP] kept) to the text, the target
logit's gradient averaged along it by the trapezoid rule, times (input - baseline), summed over the hidden
size. The attributions then add up to logit(text) - logit(baseline); what they miss is reported as the
completeness gap, which shrinks as ``steps`` grows.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError

METHODS = ("ig",)
SUPPORTED = "classify (single-label) and classify --multi-label"


@dataclass
class WordAttribution:
    """One word of the text: its characters ``text[start:end]``, integrated gradient and [CLS] attention."""

    word: str
    start: int
    end: int
    attribution: float
    attention: float


@dataclass
class Explanation:
    """Why the model gave ``text`` the score it gave ``target``."""

    text: str
    label: str
    target: str
    target_probability: float
    logit: float
    baseline_logit: float
    completeness_gap: float
    words: list[WordAttribution] = field(default_factory=list)
    method: str = "ig"
    steps: int = 32

    @property
    def relative_gap(self) -> float:
        """|gap| / |logit(text) - logit(baseline)|: 0 when the attributions account for the whole difference."""
        delta = abs(self.logit - self.baseline_logit)
        return abs(self.completeness_gap) / delta if delta > 0 else 0.0

    def top_words(self, n: int = 5) -> list[WordAttribution]:
        """The ``n`` words with the largest |attribution|."""
        return sorted(self.words, key=lambda w: -abs(w.attribution))[:n]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "relative_gap": self.relative_gap}


def explain(
    run_dir: str | Path,
    texts: Sequence[str],
    *,
    target: str | None = None,
    steps: int = 32,
    method: str = "ig",
) -> list[Explanation]:
    """Word attributions (integrated gradients) and [CLS] attention for each text, from a classify run.

    Args:
        run_dir: a finished classify (or multi-label classify) run directory.
        texts: the texts to explain.
        target: the label whose logit is explained; default: each text's predicted (most probable) label.
        steps: interpolation steps between the baseline and the text (more: smaller completeness gap).
        method: attribution method; only ``"ig"`` (integrated gradients).

    Returns:
        One :class:`Explanation` per text, in input order.

    Raises:
        UserError: for a run of another task, an unknown target label, or bad arguments.
    """
    from tunesmith.run import Run

    if isinstance(texts, str):
        raise UserError("explain expects a list of texts, got a single string; wrap it: explain(run, [text])")
    if method not in METHODS:
        raise UserError(f"unknown attribution method {method!r}; available: {', '.join(METHODS)}")
    if steps < 1:
        raise UserError(f"`steps` must be >= 1, got {steps}")
    run = Run.load(run_dir)
    if run.config.task != "classify":
        raise UserError(
            f"explain supports {SUPPORTED} runs; {run.dir} is a {run.config.task!r} run. Use `tunesmith predict` for its predictions"
        )
    tokenizer, model = _load_eager(run.dir / "model")
    labels = [model.config.id2label[i] for i in range(len(model.config.id2label))]
    if target is not None and target not in labels:
        raise UserError(f"--target {target!r} is not a label of this run; its labels are {', '.join(map(repr, labels))}")
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("explain needs a fast (Rust) tokenizer for character offsets; this run's tokenizer is a slow one")
    multi_label = bool(run.config.data.multi_label)
    return [_explain_one(model, tokenizer, text, labels, target, steps, run.config.data.max_length, multi_label) for text in list(texts)]


def _load_eager(model_dir: Path):
    """The run's model in fp32 with eager attention, so that ``output_attentions`` returns the weights."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunesmith.training.runner import quiet_transformers

    quiet_transformers()
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").float().eval()
    return AutoTokenizer.from_pretrained(model_dir), model


def _explain_one(model, tokenizer, text: str, labels: list[str], target: str | None, steps: int, max_length: int, multi_label: bool):
    import torch

    enc = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0].tolist()
    word_ids = enc.word_ids(0)
    special = torch.tensor([w is None for w in word_ids])
    embeddings = model.get_input_embeddings()
    extra = {k: v for k, v in enc.items() if k not in ("input_ids",)}
    with torch.no_grad():
        x = embeddings(enc["input_ids"])[0]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        baseline = torch.where(special[:, None], x, embeddings(torch.tensor([pad_id]))[0].expand_as(x))
        out = model(inputs_embeds=x[None], output_attentions=True, **extra)
        logits = out.logits[0]
        probs = torch.sigmoid(logits) if multi_label else torch.softmax(logits, -1)
    predicted = int(probs.argmax())
    target_id = labels.index(target) if target is not None else predicted

    grads = _path_gradients(model, x, baseline, extra, target_id, steps)
    token_attr = ((x - baseline) * grads).sum(-1)
    with torch.no_grad():
        baseline_logit = float(model(inputs_embeds=baseline[None], **extra).logits[0, target_id])
    gap = float(token_attr.sum()) - (float(logits[target_id]) - baseline_logit)
    cls_attention = out.attentions[-1][0, :, 0, :].mean(0)  # from [CLS] (position 0), averaged over heads

    words: dict[int, list[int]] = {}
    for pos, w in enumerate(word_ids):
        if w is not None:
            words.setdefault(w, []).append(pos)
    merged = []
    for positions in words.values():
        start, end = min(offsets[p][0] for p in positions), max(offsets[p][1] for p in positions)
        merged.append(
            WordAttribution(
                word=text[start:end],
                start=start,
                end=end,
                attribution=float(token_attr[positions].sum()),
                attention=float(cls_attention[positions].sum()),
            )
        )
    return Explanation(
        text=text,
        label=labels[predicted],
        target=labels[target_id],
        target_probability=float(probs[target_id]),
        logit=float(logits[target_id]),
        baseline_logit=baseline_logit,
        completeness_gap=gap,
        words=merged,
        steps=steps,
    )


def _path_gradients(model, x, baseline, extra: dict, target_id: int, steps: int, chunk: int = 32):
    """Trapezoid-rule average of d logit[target] / d embedding along baseline -> x (``steps`` intervals)."""
    import torch

    alphas = torch.linspace(0.0, 1.0, steps + 1)
    weights = torch.full((steps + 1,), 1.0 / steps)
    weights[0] = weights[-1] = 0.5 / steps
    total = torch.zeros_like(x)
    for i in range(0, steps + 1, chunk):
        a = alphas[i : i + chunk]
        path = (baseline[None] + a[:, None, None] * (x - baseline)[None]).detach().requires_grad_(True)
        batch_extra = {k: v.expand(len(a), -1) for k, v in extra.items()}
        logits = model(inputs_embeds=path, **batch_extra).logits[:, target_id]
        (grad,) = torch.autograd.grad(logits.sum(), path)
        total += (grad * weights[i : i + chunk, None, None]).sum(0)
    return total


# ---------------------------------------------------------------- rendering


def _strength(exp: Explanation) -> float:
    return max((abs(w.attribution) for w in exp.words), default=0.0) or 1.0


def _html_colour(value: float, scale: float) -> str:
    """Green for evidence for the target, red against it, opacity by strength."""
    alpha = min(1.0, abs(value) / scale)
    return f"rgba(34,139,34,{alpha:.2f})" if value >= 0 else f"rgba(200,30,30,{alpha:.2f})"


def html_fragment(exp: Explanation, top: int = 5) -> str:
    """One explanation as an HTML ``<div>`` (every text escaped); needs :data:`HTML_CSS` on the page."""
    scale = _strength(exp)
    pieces, cursor = [], 0
    for w in exp.words:
        pieces.append(html.escape(exp.text[cursor : w.start]))
        title = f"attribution {w.attribution:+.4f}, attention {w.attention:.3f}"
        pieces.append(
            f'<span class="w" style="background:{_html_colour(w.attribution, scale)}" title="{title}">{html.escape(exp.text[w.start : w.end])}</span>'
        )
        cursor = w.end
    pieces.append(html.escape(exp.text[cursor:]))
    rows = "".join(
        f"<tr><td>{html.escape(w.word)}</td><td>{w.attribution:+.4f}</td><td>{w.attention:.3f}</td></tr>" for w in exp.top_words(top)
    )
    head = (
        f"predicted <b>{html.escape(exp.label)}</b>; explaining <b>{html.escape(exp.target)}</b> "
        f"(p={exp.target_probability:.3f}, logit {exp.logit:+.3f} vs baseline {exp.baseline_logit:+.3f}, "
        f"completeness gap {exp.completeness_gap:+.4f}, {exp.steps} steps)"
    )
    return (
        f'<div class="explanation"><p class="meta">{head}</p><p class="text">{"".join(pieces)}</p>'
        f'<table class="top"><tr><th>word</th><th>attribution</th><th>[CLS] attention</th></tr>{rows}</table></div>'
    )


HTML_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1000px;color:#222;line-height:1.45}
h1,h2{border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0 1em}
td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left;font-variant-numeric:tabular-nums}
th{background:#f3f3f3}
.explanation{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin:1em 0}
.explanation .text{font-size:1.15em}
.w{border-radius:3px;padding:0 .1em}
.meta{color:#555;font-size:.9em}
.muted{color:#777}
"""


def render_html(explanations: Sequence[Explanation], title: str = "tunesmith explain") -> str:
    """A self-contained HTML page (inline CSS, no external assets) with every explanation."""
    body = "".join(html_fragment(e) for e in explanations)
    legend = '<p class="muted">green: evidence for the explained label; red: against it; hover a word for its numbers.</p>'
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{HTML_CSS}</style></head><body><h1>{html.escape(title)}</h1>{legend}{body}</body></html>\n"
    )


def rich_text(exp: Explanation):
    """The text as a rich ``Text``, each word's background green (for the target) or red (against), by strength."""
    from rich.text import Text

    scale = _strength(exp)
    out, cursor = Text(), 0
    for w in exp.words:
        out.append(exp.text[cursor : w.start])
        level = min(1.0, abs(w.attribution) / scale)
        shade = int(60 + 160 * level)
        colour = f"rgb(0,{shade},0)" if w.attribution >= 0 else f"rgb({shade},0,0)"
        out.append(exp.text[w.start : w.end], style=f"bold white on {colour}" if level > 0.15 else "")
        cursor = w.end
    out.append(exp.text[cursor:])
    return out
