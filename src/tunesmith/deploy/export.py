"""Export a finished run to ONNX or TorchScript, and show that the export computes what the run computes.

:func:`export` writes ``RUN/export/<format>[-int8]/``: the model (its output is the raw logits), the
tokenizer, the task's extra files and ``export.json`` (labels, inputs, the post-processing to apply,
parity and speed). Parity: PyTorch fp32 and the export score the run's eval texts; an fp32 export must
reproduce the logits within :data:`FP32_MAX_DIFF`, an int8 one agree on :data:`INT8_MIN_AGREEMENT` of the
labels. ONNX uses eager attention and ``dynamo=False``: ONNX Runtime fuses that graph for BERT-like
encoders (attention, LayerNorm, Gelu), and not the default SDPA one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunesmith.errors import UserError

FORMATS = ("onnx", "torchscript")
QUANTIZATIONS = ("int8",)
EXPORTABLE_TASKS = ("classify", "multilabel", "regress", "ner")
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}
OPSET = 17  # LayerNormalization is a native op from 17 on; ONNX Runtime fuses this graph fully
PARITY_TEXTS = 256  # eval texts compared (the first ones of eval_predictions.jsonl)
SPEED_BATCH = 32
LATENCY_TEXTS = 64  # single-text calls timed for the batch-1 latency
FP32_MAX_DIFF = 1e-4  # MiniLM SMS spam: fused ONNX fp32 2.1e-6, TorchScript 7e-7; no looser bound is needed
INT8_MIN_AGREEMENT = 0.99
REGRESS_AGREEMENT_Z = 0.05  # regress has no labels: a text agrees when its prediction moves <= 0.05 target std
BERT_LIKE = ("bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "ernie")  # ONNX Runtime fuses these
INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")
# files beside the model that a consumer needs for post-processing (copied when the run has them)
TASK_FILES = ("tunesmith_targets.json", "tunesmith_multilabel.json", "tunesmith_ner.json", "crf.safetensors")

Backend = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass
class ExportResult:
    """What :func:`export` wrote and measured; ``manifest`` is the content of ``export.json``."""

    dir: Path
    model_file: Path
    format: str
    precision: str
    task: str
    parity: dict[str, Any]
    speed: dict[str, Any]
    manifest: dict[str, Any]

    @property
    def parity_passed(self) -> bool:
        return bool(self.parity["passed"])

    def parity_summary(self) -> str:
        """One line with the parity numbers and the bound they were held to."""
        p, bound = self.parity, self.parity["bound"]
        rule = f"max |diff| must be <= {bound['max_abs_logit_diff']:.0e}" if "max_abs_logit_diff" in bound else ""
        rule = rule or f"agreement must be >= {bound['label_agreement']:.0%}"
        return (
            f"parity on {p['texts']} eval texts: max |logit difference| {p['max_abs_logit_diff']:.2e}, "
            f"agreement {p['label_agreement']:.2%} ({p['agreement_of']}); {rule}: {'passed' if p['passed'] else 'FAILED'}"
        )


def export(
    run_dir: str | Path,
    format: str = "onnx",  # noqa: A002 - the CLI flag's name
    quantize: str | None = None,
    output: str | Path | None = None,
    *,
    max_texts: int = PARITY_TEXTS,
) -> ExportResult:
    """Export a finished classify, multi-label, regress or ner run, check parity and measure speed.

    Args:
        run_dir: the run directory written by ``tunesmith train``.
        format: ``"onnx"`` or ``"torchscript"``.
        quantize: ``None`` (fp32) or ``"int8"`` (dynamic quantization of the weights).
        output: the export directory [default: ``RUN/export/<format>[-int8]``]; replaced as a whole.
        max_texts: how many of the run's eval texts the parity check and the timings use.

    Returns:
        An :class:`ExportResult`; ``parity_passed`` is False when the export did not reproduce the run
        (its files are still written, marked so in ``export.json``).

    Raises:
        UserError: for an unknown format, a run that is not finished or not of an exportable task, or a
            missing optional dependency.
    """
    from tunesmith.run import Run
    from tunesmith.tasks import task_for
    from tunesmith.training.rundir import MODEL, replace_dir

    if format not in FORMATS:
        raise UserError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if quantize not in (None, *QUANTIZATIONS):
        raise UserError(f"unknown quantization {quantize!r}; choose {', '.join(QUANTIZATIONS)} or leave it out for fp32")
    missing = [name for name in ("onnx", "onnxruntime") if format == "onnx" and importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"ONNX export needs onnx and onnxruntime ({', '.join(missing)} missing): pip install 'tunesmith[onnx]'")
    run = Run.load(run_dir)
    task = task_for(run.config).name
    if task not in EXPORTABLE_TASKS:
        raise UserError(
            f"export supports classify, regress and ner runs (multi-label classify too); {run.dir} is a {task!r} run. "
            f"Its model/ directory is a plain transformers checkpoint: fine-tune it for a task with "
            f"`tunesmith train --model {run.dir / MODEL}` and export that run"
        )
    precision = quantize or "fp32"
    final = Path(output) if output else run.dir / "export" / (format + (f"-{quantize}" if quantize else ""))
    _check_output(final)
    model_dir = run.dir / MODEL
    items = _parity_items(run.dir, task, max_texts)

    tokenizer, reference, eager, labels = _load_models(model_dir, task)
    names = _input_names(tokenizer, eager)
    features = _encode(tokenizer, task, items, run.config.data.max_length)
    pad_id = tokenizer.pad_token_id or 0
    example = _example_inputs(features, names, pad_id)

    tmp = final.with_name(f".{final.name}.tmp")  # written in full, then moved into place
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model_file = tmp / MODEL_FILES[format]
        if format == "onnx":
            details = _export_onnx(_LogitsOnly(eager, names), example, names, model_file, eager.config, task, quantize)
            exported = _onnx_backend(model_file)
        else:
            details = _export_torchscript(_LogitsOnly(eager, names), example, model_file, quantize)
            exported = _torch_backend(torch.jit.load(str(model_file)).eval(), names)
        tokenizer.save_pretrained(tmp)
        eager.config.save_pretrained(tmp)
        for name in TASK_FILES:
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, tmp / name)

        torch_fp32 = _torch_backend(_LogitsOnly(reference, names), names)
        ref_out, exp_out = (_outputs(backend, features, names, pad_id, task) for backend in (torch_fp32, exported))
        parity = _parity(task, model_dir, labels, features, ref_out, exp_out, precision)
        speed = {"batch_size": SPEED_BATCH, "texts": len(features), "latency_texts": min(len(features), LATENCY_TEXTS)}
        speed |= {"threads": torch.get_num_threads(), "load_average_1min": round(os.getloadavg()[0], 2)}
        speed |= _speed({"pytorch_fp32": torch_fp32, "export": exported}, features, names, pad_id)
        manifest = {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "run": str(run.dir),
            "task": task,
            "format": format,
            "precision": precision,
            "model_file": model_file.name,
            "labels": labels,
            "inputs": names,
            "input_dtype": "int64",
            "output": {"name": "logits", "shape": ["batch", "sequence", len(labels)] if task == "ner" else ["batch", len(labels)]},
            "max_length": run.config.data.max_length,
            **details,
            "postprocess": _postprocess(task, model_dir, labels),
            "parity": parity,
            "parity_passed": parity["passed"],
            "speed": speed,
        }
        (tmp / "export.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(final, final / MODEL_FILES[format], format, precision, task, parity, speed, manifest)


# ---------------------------------------------------------------- inputs


def _check_output(final: Path) -> None:
    """The export directory is replaced as a whole: refuse to replace anything that is not an export."""
    if final.exists() and (not final.is_dir() or (any(final.iterdir()) and not (final / "export.json").is_file())):
        raise UserError(f"output {final} exists and is not a tunesmith export (no export.json); pass a new or empty directory")


def _parity_items(run_dir: Path, task: str, limit: int) -> list[Any]:
    """The first ``limit`` eval texts of the run (word lists for ner), from ``eval_predictions.jsonl``."""
    path, key = run_dir / "eval_predictions.jsonl", "tokens" if task == "ner" else "text"
    if not path.is_file():
        raise UserError(f"{path} is missing: the parity check runs on the run's eval texts; re-run `tunesmith train --out {run_dir}`")
    items: list[Any] = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            try:
                items += [json.loads(line)[key]] if line.strip() else []
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{path}, line {line_no}: expected a JSON record with a {key!r} field; the file is damaged") from None
            if len(items) >= limit:
                break
    if not items:
        raise UserError(f"{path} has no eval texts; the parity check needs some")
    return [list(words) or [""] for words in items] if task == "ner" else [str(t) for t in items]


def _load_models(model_dir: Path, task: str):
    """Tokenizer, the fp32 model as ``tunesmith predict`` loads it, the same weights with eager attention, label names."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    from tunesmith.training.runner import quiet_transformers

    quiet_transformers()
    auto = AutoModelForTokenClassification if task == "ner" else AutoModelForSequenceClassification
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    reference = auto.from_pretrained(model_dir, dtype=torch.float32).eval()
    eager = auto.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    # every task saves its label (regress: target) names in order as id2label
    labels = [eager.config.id2label[i] for i in range(len(eager.config.id2label))]
    return tokenizer, reference, eager, labels


def _input_names(tokenizer, model) -> list[str]:
    """The tokenizer outputs the model takes, in a fixed order."""
    produced = set(tokenizer("a"))
    accepted = set(inspect.signature(model.forward).parameters)
    return [n for n in INPUT_ORDER if n in produced and n in accepted]


def _encode(tokenizer, task: str, items: Sequence[Any], max_length: int) -> list[dict[str, Any]]:
    """Tokenized inputs as ``tunesmith predict`` makes them (ner features also carry ``word_starts``)."""
    if task == "ner":
        from tunesmith.tasks.ner import encode_words

        features, _ = encode_words(tokenizer, items, max_length)
        for f in features:
            f.pop("_word_ids")
        return features
    enc = tokenizer(list(items), truncation=True, max_length=max_length)
    return [{k: enc[k][i] for k in enc} for i in range(len(items))]


def _pad(features: Sequence[dict[str, Any]], names: Sequence[str], pad_id: int) -> dict[str, np.ndarray]:
    width = max(len(f["input_ids"]) for f in features)
    return {
        n: np.array([list(f[n]) + [pad_id if n == "input_ids" else 0] * (width - len(f[n])) for f in features], dtype=np.int64)
        for n in names
    }


def _example_inputs(features, names, pad_id) -> tuple[torch.Tensor, ...]:
    """Two texts of different lengths, so the traced graph sees padding and no shape is special."""
    by_length = sorted(features, key=lambda f: len(f["input_ids"]))
    batch = _pad([by_length[-1], by_length[0]], names, pad_id)
    return tuple(torch.from_numpy(batch[n]) for n in names)


class _LogitsOnly(torch.nn.Module):
    """The model with positional inputs (``names`` order) and one output: the logits."""

    def __init__(self, model: torch.nn.Module, names: Sequence[str]):
        super().__init__()
        self.model = model
        self.names = list(names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs))).logits


# ---------------------------------------------------------------- export


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporter warnings and library log lines (errors still raise)."""
    root, guard = logging.getLogger(), logging.NullHandler()  # a handler, so a bare logging.warning() cannot install one
    root.addHandler(guard)
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)
        root.removeHandler(guard)


def _export_onnx(module, example, names, path: Path, config, task: str, quantize: str | None) -> dict[str, Any]:
    """Trace to ONNX, fuse for BERT-like encoders, optionally quantize; returns what export.json records about it."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch", 1: "sequence"} if task == "ner" else {0: "batch"}
    details: dict[str, Any] = {"opset": OPSET, "exporter": "torch.onnx.export (dynamo=False), eager attention"}
    with tempfile.TemporaryDirectory(prefix="tunesmith-onnx-") as work, _quiet():
        raw = Path(work) / "raw.onnx"
        torch.onnx.export(
            module, example, raw, input_names=names, output_names=["logits"], dynamic_axes=axes, opset_version=OPSET, dynamo=False
        )
        source = raw
        if config.model_type in BERT_LIKE:
            heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", 0)
            hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", 0)
            optimized = optimize_model(str(raw), model_type="bert", num_heads=heads, hidden_size=hidden)
            stats = optimized.get_fused_operator_statistics()
            source = Path(work) / "fused.onnx"
            optimized.save_model_to_file(str(source))
            fused = {"fully_fused": bool(optimized.is_fully_optimized(stats)), "fused_operators": {op: n for op, n in stats.items() if n}}
            details["graph_optimization"] = {"kind": "onnxruntime.transformers optimize_model (model_type bert)", **fused}
        else:
            kind = f"none: {config.model_type!r} is not a BERT-like encoder; ONNX Runtime applies its generic optimisations at load"
            details["graph_optimization"] = {"kind": kind}
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # DefaultTensorType: the fused graph's contrib ops have outputs shape inference cannot type. Per-channel
            # scales: on MiniLM SMS spam per-tensor flipped 1 of 256 labels (max |diff| 1.0), per-channel none (0.40)
            extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
            quantize_dynamic(source, path, per_channel=True, weight_type=QuantType.QInt8, extra_options=extra)
            details["quantization"] = {"method": "onnxruntime quantize_dynamic", "weights": "QInt8 per channel", "activations": "QUInt8"}
        else:
            shutil.move(source, path)
            details["quantization"] = None
    return details


