"""Explanations shown: coloured words in the terminal (rich) and in a self-contained HTML page."""

from __future__ import annotations

import html
from collections.abc import Sequence

from tunesmith.explain.attributions import NO_ENTITY, Explanation

HTML_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1000px;color:#222;line-height:1.45}
h1,h2{border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0 1em}
td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left;font-variant-numeric:tabular-nums}
th{background:#f3f3f3}
.explanation{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin:1em 0}
.explanation .text{font-size:1.15em}
.w{border-radius:3px;padding:0 .1em}
.ent{outline:2px solid #1f4e9c;outline-offset:1px}
table.map td{padding:0;width:1.6em;height:1.6em;border:1px solid #eee}
table.map th{font-weight:normal;font-size:.8em;padding:0 .3em}
.meta{color:#555;font-size:.9em}
.muted{color:#777}
"""


def _strength(exp: Explanation) -> float:
    return max((abs(exp.score(w)) for w in exp.words), default=0.0) or 1.0


def _html_colour(value: float, scale: float) -> str:
    """Green for evidence for the target (or attention received), red against it, opacity by strength."""
    alpha = min(1.0, abs(value) / scale)
    return f"rgba(34,139,34,{alpha:.2f})" if value >= 0 else f"rgba(200,30,30,{alpha:.2f})"


def headline(exp: Explanation) -> str:
    """One plain-text line: what was predicted and what the colours explain."""
    if exp.label == NO_ENTITY and exp.entity is None and exp.logit is None:
        return "no entity predicted in this text"
    what = f"entity {exp.target} (p={exp.target_probability:.3f})" if exp.entity else f"{exp.target} (p={exp.target_probability:.3f})"
    head = what if exp.entity else f"predicted {exp.label}; explaining {what}"
    if exp.method == "attention":
        source = "the entity's first token" if exp.entity else "[CLS]"
        return f"{head}; attention from {source} (last layer, mean over heads)"
    return (
        f"{head}; integrated gradients: score {exp.logit:+.3f} vs baseline {exp.baseline_logit:+.3f}, "
        f"completeness gap {exp.completeness_gap:+.4f} = {exp.relative_gap:.1%} of the change, {exp.steps} steps"
    )


def html_fragment(exp: Explanation, top: int = 5) -> str:
    """One explanation as an HTML ``<div>`` (every text escaped); needs :data:`HTML_CSS` on the page."""
    scale = _strength(exp)
    entity = exp.entity or {}
    pieces, cursor = [], 0
    for w in exp.words:
        pieces.append(html.escape(exp.text[cursor : w.start]))
        numbers = [f"attribution {w.attribution:+.4f}"] if w.attribution is not None else []
        title = ", ".join([*numbers, f"attention {w.attention:.3f}"])
        inside = entity and entity["start"] <= w.start and w.end <= entity["end"]
        pieces.append(
            f'<span class="w{" ent" if inside else ""}" style="background:{_html_colour(exp.score(w), scale)}" title="{title}">'
            f"{html.escape(exp.text[w.start : w.end])}</span>"
        )
        cursor = w.end
    pieces.append(html.escape(exp.text[cursor:]))
    ig = exp.method == "ig"
    rows = "".join(
        f"<tr><td>{html.escape(w.word)}</td>{f'<td>{w.attribution:+.4f}</td>' if ig and w.attribution is not None else ''}"
        f"<td>{w.attention:.3f}</td></tr>"
        for w in exp.top_words(top)
    )
    source = "entity attention" if entity else "[CLS] attention"
    head_row = f"<tr><th>word</th>{'<th>attribution</th>' if ig else ''}<th>{source}</th></tr>"
    table = f'<table class="top">{head_row}{rows}</table>' if exp.words and exp.logit is not None else ""
    return (
        f'<div class="explanation"><p class="meta">{html.escape(headline(exp))}</p><p class="text">{"".join(pieces)}</p>'
        f"{table}{attention_map_html(exp)}</div>"
    )


def attention_map_html(exp: Explanation) -> str:
    """The word-by-word attention map as a table of shaded cells (empty unless method is attention)."""
    if not exp.attention_map:
        return ""
    words = [html.escape(w.word) for w in exp.words[: len(exp.attention_map)]]
    peak = max((v for row in exp.attention_map for v in row), default=0.0) or 1.0  # shade relative to the strongest cell
    head = "<tr><th></th>" + "".join(f"<th>{w}</th>" for w in words) + "</tr>"
    rows = "".join(
        f"<tr><th>{words[i]}</th>"
        + "".join(
            f'<td style="background:rgba(31,78,156,{min(1.0, v / peak):.2f})" title="{words[i]} -> {words[j]}: {v:.3f}"></td>'
            for j, v in enumerate(row)
        )
        + "</tr>"
        for i, row in enumerate(exp.attention_map)
    )
    caption = f"<p class='meta'>attention map: row attends to column (last layer, mean over heads; darkest = {peak:.3f})</p>"
    return f'{caption}<table class="map">{head}{rows}</table>'


def render_html(explanations: Sequence[Explanation], title: str = "tunesmith explain") -> str:
    """A self-contained HTML page (inline CSS, no external assets) with every explanation."""
    body = "".join(html_fragment(e) for e in explanations)
    legend = (
        '<p class="muted">integrated gradients: green is evidence for the explained label (or entity), red against it; '
        "attention: the darker, the more attention; entities are outlined; hover a word for its numbers.</p>"
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{HTML_CSS}</style></head><body><h1>{html.escape(title)}</h1>{legend}{body}</body></html>\n"
    )


def rich_text(exp: Explanation):
    """The text as a rich ``Text``, each word's background green (for the target) or red (against), by strength."""
    from rich.text import Text

    scale = _strength(exp)
    entity = exp.entity or {}
    out, cursor = Text(), 0
    for w in exp.words:
        out.append(exp.text[cursor : w.start])
        value = exp.score(w)
        level = min(1.0, abs(value) / scale)
        shade = int(60 + 160 * level)
        colour = f"rgb(0,{shade},0)" if value >= 0 else f"rgb({shade},0,0)"
        style = f"bold white on {colour}" if level > 0.15 else ""
        if entity and entity["start"] <= w.start and w.end <= entity["end"]:
            style = (style + " underline").strip()
        out.append(exp.text[w.start : w.end], style=style)
        cursor = w.end
    out.append(exp.text[cursor:])
    return out
