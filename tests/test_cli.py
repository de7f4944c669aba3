"""End to end through the console script: train -> predict -> eval, and every bad input exits 2."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_texts, write_csv
from tunesmith.cli import main


def tiny_flags(tiny_model: Path) -> list[str]:
    return ["--model", str(tiny_model), "--epochs", "1", "--batch-size", "8", "--max-length", "32", "--precision", "fp32", "--threads", "1"]


def test_train_predict_eval(tmp_path, tiny_model, spam_csv, capsys):
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            "--task",
            "classify",
            "--train",
            str(spam_csv),
            "--text-col",
            "text",
            "--label-col",
            "label",
            "--out",
            str(run),
            *tiny_flags(tiny_model),
        ]
    )
    assert rc == 0
    for name in (
        "config.yaml",
        "data.json",
        "doctor.json",
        "report.html",
        "metrics.json",
        "history.jsonl",
        "eval_predictions.jsonl",
        "model/config.json",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    ev = metrics["eval"]
    assert set(ev) >= {
        "accuracy",
        "macro_f1",
        "micro_f1",
        "weighted_f1",
        "per_class",
        "confusion_matrix",
        "majority_baseline",
        "tfidf_svm_baseline",
    }
    # the synthetic classes are separable by their words: the classical baseline must find that
    assert ev["tfidf_svm_baseline"]["accuracy"] > 0.9
    assert sum(map(sum, ev["confusion_matrix"])) == ev["n"] == 24
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert any("loss" in h for h in history) and any("eval_accuracy" in h for h in history)
    assert len((run / "eval_predictions.jsonl").read_text().splitlines()) == 24

    # the model directory is plain transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(run / "model")
    AutoTokenizer.from_pretrained(run / "model")
    assert set(model.config.id2label.values()) == {"ham", "spam"}

    capsys.readouterr()
    assert main(["predict", str(run), "--text", "free prize now", "--text", "lunch tomorrow", "--json"]) == 0
    printed = capsys.readouterr().out
    assert printed.count('"label"') == 2

    unlabelled = tmp_path / "new.jsonl"
    unlabelled.write_text("".join(json.dumps({"text": t}) + "\n" for t, _ in make_texts(5, seed=3)))
    out_csv = tmp_path / "pred.csv"
    assert main(["predict", str(run), "--input", str(unlabelled), "--output", str(out_csv)]) == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 5 and {"row", "text", "label", "score", "p_ham", "p_spam"} <= set(rows[0])

    holdout = write_csv(tmp_path / "holdout.csv", make_texts(30, seed=7))
    assert main(["eval", str(run), "--data", str(holdout)]) == 0
    written = json.loads((run / "eval" / "holdout" / "metrics.json").read_text())
    assert written["n"] == 30 and 0.0 <= written["accuracy"] <= 1.0


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


GOOD = "text,label\n" + "".join(f"hello there {i},{'a' if i % 2 else 'b'}\n" for i in range(20))

BAD_INPUTS = {
    "missing file": (None, "file not found"),
    "empty file": ("", "empty"),
    "header only": ("text,label\n", "no data rows"),
    "binary": (b"\x00\x01\x02PK\x03\x04" * 50, "not"),
    "not utf-8": (b"text,label\nhello,a\n" + "caf\xe9 au lait,b\n".encode("latin-1"), "line 3"),
    "missing column": ("body,label\nhi,a\nho,b\n", "columns found"),
    "empty text": ("text,label\nhi,a\n,b\nho,b\n", "empty text"),
    "empty label": ("text,label\nhi,a\nho,\nhu,b\n", "label"),
    "single class": ("text,label\n" + "".join(f"t{i},a\n" for i in range(10)), "single class"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_training_input_exits_2_with_a_message(tmp_path, tiny_model, capsys, case):
    content, expected = BAD_INPUTS[case]
    path = tmp_path / "data.csv"
    if content is not None:
        _write(path, content)
    extra = ["--text-col", "text"] if case == "missing column" else []
    rc = main(["train", "--train", str(path), "--out", str(tmp_path / "run"), *extra, *tiny_flags(tiny_model)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "error:" in err and expected in err and "Traceback" not in err
    assert not (tmp_path / "run").exists(), "bad input must not leave a half-made run directory"


def test_malformed_jsonl_line_is_named(tmp_path, tiny_model, capsys):
    path = _write(tmp_path / "data.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": \n{"text": "c", "label": "y"}\n')
    assert main(["train", "--train", str(path), *tiny_flags(tiny_model)]) == 2
    assert "line 2" in capsys.readouterr().err


def test_eval_label_never_seen_in_training(tmp_path, tiny_model, capsys):
    train = _write(tmp_path / "train.csv", GOOD)
    ev = _write(tmp_path / "eval.csv", "text,label\nnew text,c\nother,a\n")
    assert main(["train", "--train", str(train), "--eval", str(ev), *tiny_flags(tiny_model)]) == 2
    err = capsys.readouterr().err
    assert "'c'" in err and "never seen" in err.replace("\n", " ") or "not in training" in err


def test_invalid_flags_are_collected(tmp_path, capsys):
    assert main(["train", "--lr", "-1", "--epochs", "abc", "--method", "qlora"]) == 2
    err = capsys.readouterr().err
    assert "3 invalid settings" in err and "`training.lr`" in err and "`model.method`" in err


def test_model_that_is_not_there(tmp_path, spam_csv, capsys):
    rc = main(["train", "--train", str(spam_csv), "--model", str(tmp_path / "no" / "such" / "model"), "--out", str(tmp_path / "r")])
    assert rc == 2 and "model directory not found" in capsys.readouterr().err


def test_unreachable_hub_id_fails_clearly(spam_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["train", "--train", str(spam_csv), "--model", "someone/not-a-model-xyz", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "could not load model 'someone/not-a-model-xyz'" in err and "not in the local cache" in err


def test_run_dir_errors(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nothing"), "--text", "hi"]) == 2
    assert "run directory not found" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--data", "x.csv"]) == 2
    assert "not a tunesmith run" in capsys.readouterr().err


def test_no_traceback_from_a_real_process(tmp_path):
    """The installed entry point, as a user runs it: exit code 2 and one message."""
    proc = subprocess.run(
        [sys.executable, "-m", "tunesmith", "train", "--train", str(tmp_path / "missing.csv")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "file not found" in proc.stderr and "Traceback" not in proc.stderr


def test_list_verbs(capsys):
    assert main(["data", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(r["name"] == "sms_spam" for r in rows)
    assert main(["models", "list", "--json"]) == 0
    assert any(r["name"] == "minilm" for r in json.loads(capsys.readouterr().out))


def test_every_verb_has_help(capsys):
    from tunesmith.cli import VERBS

    for verb in VERBS:
        with pytest.raises(SystemExit) as exc:
            main([*verb.split(), "--help"])
        assert exc.value.code == 0
        assert "example" in capsys.readouterr().out


def test_hub_id_without_network_fails_fast(spam_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    rc = main(["train", "--train", str(spam_csv), "--model", "someone/not-a-model-xyz", "--out", str(tmp_path / "r")])
    assert rc == 2 and "unreachable" in capsys.readouterr().err


def test_prediction_rows_of_every_task_flatten_to_csv(tmp_path):
    from tunesmith.commands.output import write_records

    records = [
        {"row": 2, "text": "a", "label": "spam", "score": 0.9, "probabilities": {"ham": 0.1, "spam": 0.9}},
        {"row": 3, "text": "b", "value": 1.5, "values": {"score": 1.5}},
        {"row": 4, "text": "c", "entities": [{"text": "Anne", "type": "PER", "start": 0, "end": 4, "score": 0.8}], "tags": ["B-PER"]},
        {"row": 5, "text": "d", "labels": ["x", "y"], "probabilities": {"x": 0.7, "y": 0.6}},
        {"row": 6, "text": "e", "heads": {"spam": {"label": "ham", "score": 0.8}, "rating": {"value": 0.3}}},
    ]
    path = tmp_path / "p.csv"
    write_records(records, str(path))
    rows = list(csv.DictReader(path.open()))
    assert rows[0]["p_spam"] == "0.900000" and rows[1]["value_score"] == "1.500000"
    assert json.loads(rows[2]["entities"])[0]["type"] == "PER" and rows[3]["labels"] == "x|y"
    assert rows[4]["spam.label"] == "ham" and rows[4]["rating.value"] == "0.300000"


def test_top_level_help_lists_every_verb(capsys):
    from tunesmith.cli import VERBS

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    assert all(verb.split()[0] in printed for verb in VERBS)
