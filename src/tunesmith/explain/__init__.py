"""Explain a classify run's predictions: word attributions (integrated gradients) and [CLS] attention."""

from tunesmith.explain.attributions import Explanation, WordAttribution, explain, html_fragment, render_html, rich_text

__all__ = ["Explanation", "WordAttribution", "explain", "html_fragment", "render_html", "rich_text"]
