"""EDA augmentation: the operations, CJK per character, files with their sources marked, the CLI."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter

import pytest

from conftest import make_texts, write_csv
from tunesmith.cli import main
from tunesmith.config import DataConfig
from tunesmith.data.augment import AUGMENTED_FROM, augment_file, eda, is_cjk
from tunesmith.data.texts import load_texts, prepare_classification
from tunesmith.errors import UserError

SENTENCE = "the quick brown fox jumps over the lazy dog near the river bank today"
CHINESE = "我今天很高兴见到你们大家一起吃饭"


def test_same_seed_same_copy():
    a = [eda(SENTENCE, 0.2, random.Random(7)) for _ in range(3)]
    b = [eda(SENTENCE, 0.2, random.Random(7)) for _ in range(3)]
    assert a == b
    many = {eda(SENTENCE, 0.2, random.Random(seed)) for seed in range(20)}
    assert len(many) > 10 and SENTENCE not in many


def test_each_operation():
    words = SENTENCE.split()
    swapped = eda(SENTENCE, 0.2, random.Random(1), operation="swap").split()
    assert Counter(swapped) == Counter(words) and swapped != words
    deleted = eda(SENTENCE, 0.2, random.Random(1), operation="delete").split()
    assert 0 < len(deleted) < len(words) and not Counter(deleted) - Counter(words)
    inserted = eda(SENTENCE, 0.2, random.Random(1), operation="insert").split()
    assert len(inserted) == len(words) + round(0.2 * len(words)) and set(inserted) <= set(words)


def test_short_and_empty_texts():
    assert eda("hello", 0.1, random.Random(0)) == "hello hello", "one word can only grow"
    assert eda("   ", 0.1, random.Random(0)) == "   "
    with pytest.raises(UserError, match="alpha"):
        eda(SENTENCE, 0.0, random.Random(0))


def test_cjk_is_edited_per_character():
    assert is_cjk(CHINESE) and is_cjk("東京で会いましょう") and not is_cjk(SENTENCE) and not is_cjk("okay then 好")
    copies = [eda(CHINESE, 0.1, random.Random(seed)) for seed in range(10)]
    for copy in copies:
        assert " " not in copy, "no spaces are invented between characters"
        assert set(copy) <= set(CHINESE)
        assert len(CHINESE) - 8 <= len(copy) <= len(CHINESE) + 2
    assert any(c != CHINESE for c in copies)


def _read_csv(path):
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_augment_file_keeps_rows_marks_sources_and_labels(tmp_path):
    rows = make_texts(40)
    src = tmp_path / "train.csv"
    with src.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label"])
        w.writerows((i, t, lab) for i, (t, lab) in enumerate(rows))
    out = tmp_path / "aug.csv"
    result = augment_file(str(src), out, factor=3, alpha=0.2, seed=5)
    written = _read_csv(out)
    assert result.rows_out == len(written) == 40 * 4 and result.augmented == 120
    assert list(written[0]) == ["id", "text", "label", AUGMENTED_FROM]
    by_line = {line: row for line, row in zip(range(2, 42), rows)}  # header is line 1
    originals = [r for r in written if r[AUGMENTED_FROM] == ""]
    copies = [r for r in written if r[AUGMENTED_FROM] != ""]
    assert [(r["text"], r["label"]) for r in originals] == rows
    assert Counter(r[AUGMENTED_FROM] for r in copies) == {str(line): 3 for line in by_line}
    for r in copies:
        text, label = by_line[int(r[AUGMENTED_FROM])]
        assert r["label"] == label, "labels are preserved"
        assert r["id"] == str(int(r[AUGMENTED_FROM]) - 2), "other columns are carried over"
        assert set(r["text"].split()) <= set(text.split())
    # the output reads back as training data, the marker column ignored by detection
    back = load_texts(str(out))
    assert back.text_col == "text" and back.label_col == "label" and len(back) == 160

    again = tmp_path / "again.csv"
    augment_file(str(src), again, factor=3, alpha=0.2, seed=5)
    assert again.read_bytes() == out.read_bytes(), "same seed, same file"
    other = tmp_path / "other.csv"
    augment_file(str(src), other, factor=3, alpha=0.2, seed=6)
    assert other.read_bytes() != out.read_bytes()


def test_jsonl_output_and_cjk_rows(tmp_path):
    src = tmp_path / "zh.jsonl"
    src.write_text(
        "".join(json.dumps({"text": t, "label": lab}, ensure_ascii=False) + "\n" for t, lab in [(CHINESE, "pos"), (SENTENCE, "neg")]),
        encoding="utf-8",
    )
    out = tmp_path / "aug.jsonl"
    result = augment_file(str(src), out, factor=2, seed=1)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 6 and result.cjk_texts == 1
    assert records[0][AUGMENTED_FROM] is None and records[1][AUGMENTED_FROM] == 1
    zh_copies = [r["text"] for r in records if r[AUGMENTED_FROM] == 1]
    assert all(" " not in t for t in zh_copies) and all(r["label"] == "pos" for r in records if r[AUGMENTED_FROM] == 1)


def test_eval_out_holds_out_the_train_split_unaugmented(tmp_path):
    src = write_csv(tmp_path / "data.csv", make_texts(100))
    out, held = tmp_path / "train-eda.csv", tmp_path / "eval.csv"
    result = augment_file(str(src), out, factor=2, seed=42, eval_out=held, eval_fraction=0.2)
    expected = prepare_classification(DataConfig(train=str(src)), seed=42)
    eval_rows = _read_csv(held)
    assert [r["text"] for r in eval_rows] == expected.eval.texts, "the same split `tunesmith train` holds out"
    assert AUGMENTED_FROM not in eval_rows[0]
    written = _read_csv(out)
    assert len(written) == 3 * len(expected.train) and result.eval_rows == len(expected.eval)
    eval_lines = set(expected.eval.rows)
    assert not {int(r[AUGMENTED_FROM]) for r in written if r[AUGMENTED_FROM]} & eval_lines, "eval rows are never augmented"
    assert not set(r["text"] for r in written) & set(expected.eval.texts)


def test_packaged_labels_are_written_as_names(tmp_path):
    from tunesmith.data.packaged import packaged_path

    try:
        packaged_path("sms_spam")
    except UserError:
        pytest.skip("sms_spam data not installed")
    out = tmp_path / "sms.csv"
    augment_file("sms_spam", out, factor=1, seed=0)
    labels = {r["spam"] for r in _read_csv(out)}
    assert labels == {"ham", "spam"}


BAD = {
    "missing file": (["{missing}", "--out", "{out}"], "file not found"),
    "backtranslate": (["{src}", "--method", "backtranslate", "--out", "{out}"], "generative model"),
    "paraphrase": (["{src}", "--method", "paraphrase", "--out", "{out}"], "not available yet"),
    "zero factor": (["{src}", "--factor", "0", "--out", "{out}"], "--factor"),
    "bad alpha": (["{src}", "--alpha", "1.5", "--out", "{out}"], "--alpha"),
    "bad extension": (["{src}", "--out", "{dir}/aug.xlsx"], ".csv, .tsv or .jsonl"),
    "already augmented": (["{aug}", "--out", "{out}"], "already has an 'augmented_from' column"),
    "no label column": (["{nolabel}", "--out", "{out}"], "--label-col"),
    "out is input": (["{src}", "--out", "{src}"], "input file"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2(tmp_path, capsys, case):
    src = write_csv(tmp_path / "src.csv", make_texts(10))
    aug = tmp_path / "already.csv"
    augment_file(str(src), aug, seed=0)
    nolabel = tmp_path / "nolabel.csv"
    nolabel.write_text("text\nhello there\nhi\n", encoding="utf-8")
    argv, expected = BAD[case]
    fill = {"missing": tmp_path / "nope.csv", "out": tmp_path / "out.csv", "src": src, "aug": aug, "nolabel": nolabel, "dir": tmp_path}
    rc = main(["augment", *[a.format(**fill) for a in argv]])
    err = capsys.readouterr().err
    assert rc == 2 and "error:" in err and expected in err.replace("\n", " ") and "Traceback" not in err
    assert not (tmp_path / "out.csv").exists()


def test_cli_writes_and_says_how_to_train(tmp_path, capsys):
    src = write_csv(tmp_path / "src.csv", make_texts(30))
    out, held = tmp_path / "aug.csv", tmp_path / "eval.csv"
    assert main(["augment", str(src), "--method", "eda", "--factor", "2", "--out", str(out), "--eval-out", str(held), "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "EDA copies" in printed and f"--eval {held}" in printed
    assert len(_read_csv(out)) == 3 * (30 - len(_read_csv(held)))
