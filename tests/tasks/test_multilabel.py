"""Multi-label classification end to end on the tiny BERT: label sets in, tuned per-label thresholds out."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest

import tunesmith
from tunesmith.cli import main
from tunesmith.config import build_config
from tunesmith.data.multilabel import iterative_split, load_label_sets, prepare_multilabel
from tunesmith.errors import UserError
from tunesmith.evaluate.metrics import multilabel_metrics
from tunesmith.tasks import task_for
from tunesmith.tasks.multilabel import THRESHOLDS_FILE, positive_weights, tune_thresholds

# each label is signalled by its own words (all in the tiny tokenizer's vocabulary); the fillers carry none
LABEL_WORDS = {"money": ["free", "prize", "win", "cash"], "urgent": ["urgent", "now", "call"], "food": ["lunch", "dinner"]}
FILLERS = ["claim", "offer", "txt", "meeting", "tomorrow", "later", "see", "you"]


def make_label_sets(n: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """Distinct texts whose labels are exactly the groups their words come from (about 1 in 7 has none)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        chosen = [name for name in LABEL_WORDS if rng.random() < 0.4]
        words = [w for name in chosen for w in rng.sample(LABEL_WORDS[name], 2)] + rng.sample(FILLERS, 3)
        rng.shuffle(words)
        rows.append((" ".join(words) + f" {i}", chosen))
    return rows


def write_label_csv(path, rows, sep="|"):
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "labels"])
        w.writerows([text, sep.join(labels)] for text, labels in rows)
    return path


def write_label_jsonl(path, rows):
    path.write_text("".join(json.dumps({"text": text, "labels": labels}) + "\n" for text, labels in rows), encoding="utf-8")
    return path


TINY_FLAGS = ["--epochs", "4", "--batch-size", "8", "--lr", "3e-3", "--max-length", "32", "--precision", "fp32", "--threads", "1"]


def flags(tiny_model) -> list[str]:
    return ["--model", str(tiny_model), *TINY_FLAGS]


def test_learns_tunes_thresholds_predicts_and_evaluates(tmp_path, tiny_args):
    data = write_label_csv(tmp_path / "train.csv", make_label_sets(200))
    run = tunesmith.train(
        {"task": "classify", "data": {"train": str(data), "multi_label": True}},
        **{**tiny_args, "epochs": 6, "lr": 3e-3},
        out=str(tmp_path / "run"),
    )
    m = run.metrics["eval"]
    assert set(m) >= {"micro_f1", "macro_f1", "subset_accuracy", "hamming_loss", "per_label", "thresholds", "at_threshold_0.5"}
    assert set(m) >= {"frequent_labels_baseline", "tfidf_ovr_baseline", "thresholds_tuned_on"}
    assert m["tfidf_ovr_baseline"]["micro_f1"] > 0.8, "the words decide the labels: the classical baseline must see that"
    assert m["micro_f1"] > m["frequent_labels_baseline"]["micro_f1"] and m["micro_f1"] > 0.6, m
    saved = json.loads((run.dir / "model" / THRESHOLDS_FILE).read_text())
    assert saved["labels"] == ["food", "money", "urgent"] and "eval set" in saved["tuned_on"]
    assert saved["thresholds"] == m["thresholds"]
    assert all(0.05 <= t <= 0.95 for t in saved["thresholds"].values())
    data_report = json.loads((run.dir / "data.json").read_text())
    assert data_report["train_size"] + data_report["eval_size"] == 200 and all(data_report["label_counts_eval"].values())
    history = [json.loads(line) for line in (run.dir / "history.jsonl").read_text().splitlines()]
    assert any("eval_micro_f1" in h and "eval_subset_accuracy" in h for h in history)
    records = [json.loads(line) for line in (run.dir / "eval_predictions.jsonl").read_text().splitlines()]
    assert len(records) == m["n"] and set(records[0]) >= {"row", "text", "gold", "labels", "probabilities"}

    pred = run.predict(["cash prize win free claim", "see you later tomorrow"])
    assert set(pred[0]["probabilities"]) == {"food", "money", "urgent"}
    assert pred[0]["probabilities"]["money"] > pred[1]["probabilities"]["money"]
    assert all(p["labels"] == [n for n in p["labels"] if p["probabilities"][n] >= saved["thresholds"][n]] for p in pred)

    metrics, records = run.evaluate(str(write_label_csv(tmp_path / "more.csv", make_label_sets(30, seed=7))))
    assert metrics["n"] == 30 and "at_threshold_0.5" in metrics and records[0]["row"] == 2
    assert isinstance(records[0]["gold"], list) and isinstance(records[0]["labels"], list)
    json.dumps(metrics)  # metrics.json material

    # the saved thresholds are what predict uses: 0 picks every label, 1 none
    for threshold, expected in ((0.0, ["food", "money", "urgent"]), (1.0, [])):
        saved["thresholds"] = dict.fromkeys(saved["labels"], threshold)
        (run.dir / "model" / THRESHOLDS_FILE).write_text(json.dumps(saved))
        assert sorted(tunesmith.load(run.dir).predict(["cash now"])[0]["labels"]) == expected


