"""Zero-shot classification with a sentence encoder: each text takes the label whose description it is closest to.

No training example is needed: the labels' descriptions ("an unsolicited advertisement or scam
message") and the texts are embedded with the same encoder (mean pooling, unit length) and
compared by cosine similarity. ``method="llm"`` instead asks an instruct LLM which label fits and
scores each label by its log-likelihood as the answer (:mod:`tunesmith.evaluate.llm_scoring`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.errors import UserError

DEFAULT_TEMPLATE = "This text is about {label}."
TEMPERATURE = 0.05
"""Softmax temperature over cosine similarities (similarities differ by hundredths; sentence-transformers uses 0.05)."""


@dataclass
class ZeroShotResult:
    """Per-text predictions, and metrics when the data had gold labels."""

    labels: list[str]
    prompts: list[str]
    predictions: list[dict[str, Any]]
    metrics: dict[str, Any] | None


def parse_labels(labels: str | Sequence[str]) -> list[str]:
    """``"a,b,c"`` or a list -> distinct, stripped label names.

    Raises:
        UserError: fewer than two labels, or a label given twice.
    """
    names = [x.strip() for x in labels.split(",")] if isinstance(labels, str) else [str(x).strip() for x in labels]
    names = [x for x in names if x]
    folded = [x.casefold() for x in names]
    repeated = sorted({x for x in names if folded.count(x.casefold()) > 1})
    if repeated:
        raise UserError(f"--labels names {', '.join(repeated)} more than once (labels compare ignoring case); give each label once")
    if len(names) < 2:
        raise UserError(
            f"zero-shot classification needs at least 2 labels, got {len(names)} ({', '.join(names) or 'none'}); pass --labels a,b[,c...]"
        )
    return names


def load_descriptions(path: str | Path) -> dict[str, str]:
    """A JSON or YAML file mapping label -> description.

    Raises:
        UserError: missing or unparsable file, or not a mapping of strings to strings.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"descriptions file not found: {path}; pass a JSON or YAML file mapping each label to a description")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise UserError(
            f"{path}: cannot parse it ({str(exc).splitlines()[0]}); expected a JSON or YAML mapping label -> description"
        ) from None
    if not isinstance(data, dict) or not all(isinstance(v, str) and v.strip() for v in data.values()):
        raise UserError(
            f'{path}: expected a mapping from label to a non-empty description, like {{"spam": "an unsolicited advertisement"}}'
        )
    return {str(k).strip(): v.strip() for k, v in data.items()}


def label_prompts(labels: Sequence[str], descriptions: dict[str, str] | None = None, template: str = DEFAULT_TEMPLATE) -> list[str]:
    """The text embedded for each label: its description, else ``template`` filled with the label name.

    Raises:
        UserError: a description for a label not in ``labels``, or a template without ``{label}``.
    """
    if "{label}" not in template:
        raise UserError(f"--template must contain {{label}}, got {template!r}; e.g. '{DEFAULT_TEMPLATE}' or '{{label}}'")
    by_folded = {k.casefold(): v for k, v in (descriptions or {}).items()}
    unknown = sorted(k for k in (descriptions or {}) if k.casefold() not in {x.casefold() for x in labels})
    if unknown:
        raise UserError(f"descriptions given for {', '.join(unknown)}, which are not among --labels ({', '.join(labels)}); fix the names")
    return [by_folded.get(label.casefold(), template.format(label=label)) for label in labels]


