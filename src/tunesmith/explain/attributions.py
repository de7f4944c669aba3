"""Why did a run predict that? Integrated gradients (captum) or attention, per word; for ner, per entity.

``method="ig"``: integrated gradients (Sundararajan et al. 2017, captum's Gauss-Legendre quadrature) on the
input word embeddings, along the straight path from a baseline (every ordinary token replaced by [PAD]'s
embedding, [CLS]/[SEP] kept) to the text. The attributions add up to f(text) - f(baseline); what they miss
is reported as the completeness gap, which shrinks as ``steps`` grows. f is the explained label's logit
(classify), or for an ner entity the sum of its predicted tags' emission scores at its words' first
sub-tokens: with a CRF head that is the part of the predicted path's score that depends on the text.

``method="attention"``: the last layer's attention, averaged over heads: from [CLS] (classify) or from
the entity's first sub-token (ner) to each word, and the whole word-by-word map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError

METHODS = ("ig", "attention")
SUPPORTED = "classify (single- or multi-label) and ner"
MAP_WORDS = 60  # attention maps keep the first words of longer texts
NO_ENTITY = "O"


@dataclass
class WordAttribution:
    """One word of the text: its characters ``text[start:end]``, integrated gradient (ig only) and attention received."""

    word: str
    start: int
    end: int
    attribution: float | None
    attention: float


@dataclass
class Explanation:
    """Why the model gave ``text`` the score it gave ``target`` (for ner: one predicted entity, see ``entity``)."""

    text: str
    label: str
    target: str
    target_probability: float
    logit: float | None
    baseline_logit: float | None
    completeness_gap: float | None
    words: list[WordAttribution] = field(default_factory=list)
    method: str = "ig"
    steps: int = 32
    entity: dict[str, Any] | None = None
    """ner: the explained entity (``text``, ``type``, ``start``, ``end``, ``score``); None for classify"""
    attention_map: list[list[float]] | None = None
    """attention method: row i, column j = attention of word i to word j (last layer, mean over heads)"""

    @property
    def relative_gap(self) -> float:
        """|gap| / |f(text) - f(baseline)|: 0 when the attributions account for the whole difference."""
        if self.completeness_gap is None or self.logit is None or self.baseline_logit is None:
            return 0.0
        delta = abs(self.logit - self.baseline_logit)
        return abs(self.completeness_gap) / delta if delta > 0 else 0.0

    def score(self, word: WordAttribution) -> float:
        """The number the word is coloured by: its attribution (ig) or the attention it receives."""
        return word.attention if self.method == "attention" or word.attribution is None else word.attribution

    def top_words(self, n: int = 5) -> list[WordAttribution]:
        """The ``n`` words with the largest |score|."""
        return sorted(self.words, key=lambda w: -abs(self.score(w)))[:n]

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
    """Word attributions for each text of a classify run, or for each predicted entity of an ner run.

    Args:
        run_dir: a finished classify (single- or multi-label) or ner run directory.
        texts: the texts to explain.
        target: classify: the label whose logit is explained (default: each text's predicted label);
            ner: explain only entities of this type (default: every entity).
        steps: integrated-gradient quadrature points (more: smaller completeness gap); unused by attention.
        method: ``"ig"`` (integrated gradients, with attention alongside) or ``"attention"``.

    Returns:
        classify: one :class:`Explanation` per text, in input order. ner: one per predicted entity, texts
        in input order; a text without (matching) entities gets one with ``label`` ``"O"`` and no attributions.

    Raises:
        UserError: a run of another task, an unknown target label, bad arguments or captum missing.
    """
    from tunesmith.run import Run

    if isinstance(texts, str):
        raise UserError("explain expects a list of texts, got a single string; wrap it: explain(run, [text])")
    if method not in METHODS:
        raise UserError(f"unknown attribution method {method!r}; available: {', '.join(METHODS)}")
    if steps < 1:
        raise UserError(f"`steps` must be >= 1, got {steps}")
    run = Run.load(run_dir)
    if run.config.task not in ("classify", "ner"):
        raise UserError(
            f"explain supports {SUPPORTED} runs; {run.dir} is a {run.config.task!r} run. Use `tunesmith predict` for its predictions"
        )
    if method == "ig":
        _require_captum()
    tokenizer, model, labels = _load_eager(run.dir / "model", run.config.task)
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("explain needs a fast (Rust) tokenizer for character offsets; this run's tokenizer is a slow one")
    max_length = run.config.data.max_length
    if run.config.task == "ner":
        types = sorted({lab.partition("-")[2] for lab in labels if lab != NO_ENTITY})
        if target is not None and target not in types:
            raise UserError(f"--target {target!r} is not an entity type of this run; its types are {', '.join(map(repr, types))}")
        crf = _load_crf(run.dir / "model", labels)
        return [
            e for text in list(texts) for e in _explain_entities(model, tokenizer, crf, text, labels, target, steps, max_length, method)
        ]
    if target is not None and target not in labels:
        raise UserError(f"--target {target!r} is not a label of this run; its labels are {', '.join(map(repr, labels))}")
    multi_label = bool(run.config.data.multi_label)
    return [_explain_text(model, tokenizer, text, labels, target, steps, max_length, multi_label, method) for text in list(texts)]


def _require_captum() -> None:
    try:
        import captum.attr  # noqa: F401
    except ImportError:
        raise UserError(
            "integrated gradients need captum: pip install 'tunesmith[explain]' (or use --method attention, which does not)"
        ) from None


def _load_eager(model_dir: Path, task: str):
    """The run's model in fp32 with eager attention (so that ``output_attentions`` returns the weights), and its labels."""
    import json

    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    from tunesmith.training.runner import quiet_transformers

    quiet_transformers()
    auto = AutoModelForTokenClassification if task == "ner" else AutoModelForSequenceClassification
    model = auto.from_pretrained(model_dir, attn_implementation="eager").float().eval()
    if task == "ner":
        from tunesmith.tasks.ner import META_FILE

        labels = json.loads((model_dir / META_FILE).read_text(encoding="utf-8"))["labels"]
    else:
        labels = [model.config.id2label[i] for i in range(len(model.config.id2label))]
    return AutoTokenizer.from_pretrained(model_dir), model, labels


def _load_crf(model_dir: Path, labels: Sequence[str]):
    from tunesmith.deploy.export import _load_crf as load

    return load(model_dir, labels)


# ---------------------------------------------------------------- the pieces both tasks share


def _embed(model, tokenizer, input_ids, word_ids: Sequence[int | None]):
    """Input embeddings of the text and the baseline (tokens of words -> [PAD]'s embedding, [CLS]/[SEP] kept)."""
    import torch

    embeddings = model.get_input_embeddings()
    special = torch.tensor([w is None for w in word_ids])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.no_grad():
        x = embeddings(input_ids)[0]
        baseline = torch.where(special[:, None], x, embeddings(torch.tensor([pad_id]))[0].expand_as(x))
    return x, baseline


def _integrated_gradients(score, x, baseline, steps: int):
    """Per-token attributions (summed over the hidden size) of ``score`` (embeddings batch -> one value each), and f(x), f(baseline), gap."""
    import torch
    from captum.attr import IntegratedGradients

    n_steps = max(steps, 2)  # captum's quadrature needs two points
    attributions, delta = IntegratedGradients(score).attribute(
        x[None], baselines=baseline[None], n_steps=n_steps, method="gausslegendre", internal_batch_size=32, return_convergence_delta=True
    )
    with torch.no_grad():
        fx, fb = (float(score(v[None])[0]) for v in (x, baseline))
    return attributions[0].sum(-1).detach(), fx, fb, float(delta[0])


def _batched(model, extra: dict):
    """``model(inputs_embeds=...)`` with the attention mask (and token types) repeated to the batch captum sends."""

    def forward(embeds):
        return model(inputs_embeds=embeds, **{k: v.expand(len(embeds), -1) for k, v in extra.items()})

    return forward


def _words(word_ids: Sequence[int | None], n_words: int | None = None) -> dict[int, list[int]]:
    """Word index -> its token positions (special tokens belong to no word; words from ``n_words`` on are dropped)."""
    words: dict[int, list[int]] = {}
    for pos, w in enumerate(word_ids):
        if w is not None and (n_words is None or w < n_words):
            words.setdefault(w, []).append(pos)
    return words


def _word_rows(text, words, spans, token_attr, attention_row) -> list[WordAttribution]:
    """``spans[w]``: the characters of word ``w``."""
    return [
        WordAttribution(
            word=text[spans[w][0] : spans[w][1]],
            start=spans[w][0],
            end=spans[w][1],
            attribution=None if token_attr is None else float(token_attr[positions].sum()),
            attention=float(attention_row[positions].sum()),
        )
        for w, positions in words.items()
    ]


def _attention_map(attention, words: dict[int, list[int]]) -> list[list[float]]:
    """Word-by-word attention: mean over a word's tokens (rows), sum over the attended word's tokens (columns)."""
    groups = list(words.values())[:MAP_WORDS]
    return [[round(float(attention[rows][:, cols].sum(-1).mean()), 5) for cols in groups] for rows in groups]


# ---------------------------------------------------------------- classify


def _explain_text(model, tokenizer, text: str, labels, target, steps: int, max_length: int, multi_label: bool, method: str):
    import torch

    enc = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0].tolist()
    word_ids = enc.word_ids(0)
    extra = {k: v for k, v in enc.items() if k != "input_ids"}
    x, baseline = _embed(model, tokenizer, enc["input_ids"], word_ids)
    forward = _batched(model, extra)
    with torch.no_grad():
        out = model(inputs_embeds=x[None], output_attentions=True, **extra)
        logits = out.logits[0]
        probs = torch.sigmoid(logits) if multi_label else torch.softmax(logits, -1)
    predicted = int(probs.argmax())
    target_id = labels.index(target) if target is not None else predicted
    attention = out.attentions[-1][0].mean(0)  # last layer, averaged over heads: (tokens, tokens)

    words = _words(word_ids)
    spans = {w: (min(offsets[p][0] for p in ps), max(offsets[p][1] for p in ps)) for w, ps in words.items()}
    token_attr = fx = fb = gap = None
    if method == "ig":
        token_attr, fx, fb, gap = _integrated_gradients(lambda e: forward(e).logits[:, target_id], x, baseline, steps)
    return Explanation(
        text=text,
        label=labels[predicted],
        target=labels[target_id],
        target_probability=float(probs[target_id]),
        logit=fx if fx is not None else float(logits[target_id]),
        baseline_logit=fb,
        completeness_gap=gap,
        words=_word_rows(text, words, spans, token_attr, attention[0]),  # attention from [CLS] (position 0)
        method=method,
        steps=steps if method == "ig" else 0,
        attention_map=_attention_map(attention, words) if method == "attention" else None,
    )