def test_cli_train_predict_eval_from_jsonl(tmp_path, tiny_model, capsys):
    train = write_label_jsonl(tmp_path / "train.jsonl", make_label_sets(80))
    ev = write_label_jsonl(tmp_path / "eval.jsonl", make_label_sets(24, seed=3))
    out = tmp_path / "run"
    args = ["train", "--task", "classify", "--multi-label", "--train", str(train), "--eval", str(ev), "--out", str(out)]
    assert main([*args, "--class-weights", "auto", "--label-smoothing", "0.1", *flags(tiny_model)]) == 0
    printed = capsys.readouterr().out
    assert "thresholds tuned on the run's eval set" in printed and "frequent-labels baseline always predicts" in printed
    assert json.loads((out / "metrics.json").read_text())["eval"]["n"] == 24
    assert (out / "model" / THRESHOLDS_FILE).is_file()

    assert main(["predict", str(out), "--text", "cash prize", "--text", "lunch dinner"]) == 0
    assert "labels" in capsys.readouterr().out
    assert main(["predict", str(out), "--text", "cash prize", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert isinstance(row["labels"], list) and set(row["probabilities"]) == {"food", "money", "urgent"}

    texts = tmp_path / "texts.csv"
    texts.write_text("text\ncash prize win\nlunch dinner later\n")
    assert main(["predict", str(out), "--input", str(texts), "--output", str(tmp_path / "pred.csv")]) == 0
    with (tmp_path / "pred.csv").open() as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == ["row", "text", "labels", "p_food", "p_money", "p_urgent"] and len(written) == 2

    assert main(["eval", str(out), "--data", str(ev)]) == 0
    assert "thresholds tuned on the training run's eval set" in capsys.readouterr().out
    assert (out / "eval" / "eval" / "metrics.json").is_file()


def test_label_cells_are_split_stripped_and_deduplicated(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,tags\none, a | b |a\ntwo,\nthree,b||c\n"four",c\n')
    data = load_label_sets(str(path))
    assert data.label_col == "tags" and data.label_sets == [["a", "b"], [], ["b", "c"], ["c"]]
    semi = tmp_path / "s.tsv"
    semi.write_text("text\tlabels\none\ta;b\ntwo\tb\n")
    assert load_label_sets(str(semi), label_sep=";").label_sets == [["a", "b"], ["b"]]
    jl = tmp_path / "d.jsonl"
    jl.write_text('{"text": "one", "labels": ["a", " a", "b"]}\n{"text": "two", "labels": "c"}\n{"text": "three", "labels": []}\n')
    assert load_label_sets(str(jl)).label_sets == [["a", "b"], ["c"], []]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"text": "a", "labels": ["x"]}\n{"text": "b", "labels": 3}\n{"text": "c", "labels": {"y": 1}}\n', "lines 2, 3"),
        ('{"text": "a", "labels": ["x"]}\n{"text": "b", "labels": ["y", 1]}\n', "line 2"),
        ('{"text": "a", "labels": ["x"]}\n{"text": "b"}\n{"text": "c", "labels": null}\n', "no label cell"),
    ],
    ids=["not-a-list", "non-string-in-list", "missing-field"],
)
def test_bad_jsonl_labels_name_their_lines(tmp_path, content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(UserError, match=expected):
        load_label_sets(str(path))


def test_bad_inputs_exit_2_through_the_cli(tmp_path, tiny_model, capsys):
    def train(path, *extra):
        return main(["train", "--multi-label", "--train", str(path), "--out", str(tmp_path / "run"), *extra, *flags(tiny_model)])

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a b", "labels": ["x"]}\n{"text": "c d", "labels": 7}\n{"text": "e f", "labels": ["y"]}\n')
    assert train(bad) == 2
    assert "line 2" in capsys.readouterr().err

    single = write_label_csv(tmp_path / "single.csv", [(f"text {i}", ["only"] if i % 2 else []) for i in range(20)])
    assert train(single) == 2
    assert "only the label 'only'" in capsys.readouterr().err

    good = write_label_csv(tmp_path / "train.csv", make_label_sets(40))
    ev = write_label_csv(tmp_path / "eval.csv", [("cash now", ["money"]), ("lunch", ["food", "dessert"]), ("x", ["dessert"])])
    assert train(good, "--eval", str(ev)) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "'dessert' (2 rows)" in err and "never seen in training" in err and "lines 3, 4" in err

    missing = tmp_path / "nolabels.csv"
    missing.write_text("text,notes\nhello,x\nworld,y\n")
    assert train(missing) == 2
    assert "--label-col" in capsys.readouterr().err
    assert not (tmp_path / "run").exists(), "bad input must not leave a half-made run directory"


def test_split_keeps_every_label_in_train_and_is_seeded():
    rows = make_label_sets(60, seed=1) + [("rare one", ["rare"]), ("rare two", ["rare"]), ("lonely", ["solo"])]
    sets = [labels for _, labels in rows]
    labels = sorted({name for s in sets for name in s})
    for fraction in (0.2, 0.5, 0.8):
        train_idx, eval_idx = iterative_split(sets, labels, fraction, seed=3)
        assert sorted(train_idx + eval_idx) == list(range(len(rows)))
        assert {name for i in train_idx for name in sets[i]} == set(labels), fraction
    assert iterative_split(sets, labels, 0.2, seed=3) == iterative_split(sets, labels, 0.2, seed=3)
    train_idx, eval_idx = iterative_split(sets, labels, 0.25, seed=0)
    assert 12 <= len(eval_idx) <= 20


def test_prepare_dedupes_and_reports(tmp_path):
    rows = make_label_sets(40)
    rows.append((rows[0][0], ["food"] if rows[0][1] != ["food"] else ["money"]))  # an exact duplicate text with other labels
    data = write_label_csv(tmp_path / "d.csv", rows)
    config = build_config({"data": {"train": str(data), "multi_label": True}})
    assert task_for(config).name == "multilabel" and config.metric == "micro_f1"
    prepared = prepare_multilabel(config.data, seed=0)
    assert prepared.report["duplicates_removed"] == 1 and prepared.report["conflicting_duplicates"] == 1
    assert len(prepared.train) + len(prepared.eval) == 40 and prepared.labels == ["food", "money", "urgent"]


def test_metrics_by_hand():
    # gold: {a}, {b, c}, {}, {a, b}   predicted: {a}, {b}, {}, {b, c}
    y_true = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 0]])
    y_pred = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 1, 1]])
    m = multilabel_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["subset_accuracy"] == pytest.approx(2 / 4)  # texts 1 and 3 exactly right
    assert m["hamming_loss"] == pytest.approx(3 / 12)  # c missed in text 2; a missed, c extra in text 4
    # micro: tp 3, fp 1, fn 2
    assert m["micro_precision"] == pytest.approx(3 / 4) and m["micro_recall"] == pytest.approx(3 / 5)
    assert m["micro_f1"] == pytest.approx(6 / 9)
    # macro: F1 of a 2/3, b 1, c 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    # samples: the empty text predicted empty is right (1)
    assert m["samples_f1"] == pytest.approx((1 + 2 / 3 + 1 + 1 / 2) / 4)
    assert m["per_label"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2, "predicted": 1}
    assert json.loads(json.dumps(m)) == m


def test_thresholds_and_positive_weights():
    y = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]])
    probs = np.array([[0.30, 0.9, 0.2], [0.25, 0.1, 0.7], [0.10, 0.8, 0.1], [0.12, 0.2, 0.3]])
    t = tune_thresholds(y, probs)
    assert t[0] == 0.25, "F1 is 1 from 0.15 to 0.25: the one nearest 0.5"
    assert t[1] == 0.5, "a flat F1 plateau keeps the threshold nearest 0.5"
    assert t[2] == 0.5, "no positives in eval: keep 0.5"
    y = np.zeros((101, 3), dtype=int)
    y[0, 0] = 1  # 1 positive, 100 negatives: clipped to 50
    y[:100, 1] = 1  # more positives than negatives: floored at 1
    y[:20, 2] = 1  # 20 positives, 81 negatives
    assert positive_weights(y).tolist() == pytest.approx([50.0, 1.0, 81 / 20])
