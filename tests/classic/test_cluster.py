"""Clustering: the deterministic pieces on synthetic vectors, then the verb end to end on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import HAM_WORDS, SPAM_WORDS, make_texts, write_csv
from tunesmith.classic.cluster import agreement, choose_k, cluster_texts, cluster_vectors, ctfidf_top_terms, silhouette
from tunesmith.errors import UserError


def _blobs(centres: int, per: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, 16)) * 5
    x = np.concatenate([m + rng.normal(scale=0.3, size=(per, 16)) for m in means])
    return x.astype(np.float32), np.repeat(np.arange(centres), per)


@pytest.mark.parametrize("centres", [2, 4])
def test_choose_k_finds_the_number_of_blobs(centres):
    x, _ = _blobs(centres)
    k, scores = choose_k(x, seed=0)
    assert k == centres
    assert set(scores) == set(range(2, 13))


def test_choose_k_range_is_capped_by_n():
    x, _ = _blobs(2, per=3)
    _, scores = choose_k(x)
    assert max(scores) == 5
    with pytest.raises(UserError, match="at least 3 texts"):
        choose_k(x[:2])


def test_cluster_vectors_recovers_blobs_with_kmeans_and_hdbscan():
    x, y = _blobs(3, per=30)
    found = cluster_vectors(x, k="auto")
    assert found["k"] == 3 and found["silhouette"] > 0.8
    assert agreement([str(v) for v in y], found["assignments"].tolist())["nmi"] == pytest.approx(1.0)
    dense = cluster_vectors(x, algorithm="hdbscan")
    assert dense["k"] == 3 and agreement([str(v) for v in y], dense["assignments"].tolist())["ari"] > 0.9
    with pytest.raises(UserError, match="kmeans, hdbscan"):
        cluster_vectors(x, algorithm="dbscan")


def test_silhouette_is_none_for_one_cluster():
    x, _ = _blobs(2)
    assert silhouette(x, [0] * len(x)) is None


def test_agreement_purity_nmi_ari():
    perfect = agreement(["a", "a", "b", "b"], [1, 1, 0, 0])
    assert perfect == {"purity": 1.0, "nmi": pytest.approx(1.0), "ari": pytest.approx(1.0)}
    mixed = agreement(["a", "b", "a", "b"], [0, 0, 1, 1])
    assert mixed["purity"] == 0.5 and mixed["nmi"] == pytest.approx(0.0, abs=1e-9)
    assert agreement(["a", "a", "b", "b"], [0, 0, 0, 0])["purity"] == 0.5


def test_ctfidf_picks_each_clusters_own_vocabulary():
    texts = ["cash prize claim", "prize cash win", "lunch dinner mum", "dinner lunch home", "shared prize lunch"]
    terms = ctfidf_top_terms(texts, [0, 0, 1, 1, -1], n_terms=2, stop_words=None)
    assert set(terms) == {0, 1}  # noise is not described
    assert {t["term"] for t in terms[0]} == {"cash", "prize"}
    assert {t["term"] for t in terms[1]} == {"dinner", "lunch"}
    # a term shared by both clusters ranks below one that only one cluster uses
    shared = ctfidf_top_terms(["alpha beta", "alpha gamma"], [0, 1], stop_words=None)
    assert shared[0][0]["term"] == "beta" and shared[1][0]["term"] == "gamma"


def test_cluster_texts_writes_assignments_clusters_and_plot(tmp_path, tiny_model):
    rows = make_texts(60, seed=1)
    data = write_csv(tmp_path / "d.csv", rows)
    result = cluster_texts(str(data), model=str(tiny_model), k="auto", out=tmp_path / "out", max_length=32)
    out = tmp_path / "out"
    saved = json.loads((out / "clusters.json").read_text())
    assert 2 <= saved["k"] <= 12 and saved["k"] == result["k"]
    assert sum(saved["sizes"].values()) == 60
    assert set(saved["against_labels"]) == {"purity", "nmi", "ari"}
    assert set(saved["silhouette_by_k"]) == {str(k) for k in range(2, 13)}
    lines = (out / "assignments.jsonl").read_text().splitlines()
    assert len(lines) == 60 and set(json.loads(lines[0])) == {"row", "text", "cluster"}
    assert (out / "clusters.png").read_bytes()[:4] == b"\x89PNG"
    vocabulary = set(SPAM_WORDS + HAM_WORDS)
    assert all(term in vocabulary or term.isdigit() for terms in saved["top_terms"].values() for term in terms)


def test_cluster_texts_fixed_k_without_labels(tmp_path, tiny_model):
    data = tmp_path / "u.csv"
    data.write_text("text\n" + "\n".join(t for t, _ in make_texts(12)) + "\n")
    result = cluster_texts(str(data), model=str(tiny_model), k=3, out=tmp_path / "o", max_length=32)
    assert result["k"] == 3 and "against_labels" not in result
    with pytest.raises(UserError, match="whole number or auto"):
        cluster_texts(str(data), model=str(tiny_model), k="many", out=tmp_path / "o")


def test_cluster_cli(tmp_path, tiny_model):
    from tunesmith.cli import main

    data = write_csv(tmp_path / "d.csv", make_texts(30))
    assert main(["cluster", str(data), "--model", str(tiny_model), "--k", "2", "--out", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "clusters.json").read_text())["k"] == 2
    assert main(["cluster", str(data), "--model", str(tiny_model), "--k", "0", "--out", str(tmp_path / "c")]) == 2