def _export_torchscript(module, example, path: Path, quantize: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {"exporter": "torch.jit.trace, eager attention", "torch": torch.__version__, "quantization": None}
    with _quiet(), torch.no_grad():
        if quantize == "int8":
            qconfig = torch.ao.quantization.per_channel_dynamic_qconfig  # half the error of per-tensor on MiniLM
            module = torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear: qconfig})
            details["quantization"] = {"method": "torch.ao quantize_dynamic", "modules": "nn.Linear", "weights": "qint8 per channel"}
        traced = torch.jit.trace(module, example, check_trace=False)
    torch.jit.save(traced, str(path))
    return details


# ---------------------------------------------------------------- running


def _torch_backend(module: torch.nn.Module, names: Sequence[str]) -> Backend:
    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return module(*(torch.from_numpy(batch[n]) for n in names)).float().numpy()

    return run


def _onnx_backend(path: Path) -> Backend:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same threads as the PyTorch side of the comparison
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = [i.name for i in session.get_inputs()]

    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        return session.run(None, {n: batch[n] for n in wanted})[0]

    return run


def _outputs(backend: Backend, features, names, pad_id: int, task: str, batch_size: int = SPEED_BATCH) -> list[np.ndarray]:
    """Logits of each text in input order (ner: ``[tokens, tags]`` without padding), length-sorted batches."""
    from tunesmith.tasks.inference import length_sorted_batches

    out: list[np.ndarray] = [np.empty(0)] * len(features)
    for idx in length_sorted_batches([len(f["input_ids"]) for f in features], batch_size):
        logits = np.asarray(backend(_pad([features[i] for i in idx], names, pad_id)), dtype=np.float32)
        for row, i in enumerate(idx):
            out[i] = logits[row, : len(features[i]["input_ids"])] if task == "ner" else logits[row]
    return out


def _speed(backends: dict[str, Backend], features, names, pad_id: int) -> dict[str, dict[str, float]]:
    """Texts/s at batch 32 and median batch-1 latency per backend; they take turns on each batch, so load slows them alike."""
    from tunesmith.tasks.inference import length_sorted_batches

    lengths = [len(f["input_ids"]) for f in features]
    batches = [_pad([features[i] for i in idx], names, pad_id) for idx in length_sorted_batches(lengths, SPEED_BATCH)]
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in backends}
    for kind, inputs in enumerate((batches, [_pad([f], names, pad_id) for f in features[:LATENCY_TEXTS]])):
        for batch in inputs:
            for name, backend in backends.items():
                started = time.perf_counter()
                backend(batch)
                times[name][kind].append(time.perf_counter() - started)
    per_second = {name: round(len(features) / sum(batched), 1) for name, (batched, _) in times.items()}
    return {
        name: {"texts_per_second": per_second[name], "latency_ms_batch1": round(statistics.median(one) * 1e3, 3)}
        for name, (_, one) in times.items()
    }


# ---------------------------------------------------------------- parity and post-processing


def _parity(task, model_dir, labels, features, ref, exp, precision: str) -> dict[str, Any]:
    diff = max(float(np.abs(a - b).max()) if a.size else 0.0 for a, b in zip(ref, exp, strict=True))
    agreement, what = _agreement(task, model_dir, labels, features, ref, exp)
    if precision == "fp32":
        bound, passed = {"max_abs_logit_diff": FP32_MAX_DIFF}, diff <= FP32_MAX_DIFF  # NaN fails too
    else:
        bound, passed = {"label_agreement": INT8_MIN_AGREEMENT}, agreement >= INT8_MIN_AGREEMENT
    where = {"texts": len(features), "source": "eval_predictions.jsonl (the first texts, in file order)"}
    where["reference"] = "PyTorch fp32 (default attention), same tokenization and batches"
    return {**where, "max_abs_logit_diff": diff, "label_agreement": agreement, "agreement_of": what, "bound": bound, "passed": bool(passed)}


