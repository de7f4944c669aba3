"""Cluster texts by their sentence embeddings: k-means (k by silhouette) or HDBSCAN, described by c-TF-IDF terms.

Writes ``assignments.jsonl`` (row, text, cluster), ``clusters.json`` (k, silhouette, sizes, top terms
and, when the data has labels, purity / NMI / ARI against them) and ``clusters.png`` (a 2-D PCA
projection coloured by cluster).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.errors import UserError

ALGORITHMS = ("kmeans", "hdbscan")
MAX_AUTO_K = 12
NOISE = -1
_SILHOUETTE_SAMPLE = 3000  # silhouette is O(n^2); a seeded sample keeps auto-k fast on large data


def default_cluster_dir(source: str) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(source).stem) or "data"
    return Path("runs") / f"cluster-{stem}-{datetime.now():%Y%m%d-%H%M%S}"


def silhouette(vectors: np.ndarray, assignments: Sequence[int], seed: int = 0) -> float | None:
    """Mean silhouette of the non-noise points, or None when fewer than two clusters (or too few points)."""
    from sklearn.metrics import silhouette_score

    assignments = np.asarray(assignments)
    keep = assignments != NOISE
    x, y = vectors[keep], assignments[keep]
    n_clusters = len(set(y.tolist()))
    if n_clusters < 2 or n_clusters >= len(y):
        return None
    sample = _SILHOUETTE_SAMPLE if len(y) > _SILHOUETTE_SAMPLE else None
    return float(silhouette_score(x, y, sample_size=sample, random_state=seed))


def kmeans(vectors: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """K-means cluster ids (seeded, 10 restarts)."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(vectors)


def choose_k(vectors: np.ndarray, seed: int = 0, max_k: int = MAX_AUTO_K) -> tuple[int, dict[int, float]]:
    """The k in 2..min(max_k, n-1) whose k-means clustering has the highest silhouette, and every k's score.

    Raises:
        UserError: fewer than 3 texts (no k in the range).
    """
    n = len(vectors)
    upper = min(max_k, n - 1)
    if upper < 2:
        raise UserError(f"choosing k needs at least 3 texts, got {n}; add texts or pass --k")
    scores: dict[int, float] = {}
    for k in range(2, upper + 1):
        score = silhouette(vectors, kmeans(vectors, k, seed), seed)
        scores[k] = -1.0 if score is None else score
    best = max(scores, key=lambda k: (scores[k], -k))  # ties go to the smaller k
    return best, scores


