"""Knowledge distillation of a finished classify run into a smaller student (Hinton et al., 2015).

The student learns from the teacher's logits softened by a temperature T and from the gold labels:

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, gold)

(T^2 keeps the soft term's gradients on the scale of the hard one as T grows.) The teacher scores
the training texts once, before training (it is in eval mode, so its logits do not change from epoch
to epoch); they are cached in the run directory and travel to the loss inside the batch's labels,
so the student stays a plain transformers model trained by the same runner as every other run:
checkpoints, ``--resume``, Ctrl-C, ``--num-processes``, the report. The result is a normal classify
run directory that ``predict``, ``eval``, ``serve`` and ``export --quantize int8`` accept.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import shlex
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tunesmith.compress.student import build_layer_student, parse_student
from tunesmith.errors import UserError

DISTILL_FILE = "distill.json"
TEACHER_LOGITS = "teacher_logits.npz"
STUDENT_INIT = "student_init"


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)``, averaged over the batch."""
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1), log_target=True, reduction="batchmean"
    )
    hard = F.cross_entropy(student_logits, labels, weight=weight, label_smoothing=label_smoothing)
    return alpha * t * t * soft + (1.0 - alpha) * hard


def make_distill_loss(config, data, *, alpha: float, temperature: float):
    """A Trainer ``compute_loss_func``: training labels are ``[gold id, teacher logits...]`` rows, eval labels plain ids."""
    from tunesmith.tasks.classify import class_weights

    t = config.training
    weights = class_weights(data.train.labels, data.labels) if t.class_weights == "auto" else None

    def loss(outputs, labels, num_items_in_batch=None):
        logits = (outputs["logits"] if isinstance(outputs, dict) else outputs[0]).float()
        w = weights.to(logits.device) if weights is not None else None
        if labels.ndim == 1:  # evaluation: the student's own cross-entropy, comparable with any classify run
            return F.cross_entropy(logits, labels, weight=w, label_smoothing=t.label_smoothing)
        gold, teacher = labels[:, 0].long(), labels[:, 1:].float()
        return distillation_loss(logits, teacher, gold, alpha=alpha, temperature=temperature, weight=w, label_smoothing=t.label_smoothing)

    return loss


class DistillCollator:
    """The task's own collator for the inputs; the labels (ids, or id + teacher logits rows) stacked beside."""

    def __init__(self, base):
        self.base = base

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        labels = [f["labels"] for f in features]
        batch = self.base([{k: v for k, v in f.items() if k != "labels"} for f in features])
        batch["labels"] = torch.tensor(labels, dtype=torch.float32 if isinstance(labels[0], list) else torch.long)
        return batch


def make_distill_collator(tokenizer, *, base):
    return DistillCollator(base(tokenizer))


def teacher_label_order(teacher_model_dir: Path) -> list[str]:
    config = json.loads((teacher_model_dir / "config.json").read_text(encoding="utf-8"))
    id2label = config.get("id2label") or {}
    return [id2label[str(i)] for i in range(len(id2label))]


def _cache_key(texts: list[str], teacher_model_dir: Path) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    for file in sorted(teacher_model_dir.glob("*.safetensors")):
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def teacher_logits(teacher_model_dir: Path, texts: list[str], labels: list[str], config) -> np.ndarray:
    """The teacher's logits for ``texts``, columns in the order of ``labels``; cached in the run directory."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunesmith.tasks.inference import batched_logits
    from tunesmith.training.hardware import resolve_precision

    cache = Path(config.out) / TEACHER_LOGITS if config.out else None
    key = _cache_key(texts, teacher_model_dir)
    if cache is not None and cache.is_file():
        with np.load(cache) as stored:
            if str(stored["key"]) == key:
                return stored["logits"]
    order = teacher_label_order(teacher_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(teacher_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(teacher_model_dir).eval()
    logits = batched_logits(
        model,
        tokenizer,
        texts,
        max_length=config.data.max_length,
        batch_size=config.training.eval_batch_size,
        precision=resolve_precision(config.training.precision),
    )
    logits = logits[:, [order.index(name) for name in labels]]
    if cache is not None:
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.npz")  # every rank computes the same; each writes its own
        np.savez(tmp, logits=logits, key=np.array(key))
        tmp.replace(cache)  # atomic: a half-written cache is never read
    return logits


def encode_with_teacher(tokenizer, data, config, *, teacher_dir: str):
    """The classify encoding, with each training example's label extended by the teacher's logits."""
    from tunesmith.tasks import TASKS

    encoded = TASKS["classify"].encode(tokenizer, data, config)
    logits = teacher_logits(Path(teacher_dir) / "model", list(data.train.texts), list(data.labels), config)
    for feat, row in zip(encoded.train.features, logits, strict=True):
        feat["labels"] = [float(feat["labels"]), *(float(v) for v in row)]
    return encoded


def distillation_task(teacher_dir: str | Path, alpha: float, temperature: float):
    """The classify task with the teacher's soft targets in the loss (picklable, for ``--num-processes``)."""
    from tunesmith.tasks import TASKS

    base = TASKS["classify"]
    return dataclasses.replace(
        base,
        encode=functools.partial(encode_with_teacher, teacher_dir=str(teacher_dir)),
        make_loss=functools.partial(make_distill_loss, alpha=alpha, temperature=temperature),
        make_collator=functools.partial(make_distill_collator, base=base.make_collator),
    )