# ---------------------------------------------------------------- ner


def _explain_entities(model, tokenizer, crf, text: str, labels, target, steps: int, max_length: int, method: str) -> list[Explanation]:
    """One explanation per predicted entity (of type ``target`` when given), tags decoded as ``tunesmith predict`` does."""
    import inspect

    import torch

    from tunesmith.tasks.ner import encode_words, entity_spans, split_words

    split = split_words(text)
    tokens = [w for w, _, _ in split] or [""]
    (feature,), _ = encode_words(tokenizer, [tokens], max_length)
    word_ids, starts = feature.pop("_word_ids"), feature.pop("word_starts")
    accepted = set(inspect.signature(model.forward).parameters)
    enc = {k: torch.tensor([v]) for k, v in feature.items() if k in accepted}
    extra = {k: v for k, v in enc.items() if k != "input_ids"}
    x, baseline = _embed(model, tokenizer, enc["input_ids"], word_ids)
    forward = _batched(model, extra)
    with torch.no_grad():
        out = model(inputs_embeds=x[None], output_attentions=True, **extra)
    first = [p for p, s in enumerate(starts) if s]  # one position per word that survived truncation
    emissions = out.logits[0][first]
    if not first:
        tag_ids: list[int] = []
    elif crf is not None:
        paths, _ = crf.decode(emissions[None], torch.ones(1, len(first), dtype=torch.bool))
        tag_ids = paths[0]
    else:
        tag_ids = emissions.argmax(-1).tolist()
    probs = emissions.softmax(-1)
    tags = [labels[t] for t in tag_ids]
    attention = out.attentions[-1][0].mean(0)
    spans = [(s, e) for _, s, e in split]
    words = _words(word_ids, len(spans))
    found = [s for s in entity_spans(tags, [float(probs[i, t]) for i, t in enumerate(tag_ids)]) if target is None or s[2] == target]
    if not found:
        rows = _word_rows(text, words, spans, None, attention[0])
        for row in rows:
            row.attention = 0.0
        return [Explanation(text, NO_ENTITY, NO_ENTITY, 0.0, None, None, None, rows, method, 0)]
    explanations = []
    for a, b, kind, score in found:
        positions, tag_index = torch.tensor(first[a : b + 1]), torch.tensor(tag_ids[a : b + 1])
        start, end = spans[a][0], spans[b][1]
        entity = {"text": text[start:end], "type": kind, "start": start, "end": end, "score": score}
        token_attr = fx = fb = gap = None
        if method == "ig":
            token_attr, fx, fb, gap = _integrated_gradients(
                lambda e, p=positions, t=tag_index: forward(e).logits[:, p, t].sum(-1), x, baseline, steps
            )
        else:
            fx = float(out.logits[0][positions, tag_index].sum())
        explanations.append(
            Explanation(
                text=text,
                label=kind,
                target=f"{kind} {entity['text']!r}",
                target_probability=score,
                logit=fx,
                baseline_logit=fb,
                completeness_gap=gap,
                words=_word_rows(text, words, spans, token_attr, attention[int(positions[0])]),  # from the entity's first token
                method=method,
                steps=steps if method == "ig" else 0,
                entity=entity,
                attention_map=_attention_map(attention, words) if method == "attention" else None,
            )
        )
    return explanations
