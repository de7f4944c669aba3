"""Dropout with a cheaper random mask, for training on the CPU.

PyTorch's CPU dropout draws its mask with ``bernoulli_``: one Mersenne-Twister draw and a float
comparison per element. On MiniLM at SMS lengths that was 12% of a training step (benchmarks/README.md),
more than all layer norms, GELUs and softmaxes together. :func:`cheap_dropout` draws 64 random bits at a
time and cuts them into four 16-bit numbers, one per element, each compared with ``p * 65536``:
the same Bernoulli(1 - p) keep mask (p resolved to 1/65536), scaled by ``1 / (1 - p)`` as usual,
about 3x cheaper forward and backward together. It draws from torch's default generator, so a
seeded run is reproducible and a resumed run restores it with the rest of the RNG state.

:func:`fast_dropout` switches a model to it for a block: every ``nn.Dropout`` module, and the
attention-probability dropout of the BERT-family encoders, whose attention goes through
:func:`eager_attention` (standard scaled dot-product attention, exactly transformers' BERT eager
path apart from the mask's random numbers). GPUs keep PyTorch's fused kernel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import MethodType

import torch

ATTENTION_NAME = "tunesmith_eager"
# encoders whose eager attention is the plain softmax(q k^T * scaling + mask) v that eager_attention computes
PLAIN_ATTENTION_MODELS = ("bert", "roberta", "xlm-roberta", "camembert", "electra")
_LEVELS = 65536  # 16 random bits per element


class _MaskedDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        mask = keep_mask(x, p)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def keep_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """A tensor shaped and typed like ``like``: ``1 / (1 - p)`` with probability 1 - p, else 0."""
    n = like.numel()
    words = torch.empty(((n + 3) // 4,), dtype=torch.int64, device=like.device).random_(-(2**63), None)
    draws = words.view(torch.int16)[:n].view(like.shape)  # uniform over [-32768, 32767]
    keep = draws >= round(p * _LEVELS) - _LEVELS // 2
    # bool -> float is a slow conversion on the CPU; bool -> uint8 is a free view, uint8 -> float a fast one
    return keep.view(torch.uint8).to(like.dtype).mul_(1.0 / (1.0 - p))


def cheap_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``torch.nn.functional.dropout`` with the cheaper mask on the CPU (PyTorch's own elsewhere)."""
    if not training or p == 0.0:
        return x
    if p >= 1.0 or x.device.type != "cpu" or not x.is_floating_point():
        return torch.nn.functional.dropout(x, p, training)
    return _MaskedDropout.apply(x, p)


def eager_attention(module, query, key, value, attention_mask, scaling: float | None = None, dropout: float = 0.0, **kwargs):
    """transformers' BERT eager attention, with :func:`cheap_dropout` on the attention probabilities."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = cheap_dropout(torch.nn.functional.softmax(weights, dim=-1), dropout, module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTENTION_NAME, eager_attention)
    # without a mask function of its own, transformers builds no padding mask for a new attention name
    AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)


def applies(model: torch.nn.Module) -> bool:
    """Whether the model trains on the CPU (the only place the cheaper mask is cheaper)."""
    parameter = next(model.parameters(), None)
    return parameter is not None and parameter.device.type == "cpu"


@contextlib.contextmanager
def fast_dropout(model: torch.nn.Module, enabled: bool = True) -> Iterator[bool]:
    """Within the block, the model's dropout uses :func:`cheap_dropout`; everything is put back on exit.

    Yields whether it is active (only on the CPU). Nothing of this is saved with the model: dropout
    modules have no weights, and transformers does not write the attention implementation to config.json.
    """
    if not enabled or not applies(model):
        yield False
        return
    modules = [m for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    for module in modules:
        module.forward = MethodType(_module_forward, module)
    switched = _plain_eager_transformer(model)
    if switched is not None:
        _register_attention()
        switched.set_attn_implementation(ATTENTION_NAME)
    try:
        yield True
    finally:
        for module in modules:
            del module.forward
        if switched is not None:
            switched.set_attn_implementation("eager")


def _plain_eager_transformer(model: torch.nn.Module):
    """The outermost transformers model inside ``model`` (itself, under PEFT, or a task wrapper's encoder)
    when it is a BERT-family encoder on eager attention; else None."""
    from transformers import PreTrainedModel

    inner = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    config = getattr(inner, "config", None)
    if config is None or getattr(config, "model_type", None) not in PLAIN_ATTENTION_MODELS:
        return None
    return inner if config._attn_implementation == "eager" else None


def _module_forward(module: torch.nn.Dropout, x: torch.Tensor) -> torch.Tensor:
    return cheap_dropout(x, module.p, module.training)
