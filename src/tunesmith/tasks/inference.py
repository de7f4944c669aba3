"""Batched inference shared by every encoder task: length-sorted batches, dynamic padding, autocast."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast for ``bf16``/``fp16``, a no-op for ``fp32``."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "fp16" and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices in batches of similar length (longest first), so padding is minimal."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


@torch.inference_mode()
def batched_logits(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int = 64,
    precision: str = "fp32",
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Logits for ``texts`` in their original order, as float32 numpy.

    Texts are tokenized once, sorted by length and padded per batch; this is several times faster
    than padding everything to ``max_length`` on short, varied texts.
    """
    model.eval()
    device = next(model.parameters()).device
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    input_ids = encoded["input_ids"]
    lengths = [len(ids) for ids in input_ids]
    out: list[np.ndarray | None] = [None] * len(texts)
    for idx in length_sorted_batches(lengths, batch_size):
        features = [{k: encoded[k][i] for k in encoded} for i in idx]
        batch = tokenizer.pad(features, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast_context(precision, device):
            logits = model(**batch).logits
        logits = logits.float().cpu().numpy()
        for row, i in enumerate(idx):
            out[i] = logits[row]
        if on_batch is not None:
            on_batch(len(idx))
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack(out)  # type: ignore[arg-type]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