def hdbscan(vectors: np.ndarray, min_cluster_size: int | None = None) -> np.ndarray:
    """HDBSCAN cluster ids; -1 marks noise points that belong to no cluster."""
    from sklearn.cluster import HDBSCAN

    size = min(min_cluster_size or max(5, len(vectors) // 100), max(2, len(vectors)))
    # min_samples defaults to min_cluster_size, so conservative on sentence embeddings that it marked
    # every SMS spam text as noise; 5 lets the dense cores form clusters
    return HDBSCAN(min_cluster_size=size, min_samples=min(5, size), copy=True).fit_predict(vectors)


def ctfidf_top_terms(
    texts: Sequence[str], assignments: Sequence[int], n_terms: int = 10, stop_words: str | list[str] | None = "english"
) -> dict[int, list[dict[str, float]]]:
    """The terms that set each cluster apart, by class-based TF-IDF (BERTopic's c-TF-IDF).

    All texts of a cluster form one document; a term's weight in cluster c is its frequency in c
    (normalised by the cluster's word count) times ``log(1 + A / f_t)``, with A the mean number of
    words per cluster and f_t the term's frequency over all clusters. Noise (-1) is not described.

    Returns:
        cluster id -> up to ``n_terms`` ``{"term", "score"}``, highest first.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    assignments = np.asarray(assignments)
    clusters = sorted(c for c in set(assignments.tolist()) if c != NOISE)
    if not clusters:
        return {}
    documents = [" ".join(t for t, a in zip(texts, assignments, strict=True) if a == c) for c in clusters]
    try:
        counts = CountVectorizer(stop_words=stop_words).fit(documents)
    except ValueError:  # only stop words (or nothing) left: describe clusters with every word
        counts = CountVectorizer(token_pattern=r"(?u)\b\w+\b").fit(documents)
    tf = counts.transform(documents).toarray().astype(np.float64)
    words_per_cluster = tf.sum(axis=1, keepdims=True)
    mean_words = float(words_per_cluster.mean())
    term_frequency = tf.sum(axis=0)
    idf = np.log1p(mean_words / np.maximum(term_frequency, 1e-12))
    weights = tf / np.maximum(words_per_cluster, 1e-12) * idf
    vocabulary = counts.get_feature_names_out()
    top: dict[int, list[dict[str, float]]] = {}
    for row, cluster in enumerate(clusters):
        order = np.argsort(-weights[row], kind="stable")[:n_terms]
        top[int(cluster)] = [{"term": str(vocabulary[j]), "score": float(weights[row, j])} for j in order if weights[row, j] > 0]
    return top


def agreement(labels: Sequence[str], assignments: Sequence[int]) -> dict[str, float]:
    """How well clusters match gold labels: purity, normalised mutual information, adjusted Rand index.

    Purity counts, for each cluster, its most common label, over all texts (noise counts as one cluster).
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    if len(labels) != len(assignments):
        raise ValueError(f"{len(labels)} labels for {len(assignments)} assignments")
    by_cluster: dict[int, Counter[str]] = {}
    for label, cluster in zip(labels, assignments, strict=True):
        by_cluster.setdefault(int(cluster), Counter())[label] += 1
    purity = sum(c.most_common(1)[0][1] for c in by_cluster.values()) / max(len(labels), 1)
    return {
        "purity": float(purity),
        "nmi": float(normalized_mutual_info_score(labels, assignments)),
        "ari": float(adjusted_rand_score(labels, assignments)),
    }


def plot_projection(vectors: np.ndarray, assignments: Sequence[int], path: Path, title: str = "") -> None:
    """A PNG of the embeddings projected on their first two principal components, coloured by cluster."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    assignments = np.asarray(assignments)
    if len(vectors) >= 2 and vectors.shape[1] >= 2:
        points = PCA(n_components=2, random_state=0).fit_transform(vectors)
    else:
        points = np.zeros((len(vectors), 2))
    fig, ax = plt.subplots(figsize=(7, 6))
    clusters = sorted(set(assignments.tolist()))
    # tab20 pairs each hue with its pale twin; tab10 keeps neighbouring clusters distinct while it can
    cmap = plt.get_cmap("tab10" if len(clusters) <= 10 else "tab20")
    for cluster in clusters:
        mask = assignments == cluster
        colour = "lightgrey" if cluster == NOISE else cmap(cluster % cmap.N)
        name = "noise" if cluster == NOISE else f"cluster {cluster} ({int(mask.sum())})"
        ax.scatter(points[mask, 0], points[mask, 1], s=8, alpha=0.7, color=colour, label=name)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title or "clusters (PCA of the sentence embeddings)")
    ax.legend(markerscale=2, fontsize="small", loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def cluster_vectors(vectors: np.ndarray, *, k: int | str = "auto", algorithm: str = "kmeans", seed: int = 0) -> dict[str, Any]:
    """Cluster unit-length vectors; returns ``assignments``, ``k``, ``silhouette`` and (auto) ``silhouette_by_k``."""
    if algorithm not in ALGORITHMS:
        raise UserError(f"unknown clustering algorithm {algorithm!r}; choose one of: {', '.join(ALGORITHMS)}")
    n = len(vectors)
    result: dict[str, Any] = {"algorithm": algorithm}
    if algorithm == "hdbscan":
        assignments = hdbscan(vectors)
        result["noise"] = int((assignments == NOISE).sum())
    else:
        if k == "auto":
            k, scores = choose_k(vectors, seed)
            result["silhouette_by_k"] = {str(key): value for key, value in scores.items()}
        else:
            k = int(k)
            if not 1 <= k <= n:
                raise UserError(f"--k {k} is out of range for {n} texts; pass 1..{n} or auto")
        assignments = kmeans(vectors, k, seed)
    result["assignments"] = np.asarray(assignments)
    result["k"] = len({a for a in assignments.tolist() if a != NOISE})
    result["silhouette"] = silhouette(vectors, assignments, seed)
    return result


def cluster_texts(
    data: str,
    *,
    model: str | None = None,
    run: str | None = None,
    k: int | str = "auto",
    algorithm: str = "kmeans",
    out: str | Path | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    seed: int = 0,
    n_terms: int = 10,
    batch_size: int = 64,
    max_length: int = 128,
    console: Any = None,
) -> dict[str, Any]:
    """Embed the texts of ``data``, cluster them, describe the clusters and write the results to ``out``.

    Args:
        data: a CSV/TSV/JSONL/Parquet file or packaged dataset name; a label column is optional.
        model: encoder (registry name, HF directory or hub id); default ``minilm``.
        run: a trained run whose encoder embeds the texts (instead of ``model``).
        k: number of k-means clusters, or ``"auto"`` to pick it by silhouette over 2..12.
        algorithm: ``kmeans`` or ``hdbscan`` (HDBSCAN finds k itself and marks noise as -1).
        out: output directory; default ``runs/cluster-<data>-<time>``.
        console: a rich console to show the embedding progress on.

    Returns:
        The contents of ``clusters.json`` plus ``out``.
    """
    from tunesmith.classic.embeddings import SentenceEncoder
    from tunesmith.data.texts import load_texts
    from tunesmith.training.rundir import atomic_write_json, write_jsonl

    if algorithm not in ALGORITHMS:
        raise UserError(f"unknown clustering algorithm {algorithm!r}; choose one of: {', '.join(ALGORITHMS)}")
    if isinstance(k, str) and k != "auto":
        if not k.isdigit():
            raise UserError(f"--k must be a whole number or auto, got {k!r}")
        k = int(k)
    texts = load_texts(data, text_col, label_col, require_labels=False)
    if len(texts) < 3:
        raise UserError(f"{data}: clustering needs at least 3 texts, got {len(texts)}")
    encoder = SentenceEncoder.load(model, run=run, max_length=max_length)
    vectors = encoder.encode(texts.texts, batch_size=batch_size, console=console, description="embedding texts")
    found = cluster_vectors(vectors, k=k, algorithm=algorithm, seed=seed)
    assignments = found.pop("assignments")
    target = Path(out) if out is not None else default_cluster_dir(data)
    sizes = Counter(int(a) for a in assignments)
    terms = ctfidf_top_terms(texts.texts, assignments, n_terms=n_terms)
    result: dict[str, Any] = {
        "data": data,
        "model": run or model or "minilm",
        "n": len(texts),
        **found,
        "sizes": {str(c): sizes[c] for c in sorted(sizes)},
        "top_terms": {str(c): [t["term"] for t in ts] for c, ts in terms.items()},
        "top_term_scores": {str(c): ts for c, ts in terms.items()},
    }
    if texts.labels is not None:
        result["label_col"] = texts.label_col
        result["against_labels"] = agreement(texts.labels, assignments.tolist())
        result["labels_per_cluster"] = {
            str(c): dict(Counter(lab for lab, a in zip(texts.labels, assignments, strict=True) if a == c).most_common())
            for c in sorted(sizes)
        }
    records = [{"row": r, "text": t, "cluster": int(a)} for r, t, a in zip(texts.rows, texts.texts, assignments, strict=True)]
    write_jsonl(target / "assignments.jsonl", records)
    atomic_write_json(target / "clusters.json", result)
    plot_projection(vectors, assignments, target / "clusters.png", title=f"{data}: {result['k']} clusters ({algorithm})")
    result["out"] = str(target)
    return result
