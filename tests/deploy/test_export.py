"""`tunesmith export` on tiny runs: ONNX (fused, int8) and TorchScript reproduce the run, and say so in export.json."""

from __future__ import annotations

import csv
import importlib
import json
import random

import numpy as np
import pytest

import tunesmith
from conftest import HAM_WORDS, SPAM_WORDS, make_texts, write_csv
from tunesmith.cli import main
from tunesmith.deploy import export

PEOPLE = ["alice", "bob", "carol"]
PLACES = [["paris"], ["new", "york"], ["rome"]]
FILLER = ["we", "met", "saw", "at", "the", "cafe", "today"]


def manifest(path) -> dict:
    return json.loads((path / "export.json").read_text(encoding="utf-8"))


def train_classify(tmp_path, tiny_args, **overrides):
    data = write_csv(tmp_path / "spam.csv", make_texts(120))
    return tunesmith.train({"data": {"train": str(data)}}, **{**tiny_args, "baseline": False, **overrides}, out=str(tmp_path / "run"))


EXPORTS = [  # flags, folder, model file
    ([], "onnx", "model.onnx"),
    (["--quantize", "int8"], "onnx-int8", "model.onnx"),
    (["--format", "torchscript"], "torchscript", "model.pt"),
    (["--format", "torchscript", "--quantize", "int8"], "torchscript-int8", "model.pt"),
]


