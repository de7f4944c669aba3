"""Shared fixtures: a tiny randomly initialised BERT with its own tokenizer, and tiny labelled data."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

SPAM_WORDS = ["free", "prize", "win", "cash", "claim", "urgent", "offer", "txt", "call", "now"]
HAM_WORDS = ["lunch", "meeting", "tomorrow", "home", "mum", "dinner", "later", "love", "see", "you"]


def make_tiny_model(path: Path, num_layers: int = 2) -> Path:
    """Save a tiny random BERT (hidden 32) and a word-piece tokenizer covering the fixture words."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,!?'")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *SPAM_WORDS, *HAM_WORDS, *letters, *[f"##{c}" for c in letters]]
    tokenizer = BertTokenizerFast(vocab={tok: i for i, tok in enumerate(dict.fromkeys(vocab))}, do_lower_case=True)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    import torch

    torch.manual_seed(0)  # the same tiny model in every session, so tests do not depend on their order
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_texts(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Separable synthetic spam/ham messages, about 30% spam, all distinct."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "spam" if rng.random() < 0.3 else "ham"
        words = rng.choices(SPAM_WORDS if label == "spam" else HAM_WORDS, k=rng.randint(3, 12))
        rows.append((" ".join(words) + f" {i}", label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("text", "label")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def spam_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "spam.csv", make_texts(120))


@pytest.fixture
def tiny_args(tiny_model) -> dict:
    """Config overrides for a fast run on the tiny model."""
    return {
        "model": str(tiny_model),
        "epochs": 2,
        "batch_size": 8,
        "lr": 1e-3,
        "max_length": 32,
        "precision": "fp32",
        "threads": 1,
        "doctor": False,
        # a randomly initialised model has no useful embeddings to keep fixed: it must learn them
        # (tests/training/test_levers.py covers the frozen default)
        "freeze_embeddings": False,
    }
