"""What the machine can do: precision, threads, and whether something else is competing for it."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
from typing import Any

import torch

from tunesmith.errors import UserError


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(requested: str) -> str:
    """Map ``auto`` to the fastest precision that trains reliably here; reject impossible requests."""
    cuda = torch.cuda.is_available()
    if requested == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_supports_bf16() else "fp32"
    if requested == "fp16" and not cuda:
        raise UserError("`training.precision` fp16 needs a CUDA GPU (on CPU it is no faster than fp32); use bf16, fp32 or auto")
    return requested


_auto_threads: int | None = None


_GENERATIVE_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def training_attention(requested: str, model_config) -> str | None:
    """The attention kernel to train with, or None for the library's default.

    ``auto`` picks ``eager`` for encoder-only models on the CPU: with dropout on (training),
    PyTorch's SDPA falls back to its unfused math path there, and on MiniLM at SMS lengths eager
    attention measured 8% faster per step (benchmarks/README.md). Decoders keep the default, which
    their sequence packing relies on.
    """
    if requested != "auto":
        return requested
    return "eager" if not is_generative(model_config) and not torch.cuda.is_available() else None


def is_generative(model_config) -> bool:
    """Whether a model config is a decoder or encoder-decoder language model (as saved: its ``architectures``)."""
    if getattr(model_config, "is_encoder_decoder", False):
        return True
    return any(a.endswith(_GENERATIVE_SUFFIXES) for a in getattr(model_config, "architectures", None) or [])


def configure_threads(requested: int | None) -> tuple[int, str | None]:
    """Set torch's thread count and return it with a warning when the machine is busy.

    A second busy process slows a multi-threaded torch job several times over, more than any
    optimisation gains, so by default tunesmith leaves a core free when the load says one is taken.
    """
    global _auto_threads
    cores = os.cpu_count() or 1
    warning = None
    if requested is not None:
        threads = requested
    elif _auto_threads is not None:
        # decided once per process: cv, curve and search train again and again, and the load
        # average would then count this process's own previous run as "another job"
        threads = _auto_threads
    else:
        threads = cores
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
        if cores > 1 and load > 0.75:
            threads = max(1, cores - round(load))
            warning = (
                f"the machine is busy (1-minute load {load:.1f} on {cores} cores); training with {threads} thread(s). "
                "Stop other jobs for full speed, or pass --threads N to override."
            )
        _auto_threads = threads
    torch.set_num_threads(threads)
    return threads, warning


def hardware_info() -> dict[str, Any]:
    """What the run ran on, for reproducibility records."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16": cpu_supports_bf16(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def library_versions() -> dict[str, str]:
    """Versions of the libraries that decide a run's numbers."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("tunesmith", "torch", "transformers", "peft", "accelerate", "scikit-learn", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def release_memory() -> None:
    """Collect garbage and hand the freed heap back to the OS (glibc's ``malloc_trim``; elsewhere collection only).

    PyTorch's CPU allocator frees into the C heap, which keeps the pages: after training, a process holds
    the high-water mark of every batch shape it saw, and whatever runs next (the report) would add to it.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
