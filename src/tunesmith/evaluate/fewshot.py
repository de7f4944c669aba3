"""Few-shot classification from K examples per class on a frozen or briefly tuned sentence encoder.

``prototypes``: a prototypical-network classifier on frozen embeddings; each class is the mean of
its shots' unit embeddings and a text takes the nearest prototype by cosine similarity.
``setfit``: SetFit's recipe; the encoder is tuned contrastively for one epoch on pairs of shots
(same class -> cosine 1, different -> 0), then logistic regression is fitted on its embeddings.
Pairs grow quadratically with the shots, so each example takes part in at most ``max_pairs`` pairs.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.errors import UserError

METHODS = ("prototypes", "setfit")
MAX_PAIRS_PER_EXAMPLE = 20
TEMPERATURE = 0.05


def default_fewshot_dir(source: str, method: str, shots: int) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(source).stem) or "data"
    return Path("runs") / f"fewshot-{method}-{shots}shot-{stem}-{datetime.now():%Y%m%d-%H%M%S}"


def sample_shots(labels: Sequence[str], shots: int, seed: int = 0) -> list[int]:
    """Indices of ``shots`` examples per class (all of a class's examples when it has fewer), seeded, sorted.

    Raises:
        UserError: ``shots`` < 1.
    """
    if shots < 1:
        raise UserError(f"--shots must be >= 1, got {shots}")
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    rng = random.Random(seed)
    chosen: list[int] = []
    for label in sorted(by_class):
        members = by_class[label]
        chosen += members if len(members) <= shots else rng.sample(members, shots)
    return sorted(chosen)


def class_prototypes(vectors: np.ndarray, label_ids: Sequence[int], n_classes: int) -> np.ndarray:
    """``[n_classes, dim]`` unit-length class means (a class without examples gets a zero row)."""
    from tunesmith.classic.embeddings import normalise

    ids = np.asarray(label_ids)
    protos = np.zeros((n_classes, vectors.shape[1]), dtype=np.float32)
    for c in range(n_classes):
        if (ids == c).any():
            protos[c] = vectors[ids == c].mean(axis=0)
    return normalise(protos)


def nearest_prototype(vectors: np.ndarray, prototypes: np.ndarray, temperature: float = TEMPERATURE) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class ids (highest cosine similarity) and softmax probabilities over similarity / temperature."""
    from tunesmith.tasks.inference import softmax

    similarities = vectors @ prototypes.T
    return similarities.argmax(axis=1), softmax(similarities / temperature)


def contrastive_pairs(label_ids: Sequence[int], max_pairs: int = MAX_PAIRS_PER_EXAMPLE, seed: int = 0) -> list[tuple[int, int, float]]:
    """SetFit pairs ``(i, j, target)``: target 1.0 for the same class, 0.0 for different classes.

    Each example starts at most ``max_pairs`` pairs, half with its own class and half with others
    (the other half fills in when one side runs short), so the count grows linearly, not quadratically.
    """
    rng = random.Random(seed)
    ids = list(label_ids)
    pairs: list[tuple[int, int, float]] = []
    for i, own in enumerate(ids):
        same = [j for j, c in enumerate(ids) if c == own and j != i]
        other = [j for j, c in enumerate(ids) if c != own]
        n_same = min(len(same), max(max_pairs // 2, max_pairs - len(other)))
        n_other = min(len(other), max_pairs - n_same)
        pairs += [(i, j, 1.0) for j in rng.sample(same, n_same)]
        pairs += [(i, j, 0.0) for j in rng.sample(other, n_other)]
    rng.shuffle(pairs)
    return pairs


def contrastive_tune(
    encoder: Any,
    texts: Sequence[str],
    label_ids: Sequence[int],
    *,
    epochs: int = 1,
    batch_size: int = 16,
    lr: float = 2e-5,
    max_pairs: int = MAX_PAIRS_PER_EXAMPLE,
    seed: int = 0,
    on_step: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Tune ``encoder`` (a :class:`~tunesmith.classic.embeddings.SentenceEncoder`) in place with a cosine-similarity loss.

    The loss is the mean squared error between the cosine similarity of a pair's mean-pooled
    embeddings and its target (sentence-transformers' ``CosineSimilarityLoss``).

    Returns:
        ``pairs``, ``steps`` and the mean ``loss`` of the first and last epoch.
    """
    import torch

    torch.manual_seed(seed)
    pairs = contrastive_pairs(label_ids, max_pairs, seed)
    model = encoder.model
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    losses: list[float] = []
    steps = 0
    total = epochs * ((len(pairs) + batch_size - 1) // batch_size)
    for epoch in range(epochs):
        order = list(pairs)
        random.Random(seed + epoch).shuffle(order)
        epoch_losses = []
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            left = encoder.pooled(encoder.tokenize([texts[i] for i, _, _ in chunk]))
            right = encoder.pooled(encoder.tokenize([texts[j] for _, j, _ in chunk]))
            target = torch.tensor([t for _, _, t in chunk], device=left.device)
            loss = torch.nn.functional.mse_loss(torch.nn.functional.cosine_similarity(left, right), target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            epoch_losses.append(float(loss.detach()))
            steps += 1
            if on_step is not None:
                on_step(steps, total)
        losses.append(float(np.mean(epoch_losses)) if epoch_losses else 0.0)
    model.eval()
    return {
        "pairs": len(pairs),
        "steps": steps,
        "first_epoch_loss": losses[0] if losses else None,
        "last_epoch_loss": losses[-1] if losses else None,
    }


def few_shot(
    data: str,
    *,
    shots: int,
    eval_data: str | None = None,
    method: str = "prototypes",
    model: str | None = None,
    seed: int = 0,
    split_seed: int = 42,
    eval_fraction: float = 0.2,
    text_col: str | None = None,
    label_col: str | None = None,
    max_pairs: int = MAX_PAIRS_PER_EXAMPLE,
    lr: float = 2e-5,
    batch_size: int = 64,
    max_length: int = 128,
    out: str | Path | None = None,
    console: Any = None,
) -> dict[str, Any]:
    """Train a few-shot classifier on ``shots`` examples per class of the training split and score it on the eval split.

    The split is the one ``tunesmith train`` makes with ``split_seed`` (or ``eval_data`` as the eval file);
    ``seed`` draws the shots (and seeds the SetFit tuning), so several seeds show the spread.

    Args:
        data: labelled training data, a file or packaged dataset name.
        shots: examples per class drawn from the training split.
        method: ``prototypes`` (frozen encoder) or ``setfit`` (contrastive tuning + logistic regression).
        model: encoder: registry name, HF directory, hub id or run directory; default ``minilm``.
        out: directory for ``metrics.json`` and ``predictions.jsonl`` (not written when None).
        console: a rich console to show the embedding progress on.

    Returns:
        ``eval`` metrics (with ``majority_baseline`` of the full training split), the shots drawn and the split report.

    Raises:
        UserError: unknown method, bad ``shots``, or any data problem ``prepare_classification`` reports.
    """
    from sklearn.linear_model import LogisticRegression

    from tunesmith.classic.embeddings import SentenceEncoder
    from tunesmith.config import DataConfig
    from tunesmith.data.texts import prepare_classification
    from tunesmith.evaluate.metrics import classification_metrics, majority_baseline
    from tunesmith.training.rundir import atomic_write_json, write_jsonl

    if method not in METHODS:
        raise UserError(f"unknown few-shot method {method!r}; choose one of: {', '.join(METHODS)}")
    if max_pairs < 1:
        raise UserError(f"--max-pairs must be >= 1, got {max_pairs}")
    config = DataConfig(train=data, eval=eval_data, text_col=text_col, label_col=label_col, eval_fraction=eval_fraction)
    prepared = prepare_classification(config, split_seed)
    names = prepared.labels
    index = {name: i for i, name in enumerate(names)}
    train_ids = [index[lab] for lab in prepared.train.labels]
    eval_ids = [index[lab] for lab in prepared.eval.labels]
    chosen = sample_shots(prepared.train.labels, shots, seed)
    shot_texts = [prepared.train.texts[i] for i in chosen]
    shot_ids = [train_ids[i] for i in chosen]

    encoder = SentenceEncoder.load(model, max_length=max_length, precision="fp32" if method == "setfit" else "auto")
    result: dict[str, Any] = {"data": data, "model": model or "minilm", "method": method, "shots": shots, "seed": seed}
    if method == "setfit":
        result["contrastive"] = contrastive_tune(encoder, shot_texts, shot_ids, lr=lr, max_pairs=max_pairs, seed=seed)
    shot_vectors = encoder.encode(shot_texts, batch_size=batch_size)
    eval_vectors = encoder.encode(prepared.eval.texts, batch_size=batch_size, console=console, description="embedding eval texts")
    if method == "prototypes":
        predicted, probabilities = nearest_prototype(eval_vectors, class_prototypes(shot_vectors, shot_ids, len(names)))
    else:
        present = sorted(set(shot_ids))
        classifier = LogisticRegression(max_iter=1000, random_state=seed).fit(shot_vectors, shot_ids)
        probabilities = np.zeros((len(eval_vectors), len(names)), dtype=np.float64)
        probabilities[:, present] = classifier.predict_proba(eval_vectors)
        predicted = probabilities.argmax(axis=1)
    metrics = classification_metrics(eval_ids, predicted.tolist(), names)
    metrics["majority_baseline"] = majority_baseline(train_ids, eval_ids, names)
    counts = {name: sum(1 for i in shot_ids if i == c) for c, name in enumerate(names)}
    result.update(
        eval=metrics,
        shots_per_class=counts,
        short_classes=[name for name, n in counts.items() if n < shots],
        shot_rows=[prepared.train.rows[i] for i in chosen],
        split=prepared.report,
    )
    if out is not None:
        target = Path(out)
        atomic_write_json(target / "metrics.json", result)
        records = [
            {
                "row": row,
                "text": text,
                "label": names[int(p)],
                "score": float(probs[p]),
                "probabilities": {name: float(x) for name, x in zip(names, probs, strict=True)},
                "gold": gold,
            }
            for row, text, p, probs, gold in zip(
                prepared.eval.rows, prepared.eval.texts, predicted, probabilities, prepared.eval.labels, strict=True
            )
        ]
        write_jsonl(target / "predictions.jsonl", records)
        result["out"] = str(target)
    return result
