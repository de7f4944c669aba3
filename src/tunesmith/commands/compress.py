"""The distill verb: a smaller student from a finished classify run."""

from __future__ import annotations

import argparse

from rich.table import Table

from tunesmith.commands.flags import _field_type, none_or_text
from tunesmith.commands.output import err, out

# training keys a distillation may change (the data, split and labels are the teacher's)
STUDENT_TRAINING_KEYS = (
    "epochs",
    "max_steps",
    "batch_size",
    "eval_batch_size",
    "grad_accum",
    "lr",
    "head_lr",
    "weight_decay",
    "warmup_ratio",
    "scheduler",
    "early_stopping",
    "eval_steps",
    "precision",
    "seed",
    "threads",
    "num_processes",
    "lr_scaling",
    "report",
)


def cmd_distill(args: argparse.Namespace) -> int:
    from tunesmith.compress import distill

    overrides = {k: v for k, v in vars(args).items() if k in STUDENT_TRAINING_KEYS}
    run = distill(
        args.teacher,
        args.student,
        out=args.out,
        alpha=args.alpha,
        temperature=args.temperature,
        resume=args.resume,
        console=err,
        **overrides,
    )
    d = run.metrics["distillation"]
    table = Table("", "teacher", "student", title=f"distillation: {d['teacher']} -> {run.dir}")
    table.add_row("parameters", f"{d['teacher_parameters']:,}" if d.get("teacher_parameters") else "?", f"{d['student_parameters']:,}")
    table.add_row("model size (MB)", f"{d['teacher_model_bytes'] / 1e6:.1f}", f"{d['student_model_bytes'] / 1e6:.1f}")
    for key in ("accuracy", "macro_f1"):
        teacher, student = d["teacher_eval"].get(key), d["student_eval"].get(key)
        table.add_row(key, f"{teacher:.4f}" if teacher is not None else "?", f"{student:.4f}" if student is not None else "?")
    out.print(table)
    out.print(
        f'\nrun directory: {run.dir}\npredict with:  tunesmith predict {run.dir} --text "your text here"'
        f"\nint8 ONNX:     tunesmith export {run.dir} --quantize int8"
    )
    return 0


def args_distill(p: argparse.ArgumentParser) -> None:
    from tunesmith.config import flat_fields

    p.add_argument("--teacher", metavar="RUN", help="finished classify run to learn from (its data, split and labels are reused)")
    p.add_argument(
        "--student",
        default="layers:every-other",
        help="layers:every-other (the teacher's layers 0, 2, 4, ...), layers:K (K layers spread evenly), "
        "layers:I,J,... (these layers, 0-based), or a model name/directory [default: layers:every-other]",
    )
    p.add_argument(
        "--alpha", type=float, default=0.5, help="weight of the teacher's soft targets; 1 - alpha weighs the gold labels [default: 0.5]"
    )
    p.add_argument(
        "--temperature", type=float, default=2.0, help="softmax temperature of the soft targets (1 keeps them, 2-4 soften) [default: 2.0]"
    )
    p.add_argument("--out", metavar="DIR", help="student run directory [default: runs/distill-<teacher>-<student>-<time>]")
    p.add_argument("--resume", action="store_true", help="continue an interrupted distillation in --out")
    group = p.add_argument_group("student training (the teacher's values unless given)")
    fields = flat_fields()
    for name in STUDENT_TRAINING_KEYS:
        _, info = fields[name]
        kind, optional = _field_type(info.annotation)
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=info.description)
        else:
            group.add_argument(flag, dest=name, type=none_or_text if optional else str, default=argparse.SUPPRESS, help=info.description)
