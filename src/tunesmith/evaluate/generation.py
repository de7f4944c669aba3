"""Scores for generated text: BLEU and chrF (sacrebleu) against references.

Shared by every generative task (``sft`` on translation pairs, ``seq2seq``) and by ``tunesmith eval``
on a generative run, so the numbers are computed one way everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunesmith.errors import UserError


def translation_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Corpus BLEU and chrF of ``hypotheses`` against one reference each (sacrebleu defaults, 0-100).

    Args:
        hypotheses: the generated texts.
        references: the reference texts, aligned with ``hypotheses``.

    Returns:
        ``{"bleu": float, "chrf": float, "n": int, "bleu_signature": str, "chrf_signature": str}``;
        the signatures say exactly how sacrebleu scored (tokenizer, smoothing, version).

    Raises:
        UserError: when the two lists differ in length or are empty.
    """
    import sacrebleu

    hyps, refs = [str(h) for h in hypotheses], [str(r) for r in references]
    if len(hyps) != len(refs):
        raise UserError(f"translation scores need one reference per hypothesis, got {len(hyps)} hypotheses and {len(refs)} references")
    if not hyps:
        raise UserError("translation scores need at least one hypothesis and reference, got none")
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    return {
        "bleu": float(bleu.corpus_score(hyps, [refs]).score),
        "chrf": float(chrf.corpus_score(hyps, [refs]).score),
        "n": len(hyps),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }
