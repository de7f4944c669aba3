"""The model behind ``tunesmith serve``: PyTorch fp32 or bf16, or the run's ONNX export (fp32 or int8).

``--backend auto`` (the default) measures, when the server starts, every candidate this machine and run
offer on a sample of the run's eval texts, keeps those that reproduce PyTorch fp32 (:data:`AUTO_BOUNDS`)
and serves the fastest. The measurement is short (a few seconds on MiniLM): each candidate scores the
sample twice in batches, the candidates taking turns so that a busy machine slows them alike; parity is
checked on those batches, and for int8 again one text per call (dynamic int8 depends on what a text is batched with).

Candidates: ``torch-fp32``; ``torch-bf16`` (autocast) when the CPU has native bf16 (AMX or AVX512-BF16) or
a CUDA GPU supports it; ``onnx`` and ``onnx-int8`` for single-label classify runs whose
``RUN/export/onnx[-int8]/export.json`` says the export passed its parity check.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.errors import UserError

Predict = Callable[[list[str]], list[dict[str, Any]]]
Logits = Callable[[dict[str, np.ndarray]], np.ndarray]  # padded int64 inputs -> logits, as in deploy.export

TORCH_BACKENDS = ("torch-fp32", "torch-bf16")
ONNX_BACKENDS = {"onnx": "onnx", "onnx-int8": "onnx-int8"}  # backend -> folder under RUN/export
BACKENDS = ("auto", "torch", *TORCH_BACKENDS, *ONNX_BACKENDS)
AUTO_SAMPLE_TEXTS = 64  # eval texts the startup measurement scores (the first ones of eval_predictions.jsonl)
AUTO_REPEATS = 2  # timed passes per candidate; the faster one counts
AUTO_BUDGET_S = 5.0  # no further timed pass starts after this (a busy machine: one pass is all it gets)
# A candidate must agree with PyTorch fp32 on the sample's decisions (classify: argmax label; on 64 texts 99%
# means all) and keep every logit within 0.5 of it. Measured on MiniLM SMS spam (256 eval texts): bf16 autocast
# max 1.4e-2 (mean 4e-3), fp32 ONNX 3e-6, int8 ONNX max 0.64 (mean 1.2e-2) with 1 label in 256 flipped and a
# probability moved by 0.22: int8 is refused there, as it should be for a server that promises the run's answers.
AUTO_BOUNDS = {"label_agreement": 0.99, "max_abs_logit_diff": 0.5}


@dataclass
class ServingBackend:
    """What serves the run: its name, texts -> prediction rows, label names, and how it was chosen."""

    name: str
    predict: Predict
    labels: list[str] | None
    choice: dict[str, Any] = field(default_factory=dict)


def load_backend(run, name: str, max_batch: int) -> ServingBackend:
    """The backend ``name`` (one of :data:`BACKENDS`) for a loaded :class:`tunesmith.run.Run`; ``auto`` measures.

    Raises:
        UserError: an unknown name, or an ONNX backend whose export is missing, failed parity or does not fit the run.
    """
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "auto":
        return choose_backend(run, max_batch)
    if name in ONNX_BACKENDS:
        predict, labels, _ = onnx_predict(run, name, max_batch)
        return ServingBackend(name, predict, labels, {"chosen": name, "how": "--backend " + name})
    from tunesmith.training.hardware import resolve_precision

    precision = resolve_precision("auto") if name == "torch" else name.removeprefix("torch-")
    predictor = run.predictor
    predictor.precision = precision
    how = "--backend torch: bf16 autocast where the hardware has native bf16, else fp32" if name == "torch" else "--backend " + name
    return ServingBackend(
        f"torch-{precision}",
        _torch_predict(predictor, max_batch, run.config.data.max_length),
        list(predictor.labels),
        {"chosen": f"torch-{precision}", "how": how},
    )


# A micro-batch holds whatever texts arrived together; padded to its longest, random SMS messages cost 3x the
# compute of the same texts one by one (MiniLM int8, 1 thread: 34 texts/s in calls of 32 vs 100 alone). So the
# texts are split into bands of similar length, each its own call: a text joins a band while it is at most
# 4 tokens or 10% shorter than the band's longest. Measured on the same texts: 157 texts/s in calls of 32.
BAND_TOKENS = 4
BAND_RELATIVE = 0.10


def length_bands(lengths: Sequence[int], max_batch: int) -> list[list[int]]:
    """Indices grouped into model calls of similar length (longest first), at most ``max_batch`` per call."""
    bands: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        band = bands[-1] if bands else None
        if band is None or len(band) >= max_batch or lengths[band[0]] - lengths[i] > max(BAND_TOKENS, BAND_RELATIVE * lengths[band[0]]):
            bands.append([i])
        else:
            band.append(i)
    return bands


def _torch_predict(predictor, max_batch: int, max_length: int) -> Predict:
    def predict(texts: list[str]) -> list[dict[str, Any]]:
        if len(texts) <= 1:
            return predictor.predict(texts, batch_size=max_batch)
        lengths = [len(ids) for ids in predictor.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
        rows: list[dict[str, Any]] = [{}] * len(texts)
        for band in length_bands(lengths, max_batch):
            for i, row in zip(band, predictor.predict([texts[i] for i in band], batch_size=max_batch), strict=True):
                rows[i] = row
        return rows

    return predict


# ---------------------------------------------------------------- ONNX


def onnx_predict(run, name: str, max_batch: int) -> tuple[Predict, list[str], Logits]:
    """A classify run's predictions from ``RUN/export/<folder>`` (tokenizer, ONNX Runtime session, softmax).

    Returns the predict function, the label names, and the raw-logits function the parity check uses.
    """
    export_dir = run.dir / "export" / ONNX_BACKENDS[name]
    flag = "" if name == "onnx" else " --quantize int8"
    if run.config.task != "classify" or run.config.data.multi_label:
        kind = "multi-label classify" if run.config.data.multi_label else run.config.task
        raise UserError(f"--backend {name} serves single-label classify runs; {run.dir} is a {kind} run: use --backend torch")
    if not (export_dir / "export.json").is_file():
        raise UserError(
            f"--backend {name} needs {export_dir}/export.json; run `tunesmith export {run.dir}{flag}` first, or use --backend torch"
        )
    manifest = json.loads((export_dir / "export.json").read_text(encoding="utf-8"))
    if not manifest.get("parity_passed", False):
        raise UserError(f"{export_dir} failed its parity check (export.json parity_passed false); re-export it or use --backend torch")
    try:
        import onnxruntime as ort
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise UserError(f"--backend {name} needs onnxruntime ({exc.name} missing): pip install 'tunesmith[onnx]'") from exc

    import torch

    from tunesmith.tasks.classify import prediction_rows
    from tunesmith.tasks.inference import softmax

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the server's thread count (fewer on a busy machine)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(export_dir / manifest["model_file"]), options, providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    labels, names, max_length = manifest["labels"], manifest["inputs"], run.config.data.max_length

    def logits(batch: dict[str, np.ndarray]) -> np.ndarray:
        return session.run(None, {n: batch[n] for n in names})[0]

    def predict(texts: list[str]) -> list[dict[str, Any]]:
        # length-sorted batches, as the PyTorch predictor does: short texts are not padded to the longest
        enc = tokenizer(texts, truncation=True, max_length=max_length)
        probs = np.zeros((len(texts), len(labels)), dtype=np.float32)
        for idx in length_bands([len(ids) for ids in enc["input_ids"]], max_batch):
            batch = tokenizer.pad([{n: enc[n][i] for n in names} for i in idx], return_tensors="np")
            probs[idx] = softmax(logits({n: batch[n].astype(np.int64) for n in names}))
        return prediction_rows(probs, labels)

    return predict, labels, logits


# ---------------------------------------------------------------- auto


def choose_backend(run, max_batch: int, *, sample_texts: int = AUTO_SAMPLE_TEXTS) -> ServingBackend:
    """Measure the candidates on the run's eval texts and return the fastest that reproduces PyTorch fp32."""
    import torch

    from tunesmith.deploy.export import _encode, _input_names, _outputs, _parity_items, _torch_backend
    from tunesmith.tasks import task_for
    from tunesmith.training.hardware import cpu_supports_bf16

    predictor = run.predictor
    task = task_for(run.config).name
    unavailable: dict[str, str] = {}
    try:
        items = _parity_items(run.dir, task, sample_texts)
    except UserError as exc:  # no eval texts to measure on: serve what `--backend torch` serves, and say why
        chosen = load_backend(run, "torch", max_batch)
        chosen.choice = {"chosen": chosen.name, "how": f"auto without a measurement: {exc}", "candidates": []}
        return chosen

    module = getattr(predictor.model, "encoder", None) if task == "ner" else None
    module = module if module is not None else predictor.model
    names = _input_names(predictor.tokenizer, module)
    features = _encode(predictor.tokenizer, task, items, run.config.data.max_length)
    pad_id = predictor.tokenizer.pad_token_id or 0
    wrapped = _LogitsOnly(module, names)
    logits: dict[str, Logits] = {"torch-fp32": _torch_backend(wrapped, names)}
    bf16 = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else cpu_supports_bf16()
    if bf16:
        logits["torch-bf16"] = _autocast_backend(wrapped, names)
    else:
        unavailable["torch-bf16"] = "this machine has no native bf16 (AMX/AVX512-BF16 CPU or a bf16 GPU); emulated bf16 is slower"
    onnx_predicts: dict[str, tuple[Predict, list[str]]] = {}
    for name in ONNX_BACKENDS:
        try:
            predict, labels, fn = onnx_predict(run, name, max_batch)
        except UserError as exc:
            unavailable[name] = str(exc)
            continue
        onnx_predicts[name], logits[name] = (predict, labels), fn

    batch = min(max_batch, len(features))
    started = time.perf_counter()
    outputs, seconds = _measure(logits, features, names, pad_id, task, batch, _outputs)
    reference = outputs["torch-fp32"]
    candidates = []
    for name, fn in logits.items():
        parity = _check(task, run.dir / "model", list(predictor.labels), features, reference, outputs[name])
        if name.endswith("int8") and parity["passed"] and batch > 1:
            # again one text per call: dynamic int8 quantizes activations per call, so a text's logits depend on the
            # texts batched with it (on MiniLM SMS spam one label in 64 flipped in one batching and not in another)
            alone = _check(
                task, run.dir / "model", list(predictor.labels), features, reference, _outputs(fn, features, names, pad_id, task, 1)
            )
            parity = {
                **parity,
                "label_agreement": min(parity["label_agreement"], alone["label_agreement"]),
                "max_abs_logit_diff": max(parity["max_abs_logit_diff"], alone["max_abs_logit_diff"]),
                "mean_abs_logit_diff": max(parity["mean_abs_logit_diff"], alone["mean_abs_logit_diff"]),
                "passed": alone["passed"],
            }
        candidates.append({"name": name, "texts_per_second": round(len(features) / seconds[name], 1), **parity})
    passed = [c for c in candidates if c["passed"]]
    best = max(passed, key=lambda c: c["texts_per_second"])  # torch-fp32 is the reference: it always passes
    choice = {
        "chosen": best["name"],
        "how": "auto: the fastest candidate within the parity bounds",
        "measured_on": {
            "texts": len(features),
            "source": "eval_predictions.jsonl (the first texts)",
            "batch_size": batch,
            "parity_batch_sizes": sorted({batch, 1}, reverse=True) if "onnx-int8" in logits else [batch],
            "threads": torch.get_num_threads(),
            "seconds": round(time.perf_counter() - started, 2),
        },
        "bounds": dict(AUTO_BOUNDS),
        "candidates": candidates,
        "unavailable": unavailable,
    }
    if best["name"] in onnx_predicts:
        predict, labels = onnx_predicts[best["name"]]
        return ServingBackend(best["name"], predict, labels, choice)
    predictor.precision = best["name"].removeprefix("torch-")
    return ServingBackend(best["name"], _torch_predict(predictor, max_batch, run.config.data.max_length), list(predictor.labels), choice)


def summary(choice: dict[str, Any]) -> str:
    """One log line: the chosen backend and each candidate's speed and parity."""
    parts = [
        f"{c['name']} {c['texts_per_second']:.0f} texts/s, agreement {c['label_agreement']:.1%}, max |logit diff| {c['max_abs_logit_diff']:.1e}"
        + ("" if c["passed"] else " (rejected: outside the parity bounds)")
        for c in choice.get("candidates", [])
    ]
    text = f"backend {choice['chosen']} ({choice['how']})"
    return text + ("; measured " + "; ".join(parts) if parts else "")


class _LogitsOnly:
    """Positional int64 inputs -> logits of a loaded model (deploy.export's wrapper, without re-registering the module)."""

    def __init__(self, model, names):
        self.model, self.names = model, list(names)

    def __call__(self, *inputs):
        return self.model(**dict(zip(self.names, inputs, strict=True))).logits


def _autocast_backend(module, names) -> Logits:
    import torch

    from tunesmith.tasks.inference import autocast_context

    device = next(module.model.parameters()).device

    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode(), autocast_context("bf16", device):
            return module(*(torch.from_numpy(batch[n]).to(device) for n in names)).float().cpu().numpy()

    return run


def _measure(logits: dict[str, Logits], features, names, pad_id, task, batch: int, outputs_fn):
    """Each candidate's outputs on the sample and its best time over :data:`AUTO_REPEATS` passes (taking turns)."""
    warm = features[: min(len(features), 2)]
    for fn in logits.values():  # first calls allocate and pick kernels
        outputs_fn(fn, warm, names, pad_id, task, batch)
    outputs: dict[str, list[np.ndarray]] = {}
    seconds = {name: float("inf") for name in logits}
    started = time.perf_counter()
    for repeat in range(AUTO_REPEATS):
        if repeat and time.perf_counter() - started > AUTO_BUDGET_S:
            break
        for name, fn in logits.items():
            started = time.perf_counter()
            outputs[name] = outputs_fn(fn, features, names, pad_id, task, batch)
            seconds[name] = min(seconds[name], time.perf_counter() - started)
    return outputs, seconds


def _check(task: str, model_dir: Path, labels: list[str], features, reference, got) -> dict[str, Any]:
    from tunesmith.deploy.export import _agreement

    diffs = [np.abs(a - b) for a, b in zip(reference, got, strict=True) if a.size]
    diff = max((float(d.max()) for d in diffs), default=0.0)
    mean = float(np.mean(np.concatenate([d.ravel() for d in diffs]))) if diffs else 0.0
    agreement, what = _agreement(task, model_dir, labels, features, reference, got)
    passed = agreement >= AUTO_BOUNDS["label_agreement"] and diff <= AUTO_BOUNDS["max_abs_logit_diff"]  # NaN fails
    return {
        "label_agreement": agreement,
        "agreement_of": what,
        "max_abs_logit_diff": diff,
        "mean_abs_logit_diff": mean,
        "passed": bool(passed),
    }
