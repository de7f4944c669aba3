"""Crash-safe checkpoints and an exact resume.

Three pieces, each a small Trainer callback or function the runner composes:

- :class:`CommitCheckpoint` marks a checkpoint complete once the Trainer has written it (every file
  fsynced, then a manifest written atomically; see :mod:`tunesmith.training.rundir`).
- :class:`SeedDataOrder` draws each epoch's shuffle from ``(seed, epoch)`` alone. The Trainer's
  length-grouped sampler otherwise shuffles with the global torch RNG, whose state at the start of
  an epoch a resumed run cannot know, so a run resumed mid-epoch saw its batches in another order.
- :func:`prepare_resume` picks the newest checkpoint that verifies, moves broken ones aside with a
  message, and cuts ``history.jsonl`` back to that checkpoint so no step is logged twice.

The Trainer itself restores the weights, optimizer, scheduler, gradient scaler, RNG states and the
position inside the epoch (it skips the batches already trained on); with the data order fixed per
epoch, a resumed run repeats the uninterrupted one step for step.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from transformers import TrainerCallback

from tunesmith.training.rundir import atomic_write_text, commit_checkpoint, resumable_checkpoint

SKIPPED_PREFIX = "skipped-"  # broken checkpoints are renamed so neither --resume nor the Trainer's rotation sees them


class CommitCheckpoint(TrainerCallback):
    """After each save, wait for every process to finish writing, then commit the checkpoint (main process)."""

    def on_save(self, args, state, control, **kwargs):
        if args.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # each rank writes its own rng_state_<rank>.pth
        if state.is_world_process_zero:
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if path.is_dir():
                commit_checkpoint(path, state.global_step)


def _nested_samplers(loader: Any) -> Iterator[Any]:
    """The samplers inside a (possibly accelerate-wrapped, possibly skipping) data loader, outermost first."""
    seen: set[int] = set()
    frontier = [loader]
    while frontier:
        obj = frontier.pop(0)
        for name in ("batch_sampler", "sampler"):
            child = getattr(obj, name, None)
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                yield child
                frontier.append(child)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator an epoch's shuffle is drawn from (what accelerate's seedable sampler does: seed + epoch)."""
    return torch.Generator().manual_seed(seed + epoch)


class SeedDataOrder(TrainerCallback):
    """Give the training sampler a generator seeded by ``(seed, epoch)`` before each epoch's batches are drawn.

    Samplers with their own ``set_epoch`` (accelerate's seedable random sampler) are already seeded
    per epoch and are left alone.
    """

    def __init__(self, seed: int):
        self.seed = seed
        self.seeded: list[int] = []  # epochs seeded, for tests and debugging

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        if train_dataloader is None:
            return
        epoch = math.floor((state.epoch or 0.0) + 1e-9)  # a resumed run starts inside an epoch
        for sampler in _nested_samplers(train_dataloader):
            if hasattr(sampler, "generator") and not hasattr(sampler, "set_epoch"):
                sampler.generator = epoch_generator(self.seed, epoch)
                self.seeded.append(epoch)
                return


def truncate_history(path: Path, step: int) -> int:
    """Keep the history lines logged at or before ``step``; returns how many were dropped."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record_step = json.loads(line).get("step", 0)
        except ValueError:  # a line cut off by the crash
            dropped += 1
            continue
        if record_step <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))
    return dropped


def prepare_resume(run_dir: Path, console: Console, *, main_process: bool = True) -> Path | None:
    """The checkpoint to resume from (None: start from the beginning), after setting the run directory straight.

    Checkpoints that are incomplete or fail verification are reported and, on the main process,
    renamed ``skipped-checkpoint-N`` (kept for inspection); the history is cut back to the chosen step.
    """
    chosen, skipped = resumable_checkpoint(run_dir)
    for path, reason in skipped:
        if main_process:
            target = path.with_name(SKIPPED_PREFIX + path.name)
            if target.exists():
                target = path.with_name(f"{SKIPPED_PREFIX}{path.name}-{os.getpid()}")
            os.replace(path, target)
            console.print(f"[yellow]skipping checkpoint[/] {path.name}: {reason}; moved to {target}", highlight=False)
    step = 0
    if chosen is None:
        console.print("no complete checkpoint yet: training from the start")
    else:
        step = int(chosen.name.split("-")[-1])
        console.print(f"resuming from {chosen} (step {step})", highlight=False)
    if main_process:
        dropped = truncate_history(run_dir / "history.jsonl", step)
        if dropped:
            console.print(f"history.jsonl: dropped {dropped} line(s) logged after step {step} by the interrupted run")
    return chosen
