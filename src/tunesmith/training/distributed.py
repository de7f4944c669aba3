"""Data-parallel training with torch.distributed, the engine the Trainer and Accelerate already use.

Two ways in, one code path:

- ``tunesmith train --num-processes N`` (``train(..., num_processes=N)``) starts N processes on
  this machine with torch's own spawner and the ``env://`` rendezvous on a free local port; each
  runs the same :func:`tunesmith.training.runner.train` as one rank.
- ``accelerate launch [--config_file examples/accelerate/X.yaml] -m tunesmith train ...`` (or
  ``torchrun``) starts the processes itself, on one or several machines; tunesmith sees
  ``WORLD_SIZE``/``RANK`` in the environment and starts nothing.

Inside each process the transformers Trainer sets up the process group (gloo on CPU, NCCL on
GPUs) and DistributedDataParallel. tunesmith's part: only rank 0 writes the run directory and
prints; the effective batch size (per process x processes x accumulation) and the learning-rate
rule are computed once and logged; on CPU the cores are split between the processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError


def world_size() -> int:
    """Processes in this run (1 unless a launcher set ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def is_main_process() -> bool:
    """True on the process that writes the run directory and prints (rank 0, or the only one)."""
    return rank() == 0


def is_launched() -> bool:
    """True inside a process group started by a launcher (ours, ``accelerate launch``, ``torchrun``)."""
    return world_size() > 1


def needs_launch(num_processes: int) -> bool:
    """Whether :func:`launch` must start the processes (asked for several, and not inside a launched group yet)."""
    return num_processes > 1 and not is_launched()


def check_world(num_processes: int) -> None:
    """Inside a launched group, ``num_processes`` must be left at 1 (take the launcher's) or match it."""
    if is_launched() and num_processes not in (1, world_size()):
        raise UserError(
            f"`training.num_processes` is {num_processes} but the launcher started {world_size()} processes; "
            "leave --num-processes out under `accelerate launch`/`torchrun` (their --num_processes decides), or make them equal"
        )


def shards_parameters() -> bool:
    """True under ``accelerate launch`` with an FSDP or DeepSpeed config: the Trainer must build the optimizer itself."""
    return any(os.environ.get(key, "").lower() == "true" for key in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"))


def scaled_lr(lr: float, processes: int, rule: str) -> float:
    """The learning rate under ``rule`` for ``processes`` data-parallel processes (linear: Goyal et al. 2017)."""
    if rule == "linear":
        return lr * processes
    if rule == "sqrt":
        return lr * processes**0.5
    return lr


def plan(training, processes: int) -> dict[str, Any]:
    """Batch and learning-rate facts of a (possibly data-parallel) run, logged once and kept in metrics.json."""
    lr = scaled_lr(training.lr, processes, training.lr_scaling)
    head_lr = scaled_lr(training.head_lr, processes, training.lr_scaling) if training.head_lr else None
    return {
        "processes": processes,
        "backend": backend_name() if processes > 1 else None,
        "per_process_batch_size": training.batch_size,
        "grad_accum": training.grad_accum,
        "effective_batch_size": training.batch_size * training.grad_accum * processes,
        "lr_scaling": training.lr_scaling,
        "lr": lr,
        "head_lr": head_lr,
        "lr_given": training.lr,
    }


def describe(p: dict[str, Any]) -> str:
    """One line for the console."""
    if p["processes"] == 1:
        return ""
    lr = f"lr {p['lr']:.3g}" + (
        f" ({p['lr_scaling']} scaling of {p['lr_given']:.3g})" if p["lr_scaling"] != "none" else " (not scaled; --lr-scaling linear|sqrt)"
    )
    return (
        f"data-parallel: {p['processes']} processes ({p['backend']}), effective batch {p['effective_batch_size']} = "
        f"{p['per_process_batch_size']} per process x {p['processes']} x {p['grad_accum']} accumulation; {lr}"
    )


def backend_name() -> str:
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_backend()
    return "nccl" if torch.cuda.is_available() else "gloo"


def threads_per_process(processes: int, requested: int | None) -> int:
    """CPU threads for each process: the user's ``--threads``, else the cores split evenly (at least 1)."""
    return requested or max(1, (os.cpu_count() or 1) // processes)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_devices(processes: int) -> None:
    import torch

    if torch.cuda.is_available() and processes > torch.cuda.device_count():
        raise UserError(
            f"--num-processes {processes} needs {processes} GPUs (one per process), this machine has {torch.cuda.device_count()}; "
            f"pass --num-processes {torch.cuda.device_count()} or run on CPU with CUDA_VISIBLE_DEVICES="
        )


def _worker(
    local_rank: int, entry: Callable[..., Any], kwargs: dict[str, Any], processes: int, port: int, threads: int, errors: str
) -> None:
    """One rank: set the torch.distributed environment, run ``entry``, report a UserError to the parent."""
    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(processes),
        LOCAL_WORLD_SIZE=str(processes),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS=str(threads),  # accelerate would otherwise pick its own
    )
    code = 0
    try:
        entry(**kwargs)
    except UserError as exc:
        Path(errors, f"{local_rank}.json").write_text(json.dumps({"message": str(exc), "exit_code": exc.exit_code}), encoding="utf-8")
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    finally:
        import torch

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if code:
        sys.exit(code)


INTERRUPTED_GRACE_S = 120.0  # how long the other ranks may take to finish saving after one stopped on a signal


def _wait(processes) -> None:
    """Wait for every rank; stop the others at once when one failed, or after a grace period when one was interrupted.

    (torch's own ``join`` terminates the others at the first non-zero exit, which would cut short
    ranks still saving their part of an interrupt checkpoint.)
    """
    deadline = None
    while True:
        codes = [p.exitcode for p in processes]
        if all(code is not None for code in codes):
            return
        failed = [code for code in codes if code not in (None, 0)]
        if any(code != 130 for code in failed) or (deadline is not None and time.monotonic() > deadline):
            for p in processes:
                if p.is_alive():
                    p.terminate()
            for p in processes:
                p.join()
            return
        if failed and deadline is None:
            deadline = time.monotonic() + INTERRUPTED_GRACE_S
        time.sleep(0.2)


def launch(entry: Callable[..., Any], kwargs: dict[str, Any], processes: int, *, threads: int | None = None) -> None:
    """Run ``entry(**kwargs)`` in ``processes`` ranks on this machine and wait for all of them.

    ``entry`` must be a module-level function and ``kwargs`` picklable (the ranks are fresh
    interpreters). A SIGINT/SIGTERM to this process is passed on to the ranks, which save a
    checkpoint and stop.

    Raises:
        UserError: a rank stopped on bad input (its message), or too few GPUs.
        KeyboardInterrupt: the ranks stopped on a signal (after saving a checkpoint).
        RuntimeError: a rank failed otherwise (its traceback is in the message).
    """
    import torch.multiprocessing as mp

    _check_devices(processes)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="tunesmith-ranks-") as errors:
        context = mp.start_processes(
            _worker,
            args=(entry, kwargs, processes, port, threads_per_process(processes, threads), errors),
            nprocs=processes,
            start_method="spawn",
            join=False,
        )

        def forward(signum, frame):
            for process in context.processes:
                if process.is_alive() and process.pid:
                    os.kill(process.pid, signum)

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            _wait(context.processes)
            context.join()  # all have exited: raises for the first that failed, with its traceback
        except mp.ProcessExitedException as exc:
            reports = sorted(Path(errors).glob("*.json"))
            if reports:
                report = json.loads(reports[0].read_text(encoding="utf-8"))
                raise UserError(report["message"]) from None
            if exc.exit_code == 130:
                raise KeyboardInterrupt from None
            raise RuntimeError(f"rank {exc.error_index} of {processes} exited with code {exc.exit_code}") from None
        except mp.ProcessRaisedException as exc:
            raise RuntimeError(f"a rank of the data-parallel run failed:\n{exc}") from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
