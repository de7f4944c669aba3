"""The run directory: its layout, atomic writes, and finding the last complete checkpoint.

A run writes one directory::

    config.yaml            the fully resolved config (reload with `tunesmith train --config`)
    data.json              what the data step did (rows, duplicates, split)
    metrics.json           final eval metrics beside the majority baseline, speed, versions, hardware
    history.jsonl          one line per logged step loss and per evaluation
    eval_predictions.jsonl one line per eval text: gold, predicted label, probabilities
    model/                 loadable with plain transformers `from_pretrained` (weights, tokenizer, labels)
    checkpoints/           Trainer checkpoints for --resume
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

CHECKPOINTS = "checkpoints"
MODEL = "model"


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that a crash leaves either the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def replace_dir(tmp_dir: Path, final: Path) -> None:
    """Move a fully written directory into place, replacing any previous one."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp_dir, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, final)


def is_complete_checkpoint(path: Path) -> bool:
    """A checkpoint is usable only when the Trainer finished writing its state and the weights."""
    has_weights = any((path / name).is_file() for name in ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin"))
    return (path / "trainer_state.json").is_file() and has_weights


def last_checkpoint(run_dir: Path) -> tuple[Path | None, list[Path]]:
    """The newest complete checkpoint, and the incomplete ones skipped on the way."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return None, []
    found = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith("checkpoint-") and p.name.split("-")[-1].isdigit():
            found.append((int(p.name.split("-")[-1]), p))
    skipped = []
    for _, p in sorted(found, reverse=True):
        if is_complete_checkpoint(p):
            return p, skipped
        skipped.append(p)
    return None, skipped
