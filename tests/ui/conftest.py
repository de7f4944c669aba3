"""UI fixtures: two finished tiny runs (trained once per session) and copies of them that a test may change."""

from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path

import pytest

from conftest import make_texts


def write_lang_csv(path: Path, n: int = 120) -> Path:
    """Spam/ham texts with a `lang` column (two languages), for per-language metrics."""
    rng = random.Random(3)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "lang"])
        for text, label in make_texts(n):
            w.writerow([text, label, rng.choice(["en", "fr"])])
    return path


@pytest.fixture(scope="session")
def ui_data(tmp_path_factory) -> Path:
    return write_lang_csv(tmp_path_factory.mktemp("ui-data") / "spam-lang.csv")


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory, tiny_model, ui_data) -> Path:
    """A runs directory with two finished runs: `spam-a` (doctor, report, per-language metrics; stuck at the majority
    class) and `spam-b` (a higher lr that separates the classes)."""
    import tunesmith

    root = tmp_path_factory.mktemp("ui-runs")
    # a random tiny model must learn its embeddings (tunesmith keeps a pre-trained encoder's fixed by default)
    common = {"model": str(tiny_model), "epochs": 2, "batch_size": 8, "max_length": 32, "precision": "fp32", "threads": 1,
              "freeze_embeddings": False}  # fmt: skip
    tunesmith.train({"data": {"train": str(ui_data), "lang_col": "lang"}}, **common, lr=1e-3, out=str(root / "spam-a"))
    b = {**common, "epochs": 5, "lr": 1e-2, "early_stopping": None, "doctor": False, "report": False}
    tunesmith.train({"data": {"train": str(ui_data)}}, **b, out=str(root / "spam-b"))
    return root


@pytest.fixture
def runs_copy(tmp_path, finished_runs) -> Path:
    """A copy of the finished runs that a test may add to (uploads, new runs)."""
    root = tmp_path / "runs"
    shutil.copytree(finished_runs, root, symlinks=True)
    return root


def make_chat_run(root: Path, name: str = "chatty") -> Path:
    """A finished-looking sft run holding a tiny random Llama with a chat template (chatting needs no training)."""
    import json

    from generative.conftest import make_tiny_llama
    from tunesmith.config import build_config, dump_config

    run = root / name
    make_tiny_llama(run / "model")
    config = build_config({"task": "sft", "data": {"train": "chat.jsonl"}, "model": {"model": str(run / "model"), "method": "lora"}})
    (run / "config.yaml").write_text(dump_config(config))
    (run / "metrics.json").write_text(json.dumps({"task": "sft", "eval": {"loss": 4.2, "perplexity": 66.7}}))
    return run
