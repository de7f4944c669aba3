"""Students for distillation: a model named like any other, or the teacher with fewer layers.

``--student`` takes one of:

- ``layers:every-other``: keep the teacher's layers 0, 2, 4, ... (DistilBERT's initialisation);
- ``layers:K``: keep K layers spread evenly from the bottom (``layers:3`` of 6 keeps 0, 2, 4);
- ``layers:I,J,...``: keep exactly these layers (0-based, at least two, e.g. ``layers:0,5``);
- anything else: a model reference (registry name, local directory, hub id) trained from its own
  weights with a fresh head, e.g. a smaller pre-trained encoder.

A layer-dropped student keeps everything else of the teacher: embeddings, the kept layers'
weights, pooler and the fine-tuned classification head, so it starts close to the teacher.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunesmith.errors import UserError

SYNTAX = "layers:every-other, layers:K (keep K layers), layers:I,J,... (keep these, 0-based) or a model name/directory"


@dataclass(frozen=True)
class StudentSpec:
    """A parsed ``--student``: either a layer selection of the teacher or a model reference."""

    text: str
    every_other: bool = False
    count: int | None = None
    indices: tuple[int, ...] | None = None
    model: str | None = None

    @property
    def from_teacher(self) -> bool:
        return self.model is None

    def layers(self, total: int) -> list[int]:
        """The teacher layers to keep out of ``total``.

        Raises:
            UserError: a selection that is empty, out of range, or not smaller than the teacher.
        """
        if self.every_other:
            keep = list(range(0, total, 2))
        elif self.count is not None:
            if not 1 <= self.count < total:
                raise UserError(f"--student {self.text}: the teacher has {total} layers; K must be 1..{total - 1} to make it smaller")
            keep = sorted({(i * total) // self.count for i in range(self.count)})
        else:
            assert self.indices is not None
            bad = [i for i in self.indices if not 0 <= i < total]
            if bad:
                raise UserError(f"--student {self.text}: layer(s) {bad} do not exist; the teacher has layers 0..{total - 1}")
            keep = sorted(set(self.indices))
        if len(keep) >= total:
            raise UserError(f"--student {self.text} keeps all {total} layers of the teacher; keep fewer to make a smaller student")
        return keep


def parse_student(text: str) -> StudentSpec:
    """Parse ``--student`` (see the module docstring for the syntax).

    Raises:
        UserError: a ``layers:`` value that is none of the accepted forms.
    """
    text = text.strip()
    if not text.startswith("layers:"):
        if not text:
            raise UserError(f"--student is empty; give {SYNTAX}")
        return StudentSpec(text, model=text)
    value = text.split(":", 1)[1].strip()
    if value == "every-other":
        return StudentSpec(text, every_other=True)
    if re.fullmatch(r"\d+", value):
        return StudentSpec(text, count=int(value))
    if re.fullmatch(r"\d+(\s*,\s*\d+)+", value):
        return StudentSpec(text, indices=tuple(int(v) for v in value.split(",")))
    raise UserError(f"--student {text!r} is not understood; give {SYNTAX}")


def _layer_list(model: torch.nn.Module, total: int) -> tuple[torch.nn.Module, str]:
    """The module holding the transformer blocks (``bert.encoder.layer``, ``model.layers``, ...) and its attribute name."""
    for module in model.modules():
        for attr in ("layer", "layers"):
            blocks = getattr(module, attr, None)
            if isinstance(blocks, torch.nn.ModuleList) and len(blocks) == total:
                return module, attr
    raise UserError(
        f"cannot find the {total} transformer layers of {type(model).__name__} to drop some; "
        "pass a smaller model as --student instead (a registry name or a local directory)"
    )


def drop_layers(model, keep: list[int]):
    """Keep only the transformer blocks ``keep`` (in place) and record the new depth in the model's config."""
    total = model.config.num_hidden_layers
    holder, attr = _layer_list(model, total)
    blocks = getattr(holder, attr)
    setattr(holder, attr, torch.nn.ModuleList([blocks[i] for i in keep]))
    model.config.num_hidden_layers = len(keep)
    return model


def build_layer_student(teacher_model_dir: Path, spec: StudentSpec, out_dir: Path) -> dict[str, Any]:
    """Save the teacher with only the selected layers (and its tokenizer) to ``out_dir``; return what was kept.

    The copy is a plain transformers directory: reloaded with ``from_pretrained`` it is an ordinary,
    shallower model of the teacher's architecture.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunesmith.training.rundir import replace_dir

    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_model_dir)
    total = teacher.config.num_hidden_layers
    keep = spec.layers(total)
    teacher_params = sum(p.numel() for p in teacher.parameters())
    student = drop_layers(teacher, keep)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    student.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(teacher_model_dir).save_pretrained(tmp)
    replace_dir(tmp, out_dir)
    return {
        "teacher_layers": total,
        "kept_layers": keep,
        "teacher_parameters": teacher_params,
        "student_parameters": sum(p.numel() for p in student.parameters()),
    }
