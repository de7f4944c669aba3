"""load_texts and prepare_classification on tiny generated files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunesmith.config import DataConfig
from tunesmith.data import LABEL_COLUMN_NAMES, TEXT_COLUMN_NAMES, LabelledTexts, load_texts, prepare_classification
from tunesmith.data.texts import natural_key, normalise_label
from tunesmith.errors import UserError


def csv_file(tmp_path: Path, name: str, header: str, rows: list[str]) -> str:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return str(path)


def load_error(source: str, **kwargs: object) -> str:
    with pytest.raises(UserError) as info:
        load_texts(source, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def prepare_error(config: DataConfig, seed: int = 42) -> str:
    with pytest.raises(UserError) as info:
        prepare_classification(config, seed)
    return str(info.value)


def balanced_rows(n_per_class: int, classes: tuple[str, ...] = ("neg", "pos")) -> list[str]:
    return [f"text {label} {i},{label}" for label in classes for i in range(n_per_class)]


# --- columns ----------------------------------------------------------------------------------


def test_name_lists_are_disjoint_and_lower_case() -> None:
    assert not set(TEXT_COLUMN_NAMES) & set(LABEL_COLUMN_NAMES)
    assert all(name == name.lower() for name in TEXT_COLUMN_NAMES + LABEL_COLUMN_NAMES)


def test_columns_detected_ignoring_case(tmp_path: Path) -> None:
    source = csv_file(tmp_path, "d.csv", "id,Sentence,Sentiment", ["1,good film,pos", "2,bad film,neg"])
    data = load_texts(source)
    assert (data.text_col, data.label_col) == ("Sentence", "Sentiment")
    assert data.texts == ["good film", "bad film"]
    assert data.labels == ["pos", "neg"]
    assert data.rows == [2, 3]
    assert data.source == source


def test_text_list_order_decides_between_candidates(tmp_path: Path) -> None:
    source = csv_file(tmp_path, "news.csv", "title,text,label", ["T,body text,a"])
    assert load_texts(source).text_col == "text"


def test_explicit_columns_and_case_insensitive_match(tmp_path: Path) -> None:
    source = csv_file(tmp_path, "d.csv", "Words,Verdict", ["hello,yes"])
    data = load_texts(source, text_col="words", label_col="VERDICT")
    assert (data.text_col, data.label_col, data.texts, data.labels) == ("Words", "Verdict", ["hello"], ["yes"])


def test_single_string_column_is_the_text(tmp_path: Path) -> None:
    source = csv_file(tmp_path, "d.csv", ",words,label", ["0,hello there,a", "1,bye now,b"])
    assert load_texts(source).text_col == "words"


def test_requested_column_missing(tmp_path: Path) -> None:
    source = csv_file(tmp_path, "sms.csv", "message,label", ["hi,a"])
    message = load_error(source, text_col="txt")
    assert "sms.csv: no text column named 'txt'" in message
    assert "columns found: message, label" in message
    assert "--text-col" in message
    message = load_error(source, label_col="lable")
    assert "no label column named 'lable'" in message and "did you mean --label-col 'label'?" in message


def test_no_label_column_detected(tmp_path: Path) -> None:
    source = csv_file(tmp_path, "d.csv", "text,verdict", ["hi,yes"])
    message = load_error(source)
    assert "d.csv: no label column found among the columns text, verdict" in message
    assert "--label-col NAME; perhaps --label-col 'verdict'" in message


def test_no_text_column_detected(tmp_path: Path) -> None:
    source = csv_file(tmp_path, "d.csv", "a,b,label", ["hi,there,x"])
    message = load_error(source)
    assert "d.csv: no text column found among the columns a, b, label" in message
    assert "several columns could hold it (a, b)" in message
    assert "--text-col NAME" in message


def test_header_note_only_for_delimited_files(tmp_path: Path) -> None:
    assert "The first line is read as the header" in load_error(csv_file(tmp_path, "nohead.csv", "hello,1", ["world,0"]))
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a", "verdict": "x"}\n')
    assert "The first line is read as the header" not in load_error(str(jsonl))


def test_text_and_label_same_column(tmp_path: Path) -> None:
    source = csv_file(tmp_path, "d.csv", "text,label", ["hi,a"])
    assert "both name column 'text'" in load_error(source, text_col="text", label_col="text")


# --- values -----------------------------------------------------------------------------------


def test_empty_texts_are_reported_with_lines(tmp_path: Path) -> None:
    source = csv_file(tmp_path, "sms.csv", "text,label", ["ok,a", "  ,a", "fine,b", '"",b', ",a"])
    message = load_error(source)
    assert "sms.csv: 3 rows have an empty text in column 'text' (lines 3, 5, 6); remove or fill them" in message


def test_many_empty_texts_show_first_five(tmp_path: Path) -> None:
    source = csv_file(tmp_path, "d.csv", "text,label", [",a"] * 8)
    assert "8 rows have an empty text in column 'text' (lines 2, 3, 4, 5, 6, ... 3 more)" in load_error(source)


@pytest.mark.parametrize("missing", ["", "nan", "NaN", "null"])
def test_missing_labels(tmp_path: Path, missing: str) -> None:
    source = csv_file(tmp_path, "d.csv", "text,label", ["a,x", f"b,{missing}", "c,y"])
    message = load_error(source)
    assert "d.csv: 1 row has no label in column 'label' (empty, null or NaN; line 3)" in message


def test_missing_labels_in_jsonl_and_parquet(tmp_path: Path) -> None:
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in [{"text": "a", "label": None}, {"text": "b", "label": 1}, {"text": "c"}]))
    assert "2 rows have no label in column 'label' (empty, null or NaN; lines 1, 3)" in load_error(str(jsonl))
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "label": [1.0, float("nan")]}), parquet)
    assert "1 row has no label in column 'label' (empty, null or NaN; line 2)" in load_error(str(parquet))


def test_text_and_label_problems_reported_together(tmp_path: Path) -> None:
    source = csv_file(tmp_path, "d.csv", "text,label", [",a", "b,"])
    message = load_error(source)
    assert message.startswith(f"{source} has 2 problems:")
    assert "empty text in column 'text' (line 2)" in message and "no label in column 'label' (empty, null or NaN; line 3)" in message


def test_label_normalisation(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    records = [{"text": "a", "label": 1.0}, {"text": "b", "label": True}, {"text": "c", "label": " pos "}, {"text": 7, "label": 2}]
    path.write_text("\n".join(json.dumps(r) for r in records))
    data = load_texts(str(path))
    assert data.labels == ["1", "true", "pos", "2"]
    assert data.texts[3] == "7"
    assert [normalise_label(v) for v in ("1.0", "-3.00", "1.5", False, 10, "none")] == ["1", "-3", "1.5", "false", "10", "none"]


def test_nested_label_rejected(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "a", "label": ["x", "y"]}))
    assert "1 row has a list or object as the label in column 'label' (line 1)" in load_error(str(path))


def test_labels_optional(tmp_path: Path) -> None:
    unlabelled = csv_file(tmp_path, "u.csv", "text", ["hello", "world"])
    data = load_texts(unlabelled, require_labels=False)
    assert data.labels is None and data.label_col is None and data.texts == ["hello", "world"]
    assert "no label column found" in load_error(unlabelled)
    labelled = csv_file(tmp_path, "l.csv", "text,label", ["hello,a"])
    assert load_texts(labelled, require_labels=False).labels == ["a"]
    blank_labels = csv_file(tmp_path, "b.csv", "text,label", ["hello,", "world,"])
    assert load_texts(blank_labels, require_labels=False).labels is None


def test_subset_and_len(tmp_path: Path) -> None:
    data = load_texts(csv_file(tmp_path, "d.csv", "text,label", ["a,x", "b,y", "c,x"]))
    part = data.subset([2, 0])
    assert isinstance(part, LabelledTexts) and len(part) == 2
    assert (part.texts, part.labels, part.rows) == (["c", "a"], ["x", "x"], [4, 2])


def test_natural_sort() -> None:
    assert sorted(["10", "2", "1", "b", "a10", "a9"], key=natural_key) == ["1", "2", "10", "a9", "a10", "b"]


# --- prepare_classification -------------------------------------------------------------------


def test_dedupe_report(tmp_path: Path) -> None:
    rows = balanced_rows(10) + ["text neg 0,neg", "text neg 1,pos", "text neg 1,neg", "text pos 3,pos"]
    source = csv_file(tmp_path, "d.csv", "text,label", rows)
    prepared = prepare_classification(DataConfig(train=source), seed=1)
    report = prepared.report
    assert report["rows_read"] == 24
    assert report["duplicates_removed"] == 4
    assert report["conflicting_duplicates"] == 1
    assert report["train_size"] + report["eval_size"] == 20
    assert report["split"] == "stratified holdout 20%, seed 1"
    assert prepared.labels == ["neg", "pos"]
    json.dumps(report)  # must be JSON-serialisable
    kept = prepare_classification(DataConfig(train=source, dedupe=False), seed=1).report
    assert (kept["duplicates_removed"], kept["train_size"] + kept["eval_size"]) == (0, 24)


def test_split_is_stratified_and_deterministic(tmp_path: Path) -> None:
    source = csv_file(tmp_path, "d.csv", "text,label", balanced_rows(30, ("a", "b")) + balanced_rows(10, ("c",)))
    config = DataConfig(train=source, eval_fraction=0.25)
    first = prepare_classification(config, seed=3)
    expected = {"a": 18 * 30 / 70, "b": 18 * 30 / 70, "c": 18 * 10 / 70}
    assert all(abs(first.report["class_counts_eval"][k] - v) < 1 for k, v in expected.items())
    assert len(first.eval) == 18 and len(first.train) == 52
    assert not set(first.train.texts) & set(first.eval.texts)
    assert first.train.rows == sorted(first.train.rows)
    again = prepare_classification(config, seed=3)
    assert (again.train.texts, again.eval.texts) == (first.train.texts, first.eval.texts)
    assert prepare_classification(config, seed=4).eval.texts != first.eval.texts


def test_labels_sorted_naturally(tmp_path: Path) -> None:
    source = csv_file(tmp_path, "d.csv", "text,label", balanced_rows(5, ("10", "2", "1")))
    assert prepare_classification(DataConfig(train=source, eval_fraction=0.4), seed=0).labels == ["1", "2", "10"]


def test_single_class(tmp_path: Path) -> None:
    source = csv_file(tmp_path, "sms.csv", "text,label", [f"t{i},spam" for i in range(120)])
    message = prepare_error(DataConfig(train=source))
    assert "sms.csv: column 'label' has a single class 'spam' (120 rows); classification needs at least two classes" in message


def test_class_with_one_example(tmp_path: Path) -> None:
    source = csv_file(tmp_path, "d.csv", "text,label", balanced_rows(10) + ["lonely,rare"])
    message = prepare_error(DataConfig(train=source))
    assert "1 class in column 'label' has a single example ('rare'; line 22)" in message
    assert "--eval FILE" in message and "remove the class" in message


def test_eval_share_too_small_for_classes(tmp_path: Path) -> None:
    source = csv_file(tmp_path, "d.csv", "text,label", balanced_rows(2, ("a", "b", "c", "d")))
    message = prepare_error(DataConfig(train=source, eval_fraction=0.1))
    assert "a 10% eval split of 8 rows leaves 1 eval examples, too few to hold each of the 4 classes (a, b, c, d)" in message
    assert "--eval FILE" in message


def test_eval_file(tmp_path: Path) -> None:
    train = csv_file(tmp_path, "train.csv", "text,label", balanced_rows(4))
    evaluation = csv_file(tmp_path, "eval.csv", "text,label", ["new pos,pos", "new neg,neg", "new neg,neg", "text pos 1,pos"])
    prepared = prepare_classification(DataConfig(train=train, eval=evaluation), seed=0)
    assert len(prepared.train) == 8
    assert prepared.eval.texts == ["new pos", "new neg", "text pos 1"]
    assert prepared.eval.rows == [2, 3, 5]
    report = prepared.report
    assert (report["split"], report["eval_source"], report["eval_duplicates_removed"], report["eval_texts_in_train"]) == (
        "eval file",
        evaluation,
        1,
        1,
    )
    assert report["class_counts_eval"] == {"neg": 1, "pos": 2}


def test_eval_file_with_other_column_names(tmp_path: Path) -> None:
    train = csv_file(tmp_path, "train.csv", "text,label", balanced_rows(4))
    evaluation = csv_file(tmp_path, "eval.csv", "sentence,class", ["hello,pos", "bye,neg"])
    prepared = prepare_classification(DataConfig(train=train, eval=evaluation), seed=0)
    assert (prepared.eval.text_col, prepared.eval.label_col, prepared.eval.labels) == ("sentence", "class", ["pos", "neg"])


def test_eval_label_unseen_in_training(tmp_path: Path) -> None:
    train = csv_file(tmp_path, "train.csv", "text,label", balanced_rows(4))
    evaluation = csv_file(tmp_path, "eval.csv", "text,label", ["a,pos", "b,maybe", "c,neg", "d,maybe", "e,other"])
    message = prepare_error(DataConfig(train=train, eval=evaluation))
    assert "eval.csv: 2 labels never seen in training: 'maybe' (2 rows), 'other' (1 rows); lines 3, 5, 6" in message
    assert "Labels in" in message and "train.csv: neg, pos" in message


def test_read_labels_false_ignores_whatever_the_label_column_holds(tmp_path):
    """predict --input on a multi-label JSONL: list labels must not stop the texts from loading."""
    import json as _json

    path = tmp_path / "ml.jsonl"
    path.write_text("".join(_json.dumps({"text": f"t{i}", "labels": ["a", "b"]}) + "\n" for i in range(3)))
    texts = load_texts(str(path), require_labels=False, read_labels=False)
    assert texts.texts == ["t0", "t1", "t2"] and texts.labels is None and texts.text_col == "text"