def similarity_probabilities(
    text_vectors: np.ndarray, label_vectors: np.ndarray, temperature: float = TEMPERATURE
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities ``[n, k]`` of unit vectors and their softmax over labels at ``temperature``."""
    from tunesmith.tasks.inference import softmax

    similarities = text_vectors @ label_vectors.T
    return similarities, softmax(similarities / temperature)


def zero_shot(
    data: str,
    labels: str | Sequence[str],
    *,
    descriptions: dict[str, str] | str | Path | None = None,
    template: str = DEFAULT_TEMPLATE,
    model: str | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    temperature: float = TEMPERATURE,
    batch_size: int = 64,
    max_length: int = 128,
    console: Any = None,
    method: str = "embedding",
    calibrate: bool = True,
) -> ZeroShotResult:
    """Label the texts of ``data`` with the closest label description; score them when gold labels exist.

    Args:
        data: a CSV/TSV/JSONL/Parquet file or packaged dataset name; the label column is optional.
        labels: the candidate labels, ``"a,b,c"`` or a list.
        descriptions: label -> description (or a JSON/YAML file of it); labels without one use ``template``.
        model: encoder (default ``minilm``), or for ``method="llm"`` a causal LM (default ``smollm2-135m``).
        console: a rich console to show the embedding progress on.
        method: ``embedding`` (similarity to label descriptions) or ``llm`` (label log-likelihood as the answer).
        calibrate: ``llm``: subtract each label's score for a content-free text (contextual calibration).

    Raises:
        UserError: fewer than 2 labels, bad descriptions, or gold labels not among ``labels``.
    """
    from tunesmith.classic.embeddings import SentenceEncoder
    from tunesmith.data.texts import load_texts
    from tunesmith.evaluate.metrics import classification_metrics, majority_baseline

    names = parse_labels(labels)
    if method not in ("embedding", "llm"):
        raise UserError(f"--method must be embedding or llm, got {method!r}")
    if temperature <= 0:
        raise UserError(f"--temperature must be > 0, got {temperature}")
    if isinstance(descriptions, (str, Path)):
        descriptions = load_descriptions(descriptions)
    prompts = label_prompts(names, descriptions, template)
    texts = load_texts(data, text_col, label_col, require_labels=False)
    gold_ids: list[int] | None = None
    if texts.labels is not None:
        index = {name.casefold(): i for i, name in enumerate(names)}
        unknown = sorted({g for g in texts.labels if g.casefold() not in index})
        if unknown:
            raise UserError(
                f"{data}: column '{texts.label_col}' holds labels not among --labels: {', '.join(unknown[:10])}"
                f"{' ...' if len(unknown) > 10 else ''}; --labels is {', '.join(names)}. Add them to --labels "
                "(matched ignoring case), or pass --label-col for another column"
            )
        gold_ids = [index[g.casefold()] for g in texts.labels]
    scored_by = "similarities"
    if method == "llm":
        from tunesmith.evaluate.llm_scoring import llm_label_scores
        from tunesmith.tasks.inference import softmax

        similarities, llm_info = llm_label_scores(texts.texts, names, model=model or "smollm2-135m", calibrate=calibrate)
        probabilities, scored_by = softmax(similarities), "log_likelihoods"
    else:
        encoder = SentenceEncoder.load(model, max_length=max_length)
        label_vectors = encoder.encode(prompts)
        text_vectors = encoder.encode(texts.texts, batch_size=batch_size, console=console, description="embedding texts")
        similarities, probabilities = similarity_probabilities(text_vectors, label_vectors, temperature)
    predicted = similarities.argmax(axis=1)
    predictions = [
        {
            "row": row,
            "text": text,
            "label": names[int(p)],
            "score": float(probs[p]),
            "probabilities": {name: float(x) for name, x in zip(names, probs, strict=True)},
            scored_by: {name: float(x) for name, x in zip(names, sims, strict=True)},
            **({"gold": texts.labels[i]} if texts.labels is not None else {}),
        }
        for i, (row, text, p, probs, sims) in enumerate(zip(texts.rows, texts.texts, predicted, probabilities, similarities, strict=True))
    ]
    metrics = None
    if gold_ids is not None:
        metrics = classification_metrics(gold_ids, predicted.tolist(), names)
        # no training data: the floor is always answering the eval set's own most common label
        metrics["majority_baseline"] = majority_baseline(gold_ids, gold_ids, names)
        metrics["method"] = method
        if method == "llm":
            metrics["llm"] = llm_info
        else:
            metrics["label_prompts"] = dict(zip(names, prompts, strict=True))
            metrics["temperature"] = temperature
    return ZeroShotResult(labels=names, prompts=prompts, predictions=predictions, metrics=metrics)


def default_zeroshot_file(source: str) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(source).stem) or "data"
    return Path("runs") / f"zeroshot-{stem}-{datetime.now():%Y%m%d-%H%M%S}" / "metrics.json"