def test_classify_run_exports_and_passes_parity(tmp_path, tiny_args, capsys):
    run = train_classify(tmp_path, tiny_args)
    for flags, folder, model_file in EXPORTS:
        assert main(["export", str(run.dir), *flags]) == 0, folder
        printed = capsys.readouterr().out
        assert "max |logit difference|" in printed and "passed" in printed and "texts/s" in printed
        out = run.dir / "export" / folder
        assert (out / model_file).is_file() and (out / "tokenizer.json").is_file()
        m = manifest(out)
        assert m["task"] == "classify" and m["labels"] == ["ham", "spam"] and m["parity_passed"] is True
        assert m["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
        assert m["postprocess"]["apply"].startswith("softmax")
        parity = m["parity"]
        assert parity["texts"] == 24, "the run's eval texts (20% of 120)"
        if "int8" in folder:
            assert m["precision"] == "int8" and parity["label_agreement"] >= 0.99, (folder, parity)
        else:
            assert m["precision"] == "fp32" and parity["max_abs_logit_diff"] <= 1e-4 and parity["label_agreement"] == 1.0, (folder, parity)
        for side in ("pytorch_fp32", "export"):
            assert m["speed"][side]["texts_per_second"] > 0 and m["speed"][side]["latency_ms_batch1"] > 0
    assert sorted(p.name for p in (run.dir / "export").iterdir()) == sorted(f for _, f, _ in EXPORTS), "no temporary directory is left"
    m = manifest(run.dir / "export" / "onnx")
    assert m["opset"] == 17 and m["graph_optimization"]["fully_fused"], m["graph_optimization"]
    consumer_reproduces_predict(run, run.dir / "export" / "onnx", m)


def consumer_reproduces_predict(run, out, m):
    """A consumer with only the export folder (onnxruntime + the tokenizer + export.json) gets the run's predictions."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    texts = ["free prize win cash now", "see you at dinner later mum"]
    tokenizer = AutoTokenizer.from_pretrained(out)
    session = ort.InferenceSession(str(out / m["model_file"]), providers=["CPUExecutionProvider"])
    enc = tokenizer(texts, padding=True, return_tensors="np")
    (logits,) = session.run(None, {name: enc[name].astype(np.int64) for name in m["inputs"]})
    probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    expected = run.predict(texts)
    for p, row in zip(probs, expected):
        assert m["labels"][int(p.argmax())] == row["label"]
        # the run may predict under bf16 autocast, the export is fp32
        assert p == pytest.approx([row["probabilities"][name] for name in m["labels"]], abs=2e-2)


def rating_csv(path, n=80, seed=0):
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "score"])
        for i in range(n):
            k = rng.randint(0, 6)
            w.writerow([" ".join(rng.sample(SPAM_WORDS, k) + rng.sample(HAM_WORDS, 6 - k)) + f" {i}", f"{10 + 5 * k:.1f}"])
    return path


def test_regress_run_exports_with_its_target_scaling(tmp_path, tiny_args):
    data = rating_csv(tmp_path / "ratings.csv")
    run = tunesmith.train({"task": "regress", "data": {"train": str(data)}}, **{**tiny_args, "baseline": False}, out=str(tmp_path / "run"))
    result = export(run.dir, output=tmp_path / "deploy")
    assert result.parity_passed and result.parity["max_abs_logit_diff"] <= 1e-4, result.parity_summary()
    m = manifest(tmp_path / "deploy")
    assert m["task"] == "regress" and m["labels"] == ["score"]
    assert m["postprocess"]["targets"] == ["score"] and m["postprocess"]["mean"][0] > 10, "the consumer de-standardises"
    assert (tmp_path / "deploy" / "tunesmith_targets.json").is_file()


def test_multilabel_run_exports_with_its_thresholds(tmp_path, tiny_args):
    rng = random.Random(0)
    rows = []
    for i in range(80):
        chosen = [name for name, words in (("money", SPAM_WORDS), ("home", HAM_WORDS)) if rng.random() < 0.5]
        rows.append(
            (
                " ".join(w for name in chosen for w in rng.sample(SPAM_WORDS if name == "money" else HAM_WORDS, 3)) + f" {i}",
                "|".join(chosen),
            )
        )
    data = write_csv(tmp_path / "tags.csv", rows, header=("text", "labels"))
    run = tunesmith.train(
        {"data": {"train": str(data), "multi_label": True}}, **{**tiny_args, "baseline": False}, out=str(tmp_path / "run")
    )
    result = export(run.dir, quantize="int8")
    assert result.task == "multilabel" and result.parity_passed, result.parity_summary()
    assert set(result.manifest["postprocess"]["thresholds"]) == {"home", "money"}
    assert "threshold" in result.parity["agreement_of"]


def write_conll(path, n=60, seed=0):
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        place = rng.choice(PLACES)
        tokens = [*rng.sample(FILLER, 2), rng.choice(PEOPLE), "in", *place]
        tags = ["O", "O", "B-PER", "O", "B-LOC"] + ["I-LOC"] * (len(place) - 1)
        lines += [f"{t}\t{g}" for t, g in zip(tokens, tags)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_ner_crf_run_exports_emissions_and_keeps_the_crf(tmp_path, tiny_args):
    data = write_conll(tmp_path / "train.conll")
    run = tunesmith.train(
        {"task": "ner", "data": {"train": str(data)}}, **{**tiny_args, "epochs": 3, "lr": 3e-3}, head="crf", out=str(tmp_path / "run")
    )
    result = export(run.dir)
    assert result.parity_passed and result.parity["label_agreement"] == 1.0, result.parity_summary()
    assert "CRF Viterbi" in result.parity["agreement_of"]
    assert (result.dir / "crf.safetensors").is_file() and (result.dir / "tunesmith_ner.json").is_file()
    m = result.manifest
    assert m["postprocess"]["head"] == "crf" and m["output"]["shape"] == ["batch", "sequence", len(m["labels"])]


def test_runs_it_cannot_export_exit_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nowhere")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    mlm = tmp_path / "mlm-run"
    (mlm / "model").mkdir(parents=True)
    (mlm / "config.yaml").write_text("task: mlm\n", encoding="utf-8")
    (mlm / "model" / "config.json").write_text("{}", encoding="utf-8")
    assert main(["export", str(mlm)]) == 2
    assert "export supports classify, regress and ner runs" in capsys.readouterr().err


def test_broken_export_exits_1_and_keeps_its_files(tmp_path, tiny_args, capsys, monkeypatch):
    run = train_classify(tmp_path, tiny_args, max_steps=2)
    module = importlib.import_module("tunesmith.deploy.export")
    real = module._onnx_backend

    def perturbed(path):
        run_onnx = real(path)
        return lambda batch: run_onnx(batch) + 1e-2

    monkeypatch.setattr(module, "_onnx_backend", perturbed)
    assert main(["export", str(run.dir)]) == 1
    err = capsys.readouterr().err
    assert "does not reproduce the run" in err and "max |logit difference| 1.00e-02" in err
    m = manifest(run.dir / "export" / "onnx")
    assert m["parity_passed"] is False and (run.dir / "export" / "onnx" / "model.onnx").is_file()

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["export", str(run.dir), "--output", str(tmp_path / "mine")]) == 2
    assert "not a tunesmith export" in capsys.readouterr().err and (tmp_path / "mine" / "notes.txt").is_file()