def _check_settings(alpha: float, temperature: float) -> None:
    problems = []
    if not 0.0 <= alpha <= 1.0:
        problems.append(f"--alpha must be in [0, 1] (the weight of the teacher's soft targets), got {alpha}")
    if not temperature > 0:
        problems.append(f"--temperature must be > 0 (1 keeps the teacher's probabilities, 2-4 soften them), got {temperature}")
    if problems:
        raise UserError("; ".join(problems))


def _load_teacher(teacher: str | Path):
    from tunesmith.run import Run
    from tunesmith.tasks import task_for

    run = Run.load(teacher)
    kind = task_for(run.config).name
    if kind != "classify":
        raise UserError(f"distill needs a single-label classify run as --teacher; {run.dir} is a {kind!r} run")
    return run


def _default_out(teacher_dir: Path, spec_text: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", spec_text).strip("-")
    return Path("runs") / f"distill-{teacher_dir.name}-{slug}-{datetime.now():%Y%m%d-%H%M%S}"


def _model_bytes(model_dir: Path) -> int:
    return sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))


def distill(
    teacher: str | Path | None = None,
    student: str = "layers:every-other",
    *,
    out: str | Path | None = None,
    alpha: float = 0.5,
    temperature: float = 2.0,
    resume: bool = False,
    console=None,
    **overrides: Any,
):
    """Distil a finished classify run into a smaller student and write a normal run directory.

    Args:
        teacher: the teacher's run directory (not needed with ``resume``).
        student: ``layers:every-other``, ``layers:K``, ``layers:I,J,...`` (the teacher with fewer
            layers) or a model reference (see :mod:`tunesmith.compress.student`).
        out: the student's run directory [default: ``runs/distill-<teacher>-<student>-<time>``].
        alpha: weight of the soft (teacher) term; 1 - alpha weighs the gold labels.
        temperature: softening of both distributions in the soft term.
        resume: continue an interrupted distillation in ``out``.
        console: where progress goes (default: stderr).
        **overrides: training keys for the student (``epochs``, ``lr``, ``batch_size``, ``num_processes``, ...);
            data and split are the teacher's.

    Returns:
        The student's :class:`tunesmith.run.Run`; its ``metrics.json`` has a ``distillation`` section
        with the teacher's metrics and both sizes.

    Raises:
        UserError: a teacher that is not a finished classify run, bad settings or student syntax,
            or an existing ``out`` without ``resume``; nothing is written then.
    """
    from rich.console import Console

    from tunesmith.config import build_config
    from tunesmith.training.rundir import atomic_write_json
    from tunesmith.training.runner import train

    console = console or Console(stderr=True)
    if resume:
        if out is None:
            raise UserError("distill --resume needs --out, the directory of the distillation to continue")
        run_dir = Path(out)
        if not (run_dir / DISTILL_FILE).is_file():
            raise UserError(
                f"cannot resume: {run_dir} holds no distillation ({DISTILL_FILE} missing); pass the --out of `tunesmith distill`"
            )
        settings = json.loads((run_dir / DISTILL_FILE).read_text(encoding="utf-8"))
        task = distillation_task(settings["teacher"], settings["alpha"], settings["temperature"])
        command = f"tunesmith distill --out {shlex.quote(str(run_dir))} --resume"
        train(out=str(run_dir), resume=True, console=console, task=task, resume_command=command)
        return _finish(run_dir, settings)

    if teacher is None:
        raise UserError("distill needs --teacher RUN, a finished classify run directory")
    _check_settings(alpha, temperature)
    spec = parse_student(student)
    teacher_run = _load_teacher(teacher)
    run_dir = Path(out) if out else _default_out(teacher_run.dir, spec.text)
    if (run_dir / "config.yaml").exists():
        raise UserError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out")
    for key in ("model", "method", "train", "eval", "task", "out", "resume"):
        if key in overrides:
            raise UserError(f"distill sets `{key}` itself (the student and the teacher's data); remove it")
    base = teacher_run.config.model_dump(mode="json")
    base.pop("out", None)
    base.pop("resume", None)
    base["model"]["model"] = str(run_dir / STUDENT_INIT) if spec.from_teacher else spec.model
    base["model"]["method"] = "full"
    base["training"]["doctor"] = False  # the teacher's run already diagnosed this data
    config = build_config(base, {**overrides, "out": str(run_dir)}, source="distill settings")

    # the data and its labels must be the teacher's before anything is written
    task = distillation_task(teacher_run.dir, alpha, temperature)
    data = task.prepare(config)
    teacher_labels = teacher_label_order(teacher_run.dir / "model")
    if spec.from_teacher:  # a selection that does not fit the teacher is refused before anything is written
        spec.layers(json.loads((teacher_run.dir / "model" / "config.json").read_text(encoding="utf-8"))["num_hidden_layers"])
    if sorted(teacher_labels) != sorted(data.labels):
        raise UserError(f"the teacher knows labels {teacher_labels}, the data has {list(data.labels)}; distil on the teacher's own data")

    from tunesmith.training.runner import quiet_transformers

    quiet_transformers()
    run_dir.mkdir(parents=True, exist_ok=True)
    teacher_params = None
    student_info: dict[str, Any] = {"student": spec.text}
    if spec.from_teacher:
        student_info |= build_layer_student(teacher_run.dir / "model", spec, run_dir / STUDENT_INIT)
        teacher_params = student_info["teacher_parameters"]
    settings = {
        "teacher": str(teacher_run.dir),
        "alpha": alpha,
        "temperature": temperature,
        **student_info,
        "teacher_parameters": teacher_params or teacher_run.metrics.get("training", {}).get("parameters", {}).get("total"),
    }
    atomic_write_json(run_dir / DISTILL_FILE, settings)
    console.print(
        f"distilling {teacher_run.dir} into {spec.text}"
        + (f" (layers {student_info['kept_layers']} of {student_info['teacher_layers']})" if spec.from_teacher else "")
        + f": alpha {alpha}, temperature {temperature}"
    )
    command = f"tunesmith distill --out {shlex.quote(str(run_dir))} --resume"
    train(config, console=console, task=task, resume_command=command)
    return _finish(run_dir, settings)


def _finish(run_dir: Path, settings: dict[str, Any]):
    """Add the teacher-vs-student comparison to the student's metrics.json and return the student's Run."""
    from tunesmith.run import Run
    from tunesmith.training.rundir import atomic_write_json

    student = Run.load(run_dir)
    teacher_dir = Path(settings["teacher"])
    teacher_metrics = (
        json.loads((teacher_dir / "metrics.json").read_text(encoding="utf-8")) if (teacher_dir / "metrics.json").is_file() else {}
    )
    metrics = student.metrics
    keys = ("accuracy", "macro_f1", "weighted_f1")
    metrics["distillation"] = {
        **settings,
        "teacher_eval": {k: teacher_metrics.get("eval", {}).get(k) for k in keys},
        "student_eval": {k: metrics["eval"].get(k) for k in keys},
        "student_parameters": metrics["training"]["parameters"]["total"],
        "teacher_model_bytes": _model_bytes(teacher_dir / "model"),
        "student_model_bytes": _model_bytes(run_dir / "model"),
    }
    atomic_write_json(run_dir / "metrics.json", metrics)
    return Run.load(run_dir)
