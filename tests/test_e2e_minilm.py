"""The real packaged MiniLM on a sample of the packaged SMS spam data (about a minute on 2 cores)."""

from __future__ import annotations

import random

import pytest

import tunesmith
from conftest import write_csv
from tunesmith.cli import main
from tunesmith.data import load_texts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sms_sample(tmp_path_factory):
    texts = load_texts("sms_spam")
    rng = random.Random(0)
    rows = list(dict(zip(texts.texts, texts.labels)).items())
    rng.shuffle(rows)
    return write_csv(tmp_path_factory.mktemp("sms") / "sms_sample.csv", rows[:600], header=("message", "category"))


def test_minilm_beats_the_majority_baseline(sms_sample, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--train", str(sms_sample), "--out", str(out), "--epochs", "2", "--lr", "1e-4"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "majority class" in printed and "TF-IDF + SVM" in printed and f"tunesmith predict {out}" in printed
    metrics = tunesmith.load(out).metrics["eval"]
    assert metrics["accuracy"] > metrics["majority_baseline"]["accuracy"] + 0.05
    assert metrics["per_class"]["spam"]["recall"] > 0.5, "the minority class is actually learned"
    pred = tunesmith.load(out).predict(
        ["WINNER!! You have won a free prize worth £1000. Call 09061701461 now to claim", "ok see you at home later"]
    )
    assert [p["label"] for p in pred] == ["1", "0"] or [p["label"] for p in pred] == ["spam", "ham"]
