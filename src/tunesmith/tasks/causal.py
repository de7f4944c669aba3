"""What the causal-LM tasks (``sft``, ``clm``) share: loading, packing, the collator and token-level scoring.

Packing: examples are placed whole into sequences of at most ``max_length`` tokens (best-fit
decreasing), each example keeping its own position ids that restart at 0. transformers builds a
block-diagonal causal mask from such position ids when no attention mask is passed (sdpa and eager
attention; flash-attention reads the same position ids as sequence boundaries), so no token attends
across an example boundary and the first token of each example is never a target of the one before.
The collator passes ``use_cache=False``: with a KV cache transformers skips that detection.

Labelled tokens only: the vocabulary projection (49k columns for SmolLM2) is applied to the hidden
states of the positions that predict a labelled token, not to every position. In sft most tokens are
prompt and template (86% on hsk_zh_en), so the logits, by far the largest activation, shrink in
proportion and the projection's compute with them. The model is asked for its last hidden states and
a one-position slice of logits (``logits_to_keep=1``); :func:`labelled_token_loss` does the rest.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.errors import UserError
from tunesmith.tasks.base import load_pretrained
from tunesmith.tasks.inference import autocast_context, length_sorted_batches

IGNORE = -100


def load_causal_lm(config, task: str):
    """Tokenizer and causal LM of ``config.model.model``, with a pad token; refuses encoders and encoder-decoders."""
    import transformers

    from tunesmith.models import resolve_model
    from tunesmith.models.decoder import check_causal, ensure_pad_token

    ref = resolve_model(config.model.model)
    try:
        model_config = transformers.AutoConfig.from_pretrained(ref)
    except (OSError, ValueError, KeyError) as exc:
        from tunesmith.models import load_failure

        raise load_failure(config.model.model, exc) from None
    check_causal(model_config, config.model.model, task)
    tokenizer, model = load_pretrained(config, transformers.AutoModelForCausalLM)
    ensure_pad_token(tokenizer, model)
    return tokenizer, model


def perplexity(loss: float) -> float:
    """``exp(loss)``, infinite rather than an overflow for a hopeless model."""
    return math.exp(loss) if loss < 700 else float("inf")


def pack(features: Sequence[dict[str, list[int]]], max_length: int, seed: int) -> list[dict[str, list[int]]]:
    """Place whole examples into sequences of at most ``max_length`` tokens (best-fit decreasing), in seeded order.

    Each packed sequence holds ``input_ids``, ``labels`` (the first token of every example set to
    -100: nothing before it in the sequence may predict it) and ``position_ids`` restarting at 0 per
    example. Examples must already be at most ``max_length`` long.
    """
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), sorted: the tightest bin that fits is found by bisect
    for i in order:
        size = len(features[i]["input_ids"])
        at = bisect.bisect_left(free, (size, -1))
        if at < len(free):
            room, b = free.pop(at)
            bins[b].append(i)
            bisect.insort(free, (room - size, b))
        else:
            bins.append([i])
            bisect.insort(free, (max_length - size, len(bins) - 1))
    random.Random(seed).shuffle(bins)
    packed = []
    for members in bins:
        ids, labels, positions = [], [], []
        for i in members:
            f = features[i]
            ids += f["input_ids"]
            labels += [IGNORE, *f["labels"][1:]]
            positions += range(len(f["input_ids"]))
        packed.append({"input_ids": ids, "labels": labels, "position_ids": positions})
    return packed


class CausalCollator:
    """Pads a batch to its longest sequence; packed sequences get position ids (and no attention mask), others a padding mask.

    With ``select_logits`` the model is asked for hidden states instead of full logits, for
    :func:`labelled_token_loss` (not in a multi-process run, where the output layer must stay inside
    the wrapped model's forward for gradient synchronisation).
    """

    def __init__(self, pad_token_id: int, select_logits: bool = False):
        self.pad = pad_token_id
        self.select_logits = select_logits

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        longest = max(len(f["input_ids"]) for f in features)
        batch: dict[str, Any] = {
            "input_ids": torch.tensor([f["input_ids"] + [self.pad] * (longest - len(f["input_ids"])) for f in features]),
            "labels": torch.tensor([f["labels"] + [IGNORE] * (longest - len(f["labels"])) for f in features]),
        }
        if "position_ids" in features[0]:
            # padding becomes one more "example" of its own (positions from 0), so real tokens never attend to it
            batch["position_ids"] = torch.tensor([f["position_ids"] + list(range(longest - len(f["position_ids"]))) for f in features])
        else:
            batch["attention_mask"] = torch.tensor([[1] * len(f["input_ids"]) + [0] * (longest - len(f["input_ids"])) for f in features])
        batch["use_cache"] = False
        if self.select_logits and not _distributed():
            batch["output_hidden_states"] = True
            batch["logits_to_keep"] = 1
        return batch


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def make_collator(tokenizer) -> CausalCollator:
    return CausalCollator(tokenizer.pad_token_id, select_logits=True)


def labelled_scores(outputs, labels: torch.Tensor, output_layer) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32) at the positions that predict a labelled token, and those tokens.

    ``outputs`` hold either full logits, or hidden states with a one-position logits slice (the
    collator's ``select_logits``), in which case ``output_layer`` projects only the needed positions.
    """
    targets = labels[:, 1:]
    picked = targets != IGNORE
    logits = outputs.logits
    if logits.shape[1] == labels.shape[1]:
        return logits[:, :-1][picked].float(), targets[picked]
    hidden = outputs.hidden_states[-1][:, :-1][picked]
    return output_layer(hidden).float(), targets[picked]


def make_labelled_token_loss(data) -> Callable:
    """A Trainer ``compute_loss_func``: next-token cross-entropy over the labelled tokens, projected there only.

    The output layer is ``data.output_layer`` (set by the task's ``build_model``). The sum is divided
    by ``num_items_in_batch`` (all labelled tokens of the accumulated batch, as the Trainer counts
    them), else by this batch's count: every token weighs the same, as in the model's own loss.
    """

    def loss(outputs, labels, num_items_in_batch=None):
        scores, targets = labelled_scores(outputs, labels, data.output_layer)
        total = F.cross_entropy(scores, targets, reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else max(1, targets.numel())
        return total / count

    return loss


@torch.inference_mode()
def score_tokens(model, features: Sequence[dict[str, list[int]]], *, batch_size: int, precision: str, pad_token_id: int) -> dict[str, Any]:
    """Mean next-token loss over every labelled token (each token weighs the same), its perplexity and the token count.

    Raises:
        UserError: when no example has a labelled token.
    """
    model.eval()
    device = next(model.parameters()).device
    collate = CausalCollator(pad_token_id, select_logits=True)
    output_layer = model.get_output_embeddings()
    nll, count, correct = 0.0, 0, 0
    plain = [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features]
    for idx in length_sorted_batches([len(f["input_ids"]) for f in plain], batch_size):
        batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in collate([plain[i] for i in idx]).items()}
        labels = batch.pop("labels")
        with autocast_context(precision, device):
            scores, target = labelled_scores(model(**batch), labels, output_layer)
        nll += F.cross_entropy(scores, target, reduction="sum").item()
        correct += int((scores.argmax(-1) == target).sum())
        count += target.numel()
    if count == 0:
        raise UserError(f"none of the {len(features)} eval examples has a token to score; give examples with text in them")
    loss = nll / count
    return {"eval_loss": loss, "perplexity": perplexity(loss), "token_accuracy": correct / count, "tokens": count}


def score_on_device(model, features, config, pad_token_id: int) -> dict[str, Any]:
    """:func:`score_tokens` on the device training will use (the model as loaded, before training), then back."""
    from tunesmith.training.hardware import resolve_precision

    home = next(model.parameters()).device
    model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        return score_tokens(
            model,
            features,
            batch_size=config.training.eval_batch_size,
            precision=resolve_precision(config.training.precision),
            pad_token_id=pad_token_id,
        )
    finally:
        model.to(home)


def notice(message: str) -> None:
    """A progress line on stderr (the runner's console is stderr too) for the minutes spent scoring before training."""
    from rich.console import Console

    Console(stderr=True).print(message, highlight=False)


def before_after(before: dict[str, Any] | None, after: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """``after`` plus ``<key>_before``/``<key>_after`` for each key the model was scored on before training."""
    metrics = dict(after)
    for key in keys:
        if key not in after:
            continue
        if before is not None and key in before:
            metrics[f"{key}_before"] = before[key]
        metrics[f"{key}_after"] = after[key]
    return metrics
