"""The run directory: its layout, atomic writes, and finding the last complete checkpoint.

A run writes one directory::

    config.yaml            the fully resolved config (reload with `tunesmith train --config`)
    data.json              what the data step did (rows, duplicates, split)
    metrics.json           final eval metrics beside the majority baseline, speed, versions, hardware
    history.jsonl          one line per logged step loss and per evaluation
    eval_predictions.jsonl one line per eval text: gold, predicted label, probabilities
    model/                 loadable with plain transformers `from_pretrained` (weights, tokenizer, labels)
    checkpoints/           Trainer checkpoints for --resume, each committed by a manifest (see below)

A checkpoint counts only once it is committed: the Trainer writes ``checkpoint-N/`` in place (it has
no hook to write elsewhere), then tunesmith fsyncs every file and writes ``tunesmith_checkpoint.json``
(each file's size and sha256) through a temporary file and an atomic rename. A process killed at any
moment therefore leaves either a committed checkpoint or one without a manifest, and ``--resume``
skips the latter, as it skips one whose files no longer match their manifest (truncated, corrupt).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

CHECKPOINTS = "checkpoints"
MODEL = "model"
CHECKPOINT_MANIFEST = "tunesmith_checkpoint.json"


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


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not every platform opens directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_checkpoint(path: Path, step: int) -> dict[str, Any]:
    """Make a fully written checkpoint directory durable and mark it complete.

    Every file is flushed to disk, then the manifest (relative path -> size and sha256) is written
    atomically; a checkpoint without it is treated as interrupted.
    """
    files: dict[str, dict[str, Any]] = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name != CHECKPOINT_MANIFEST):
        with file.open("rb") as f:
            os.fsync(f.fileno())
        files[file.relative_to(path).as_posix()] = {"bytes": file.stat().st_size, "sha256": sha256_file(file)}
    manifest = {"step": step, "files": files}
    atomic_write_json(path / CHECKPOINT_MANIFEST, manifest)
    _fsync_dir(path)
    return manifest


def checkpoint_problem(path: Path, *, verify_hashes: bool = True) -> str | None:
    """Why a checkpoint cannot be resumed from, or None when it can.

    Without ``verify_hashes`` only presence and sizes are checked (cheap); with it, every file's
    sha256 is compared with the manifest too.
    """
    manifest_path = path / CHECKPOINT_MANIFEST
    if not manifest_path.is_file():
        return f"no {CHECKPOINT_MANIFEST}: it was still being written when the run stopped"
    try:
        files = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"its {CHECKPOINT_MANIFEST} is unreadable"
    # weights: safetensors/bin, FSDP's sharded .distcp files, or DeepSpeed's *model_states.pt
    if "trainer_state.json" not in files or not any(
        name.endswith((".safetensors", ".bin", ".distcp", "model_states.pt")) for name in files
    ):
        return "it lacks the trainer state or the weights"
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        size = file.stat().st_size
        if size != expected["bytes"]:
            return f"{name} is {size:,} bytes, the manifest says {expected['bytes']:,} (truncated or overwritten)"
        if verify_hashes and sha256_file(file) != expected["sha256"]:
            return f"{name} does not match its sha256 in the manifest (corrupt)"
    return None


def is_complete_checkpoint(path: Path) -> bool:
    """A checkpoint is usable only when it was committed and its files still match the manifest (sizes)."""
    return checkpoint_problem(path, verify_hashes=False) is None


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """The run's ``checkpoint-N`` directories, newest (highest N) first."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(p.name.split("-")[-1]), p) for p in root.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    return [p for _, p in sorted(found, reverse=True)]


def resumable_checkpoint(run_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint that passes :func:`checkpoint_problem` (hashes verified), and each newer one skipped with its reason."""
    skipped = []
    for path in checkpoint_dirs(run_dir):
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append((path, problem))
    return None, skipped


def last_checkpoint(run_dir: Path) -> tuple[Path | None, list[Path]]:
    """The newest complete checkpoint, and the incomplete ones skipped on the way."""
    best, skipped = resumable_checkpoint(run_dir)
    return best, [path for path, _ in skipped]
