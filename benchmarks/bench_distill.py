"""Size, CPU latency and accuracy of a teacher, its distilled student and the student's int8 ONNX export.

Measures finished runs (it trains nothing)::

    tunesmith train --out runs/spam-teacher --epochs 1
    tunesmith distill --teacher runs/spam-teacher --out runs/spam-student
    tunesmith export runs/spam-student --quantize int8
    python benchmarks/bench_distill.py runs/spam-teacher runs/spam-student

Every model scores the same texts: the teacher run's eval split (``eval_predictions.jsonl``), which
the student shares. Latency is the median of single-text calls (batch 1, the serving case) over the
first ``--latency-texts`` eval texts after a warm-up, with ``--threads`` torch/ONNX Runtime threads;
the 1-minute load average is recorded before and after, since another busy process distorts it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def eval_items(run_dir: Path) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in (run_dir / "eval_predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r["text"] for r in rows], [r["gold"] for r in rows]


def torch_scorer(model_dir: Path, max_length: int):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    @torch.inference_mode()
    def score(texts: list[str]) -> np.ndarray:
        batch = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        return model(**batch).logits.float().numpy()

    size = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    return score, labels, size, sum(p.numel() for p in model.parameters())


def onnx_scorer(export_dir: Path, max_length: int):
    import onnxruntime as ort
    from transformers import AutoTokenizer

    manifest = json.loads((export_dir / "export.json").read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("BENCH_THREADS", "1"))
    session = ort.InferenceSession(str(export_dir / manifest["model_file"]), options, providers=["CPUExecutionProvider"])
    names = manifest["inputs"]

    def score(texts: list[str]) -> np.ndarray:
        batch = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="np")
        return session.run(None, {n: batch[n].astype(np.int64) for n in names})[0]

    return score, manifest["labels"], (export_dir / manifest["model_file"]).stat().st_size, None


def measure(name: str, scorer, texts: list[str], gold: list[str], latency_texts: int, batch_size: int) -> dict[str, Any]:
    score, labels, size, params = scorer
    predicted = []
    for start in range(0, len(texts), batch_size):
        predicted += [labels[i] for i in score(texts[start : start + batch_size]).argmax(axis=-1)]
    accuracy = sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)
    for text in texts[:5]:  # warm-up
        score([text])
    timings = []
    for text in texts[:latency_texts]:
        started = time.perf_counter()
        score([text])
        timings.append((time.perf_counter() - started) * 1000)
    return {
        "model": name,
        "parameters": params,
        "size_mb": round(size / 1e6, 2),
        "latency_ms_batch1_median": round(statistics.median(timings), 3),
        "accuracy": round(accuracy, 4),
        "eval_texts": len(gold),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", type=Path, help="the teacher's run directory")
    parser.add_argument("student", type=Path, help="the distilled student's run directory (with export/onnx-int8)")
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads (default 1)")
    parser.add_argument("--latency-texts", type=int, default=200, help="single-text calls timed per model (default 200)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size for the accuracy pass (default 64)")
    parser.add_argument("--output", type=Path, help="JSON results (default benchmarks/results/bench_distill-<date>-<time>.json)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    os.environ["BENCH_THREADS"] = str(args.threads)
    export_dir = args.student / "export" / "onnx-int8"
    if not (export_dir / "export.json").is_file():
        print(f"{export_dir} is missing: run `tunesmith export {args.student} --quantize int8` first", file=sys.stderr)
        return 2
    max_length = int(json.loads((args.teacher / "data.json").read_text()).get("max_length", 128))
    texts, gold = eval_items(args.teacher)
    load_before = os.getloadavg()[0]
    rows = [
        measure(
            "teacher (PyTorch fp32)", torch_scorer(args.teacher / "model", max_length), texts, gold, args.latency_texts, args.batch_size
        ),
        measure(
            "student (PyTorch fp32)", torch_scorer(args.student / "model", max_length), texts, gold, args.latency_texts, args.batch_size
        ),
        measure("student (ONNX int8)", onnx_scorer(export_dir, max_length), texts, gold, args.latency_texts, args.batch_size),
    ]
    info = {"threads": args.threads, "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2)}
    print(f"\n{len(gold)} eval texts; {args.threads} thread(s); 1-min load {info['load_average_before']} -> {info['load_average_after']}")
    print(f"{'model':<24} {'parameters':>11} {'size MB':>8} {'latency ms (b=1)':>17} {'accuracy':>9}")
    for r in rows:
        params = f"{r['parameters']:,}" if r["parameters"] else "-"
        print(f"{r['model']:<24} {params:>11} {r['size_mb']:>8.1f} {r['latency_ms_batch1_median']:>17.2f} {r['accuracy']:>9.4f}")
    output = args.output or RESULTS_DIR / f"bench_distill-{datetime.now():%Y%m%d-%H%M%S}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps({"info": info, "teacher": str(args.teacher), "student": str(args.student), "results": rows}, indent=2) + "\n"
    )
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
