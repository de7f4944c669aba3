"""Explain a run's predictions: word attributions (integrated gradients) and attention, for classify and ner runs."""

from tunesmith.explain.attributions import METHODS, Explanation, WordAttribution, explain
from tunesmith.explain.render import HTML_CSS, headline, html_fragment, render_html, rich_text

__all__ = ["HTML_CSS", "METHODS", "Explanation", "WordAttribution", "explain", "headline", "html_fragment", "render_html", "rich_text"]
