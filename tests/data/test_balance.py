"""Over- and undersampling of the training split: equal counts, eval untouched, deterministic."""

from __future__ import annotations

from collections import Counter

import pytest

from conftest import make_texts, write_csv
from tunesmith.config import build_config
from tunesmith.data.balance import balance
from tunesmith.data.texts import LabelledTexts
from tunesmith.errors import UserError
from tunesmith.tasks.classify import prepare


def texts(counts: dict[str, int]) -> LabelledTexts:
    labels = [label for label, n in counts.items() for _ in range(n)]
    return LabelledTexts(
        source="mem",
        texts=[f"text {i}" for i in range(len(labels))],
        labels=labels,
        rows=list(range(2, len(labels) + 2)),
        text_col="text",
        label_col="label",
    )


def test_oversample_repeats_minorities_evenly_up_to_the_majority():
    data = texts({"a": 50, "b": 7, "c": 20})
    out, report = balance(data, "oversample", seed=1)
    assert Counter(out.labels) == {"a": 50, "b": 50, "c": 50}
    assert report["before"] == {"a": 50, "b": 7, "c": 20} and report["after"] == {"a": 50, "b": 50, "c": 50}
    assert report["added"] == 150 - 77
    copies = Counter(out.texts)
    assert set(copies) == set(data.texts), "every original is kept"
    b_copies = [copies[t] for t, lab in zip(data.texts, data.labels) if lab == "b"]
    assert max(b_copies) - min(b_copies) <= 1, "each minority example is repeated as evenly as possible"
    assert out.rows == sorted(out.rows), "file order kept"


def test_undersample_keeps_a_distinct_subset_of_the_smallest_size():
    data = texts({"a": 50, "b": 7, "c": 20})
    out, report = balance(data, "undersample", seed=1)
    assert Counter(out.labels) == {"a": 7, "b": 7, "c": 7}
    assert len(set(out.texts)) == len(out.texts) == 21
    assert report["removed"] == 77 - 21
    assert set(out.texts) <= set(data.texts)


def test_same_seed_same_result_other_seed_other_result():
    data = texts({"a": 60, "b": 9})
    for how in ("oversample", "undersample"):
        first, _ = balance(data, how, seed=3)
        again, _ = balance(data, how, seed=3)
        other, _ = balance(data, how, seed=4)
        assert first.texts == again.texts
        assert first.texts != other.texts


def test_none_and_bad_input():
    data = texts({"a": 3, "b": 2})
    same, report = balance(data, "none", seed=0)
    assert same is data and report["method"] == "none"
    with pytest.raises(UserError, match="oversample"):
        balance(data, "smote", seed=0)
    unlabelled = LabelledTexts("mem", ["x"], None, [2], "text", None)
    with pytest.raises(UserError, match="needs labels"):
        balance(unlabelled, "oversample", seed=0)


@pytest.mark.parametrize("how", ["oversample", "undersample"])
def test_prepare_balances_only_the_training_split(tmp_path, how):
    path = write_csv(tmp_path / "spam.csv", make_texts(200))
    plain = prepare(build_config({"data": {"train": str(path)}}))
    balanced = prepare(build_config({"data": {"train": str(path), "balance": how}}))
    counts = Counter(balanced.train.labels)
    assert len(set(counts.values())) == 1, counts
    assert balanced.eval.texts == plain.eval.texts and balanced.eval.labels == plain.eval.labels, "eval is never resampled"
    assert balanced.report["balance"]["method"] == how
    assert balanced.report["balance"]["before"] == dict(sorted(Counter(plain.train.labels).items()))
    assert balanced.report["train_size"] == len(balanced.train)
    assert balanced.report["class_counts_eval"] == plain.report["class_counts_eval"]
    again = prepare(build_config({"data": {"train": str(path), "balance": how}}))
    assert again.train.texts == balanced.train.texts
    assert "balance" not in plain.report