def _agreement(task, model_dir, labels, features, ref, exp) -> tuple[float, str]:
    if task == "classify":
        same = [int(np.argmax(a)) == int(np.argmax(b)) for a, b in zip(ref, exp, strict=True)]
        return float(np.mean(same)), "texts with the same argmax label"
    if task == "multilabel":
        from tunesmith.tasks.multilabel import read_thresholds, sigmoid

        t = read_thresholds(model_dir, labels)
        same = np.stack([(sigmoid(a) >= t) == (sigmoid(b) >= t) for a, b in zip(ref, exp, strict=True)])
        return float(same.mean()), "label decisions (text x label) on the same side of the label's threshold"
    if task == "regress":
        same = [float(np.abs(a - b).max()) <= REGRESS_AGREEMENT_Z for a, b in zip(ref, exp, strict=True)]
        return float(np.mean(same)), f"texts whose standardised prediction moved by <= {REGRESS_AGREEMENT_Z} target std"
    crf = _load_crf(model_dir, labels)
    ref_tags, exp_tags = _ner_tags(ref, features, crf), _ner_tags(exp, features, crf)
    words = sum(len(t) for t in ref_tags)
    same = sum(x == y for a, b in zip(ref_tags, exp_tags, strict=True) for x, y in zip(a, b, strict=True))
    decoding = "CRF Viterbi" if crf is not None else "argmax"
    return (same / words if words else 1.0), f"words with the same decoded tag ({decoding} over first sub-tokens)"


def _load_crf(model_dir: Path, labels: Sequence[str]):
    from safetensors.torch import load_file

    from tunesmith.tasks.crf import CRF, allowed_transitions
    from tunesmith.tasks.ner import CRF_FILE, META_FILE

    if not (model_dir / CRF_FILE).is_file():
        return None
    scheme = json.loads((model_dir / META_FILE).read_text(encoding="utf-8"))["scheme"]
    crf = CRF(len(labels), *allowed_transitions(labels, scheme))
    crf.load_state_dict(load_file(str(model_dir / CRF_FILE)))
    return crf.eval()


def _ner_tags(outputs: Sequence[np.ndarray], features, crf) -> list[list[int]]:
    """Tag ids per word: the emissions of each word's first sub-token, decoded as ``tunesmith predict`` does."""
    tags = []
    for logits, f in zip(outputs, features, strict=True):
        emissions = torch.from_numpy(logits)[torch.tensor(f["word_starts"], dtype=torch.bool)]
        if emissions.shape[0] == 0:
            tags.append([])
        elif crf is None:
            tags.append(emissions.argmax(-1).tolist())
        else:
            paths, _ = crf.decode(emissions[None], torch.ones(1, emissions.shape[0], dtype=torch.bool))
            tags.append(paths[0])
    return tags


def _postprocess(task: str, model_dir: Path, labels: Sequence[str]) -> dict[str, Any]:
    """What a consumer of the raw logits applies to get ``tunesmith predict``'s answers."""
    if task == "classify":
        return {"apply": "softmax over the last axis; the label is labels[argmax], its probability the score"}
    if task == "multilabel":
        from tunesmith.tasks.multilabel import read_thresholds

        thresholds = read_thresholds(model_dir, labels)
        chosen = "sigmoid per label; a label is chosen when its probability >= its threshold"
        return {"apply": chosen, "thresholds": {name: float(t) for name, t in zip(labels, thresholds, strict=True)}}
    if task == "regress":
        from tunesmith.tasks.regress import Scaler

        scaler, rule = Scaler.load(model_dir), "value = logit * std + mean, per target (the targets were standardised for training)"
        return {"apply": rule, "targets": scaler.names, "mean": scaler.mean.tolist(), "std": scaler.std.tolist()}
    from tunesmith.tasks.ner import CRF_FILE, META_FILE

    scheme = json.loads((model_dir / META_FILE).read_text(encoding="utf-8"))["scheme"]
    crf = (model_dir / CRF_FILE).is_file()
    decode = f"Viterbi decoding with the CRF in {CRF_FILE} (tunesmith.tasks.crf.CRF, {scheme} constraints)" if crf else "argmax"
    return {
        "apply": "tokenize the words with is_split_into_words=True; take the logits (emissions) of each word's first sub-token, "
        f"then {decode}; words cut by max_length get O",
        "head": "crf" if crf else "softmax",
        "scheme": scheme,
        "files": [META_FILE, *([CRF_FILE] if crf else [])],
    }
