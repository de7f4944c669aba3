"""What a run's numbers depend on: the data files (sha256), the seed, library versions and hardware.

The record goes into ``data.json`` (``files``) when a run starts and into ``metrics.json``
(``reproducibility``) when it ends. On ``--resume`` the data files are hashed again and compared
with the record: a run must not silently continue on data that changed under it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError
from tunesmith.training import hardware
from tunesmith.training.rundir import sha256_file


def data_sources(config) -> dict[str, str]:
    """Each data reference of the config by role: ``train``, ``eval`` and, for multitask, ``<head>.train``/``<head>.eval``."""
    sources: dict[str, str] = {"train": config.data.train}
    if config.data.eval:
        sources["eval"] = config.data.eval
    for head in getattr(config, "heads", None) or []:
        if head.train:
            sources[f"{head.name}.train"] = head.train
        if head.eval:
            sources[f"{head.name}.eval"] = head.eval
    return sources


def _resolve(reference: str) -> Path | None:
    from tunesmith.data.packaged import is_packaged, packaged_path

    if is_packaged(reference):
        try:
            return packaged_path(reference)
        except UserError:
            return None
    path = Path(reference)
    return path if path.exists() else None


def hash_path(path: Path) -> dict[str, Any]:
    """sha256 and size of a file, or of a directory's files (path-ordered, names included)."""
    if path.is_file():
        return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    digest = hashlib.sha256()
    size = 0
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + sha256_file(file).encode())
        size += file.stat().st_size
    return {"path": str(path), "bytes": size, "sha256": digest.hexdigest(), "directory": True}


def data_files(config) -> dict[str, dict[str, Any]]:
    """Hash every data file the config reads, by role (unresolvable references are recorded as such)."""
    out: dict[str, dict[str, Any]] = {}
    for role, reference in data_sources(config).items():
        path = _resolve(reference)
        out[role] = {"reference": reference, **(hash_path(path) if path is not None else {"sha256": None})}
    return out


def check_unchanged(previous: dict[str, dict[str, Any]] | None, current: dict[str, dict[str, Any]], run_dir: Path) -> None:
    """Refuse to resume a run whose data files changed since it started.

    Raises:
        UserError: naming each changed file with both hashes, and the two ways out.
    """
    if not previous:
        return
    changed = [
        f"{role} ({now['reference']}): sha256 {before['sha256'][:12]}... when the run started, {now['sha256'][:12] if now['sha256'] else 'missing'}... now"
        for role, now in current.items()
        if (before := previous.get(role)) and before.get("sha256") and before["sha256"] != now["sha256"]
    ]
    if changed:
        raise UserError(
            f"cannot resume {run_dir}: its data changed since it started: "
            + "; ".join(changed)
            + ". Resuming would train the rest of the run on other data; restore the original file, or start a new run with another --out"
        )


def record(config, files: dict[str, dict[str, Any]], *, world_size: int, effective_batch_size: int) -> dict[str, Any]:
    """The ``reproducibility`` section of metrics.json."""
    import torch

    return {
        "seed": config.training.seed,
        "data_files": files,
        "world_size": world_size,
        "effective_batch_size": effective_batch_size,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "versions": hardware.library_versions(),
        "hardware": hardware.hardware_info(),
    }
