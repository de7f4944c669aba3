"""Zero-shot classification by an instruct LLM: each label scored by its log-likelihood as the answer.

For every text the model is asked, through its chat template, which of the labels fits; each label's
tokens are then scored as the assistant's answer, ``log P(label | question)`` summed over the label's
tokens, and the labels' probabilities are the softmax of those scores. Nothing is generated, so every
text gets exactly one of the labels.

Small LLMs favour some answers whatever the text (a label that is a common word, the first one
listed). Contextual calibration (Zhao et al., 2021, "Calibrate Before Use") removes that bias: the
same question is asked with a content-free text ("N/A"), and its scores are subtracted from every
text's, so only what the text itself adds decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tunesmith.errors import UserError

DEFAULT_QUESTION = "Classify the text into one of these categories: {labels}.\n\nText: {text}\n\nAnswer with the category only."
CONTENT_FREE = "N/A"


def build_prefixes(tokenizer, texts: Sequence[str], labels: Sequence[str], question: str = DEFAULT_QUESTION) -> list[str]:
    """The prompt before the answer for each text: the question in the model's chat template, or plain text without one."""
    if "{text}" not in question or "{labels}" not in question:
        raise UserError(f"the question must contain {{text}} and {{labels}}, got {question!r}")
    listed = ", ".join(labels)
    asks = [question.format(labels=listed, text=text) for text in texts]
    if getattr(tokenizer, "chat_template", None):
        return [
            tokenizer.apply_chat_template([{"role": "user", "content": ask}], tokenize=False, add_generation_prompt=True) for ask in asks
        ]
    return [f"{ask}\nAnswer: " for ask in asks]


def answer_log_likelihoods(
    model,
    tokenizer,
    prefixes: Sequence[str],
    answers: Sequence[str],
    *,
    batch_size: int = 16,
    max_length: int = 512,
    precision: str = "fp32",
) -> np.ndarray:
    """``[len(prefixes), len(answers)]``: the summed log-probability of each answer's tokens after each prefix.

    Prefix and answer are tokenized apart and joined, so the answer's tokens are the same after every
    prefix; a prefix too long for ``max_length`` loses its start (the question's end and the text's
    end stay). ``precision="bf16"`` runs the model under bf16 autocast (about 3x faster on a CPU
    with AVX512-BF16; scores then differ in the third decimal).
    """
    import torch

    answer_ids = [tokenizer(" " + a if not a.startswith(" ") else a, add_special_tokens=False)["input_ids"] for a in answers]
    answer_ids = [ids or tokenizer(a, add_special_tokens=False)["input_ids"] for ids, a in zip(answer_ids, answers, strict=True)]
    longest_answer = max(len(ids) for ids in answer_ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    rows: list[tuple[int, int, list[int], int]] = []  # (prefix index, answer index, ids, answer start)
    for i, prefix in enumerate(prefixes):
        ids = tokenizer(prefix, add_special_tokens=False)["input_ids"][-(max_length - longest_answer) :]
        for j, answer in enumerate(answer_ids):
            rows.append((i, j, ids + answer, len(ids)))
    scores = np.zeros((len(prefixes), len(answers)), dtype=np.float64)
    order = sorted(range(len(rows)), key=lambda r: len(rows[r][2]))  # similar lengths together: little padding
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [rows[r] for r in order[start : start + batch_size]]
            width = max(len(ids) for _, _, ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for k, (_, _, ids, _) in enumerate(batch):
                input_ids[k, : len(ids)] = torch.tensor(ids)
                attention[k, : len(ids)] = 1
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model(input_ids=input_ids, attention_mask=attention).logits
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            for k, (i, j, ids, begin) in enumerate(batch):
                targets = torch.tensor(ids[begin:])
                # the token at position t is predicted by the logits at t - 1
                scores[i, j] = log_probs[k, begin - 1 : len(ids) - 1].gather(1, targets[:, None]).sum().item()
    return scores


def llm_label_scores(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    model: str = "smollm2-135m",
    question: str = DEFAULT_QUESTION,
    calibrate: bool = True,
    batch_size: int = 16,
    max_length: int = 512,
    precision: str = "auto",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Log-likelihood scores ``[n, k]`` of ``labels`` as the answer for each text (calibrated unless told not to).

    Returns:
        The scores and what was used: the model, the question, and the content-free bias when calibrating.

    Raises:
        UserError: the model cannot be loaded or is not a causal language model.
    """
    import transformers

    from tunesmith.models import load_failure, resolve_model
    from tunesmith.models.decoder import check_causal

    ref = resolve_model(model)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(ref)
        config = transformers.AutoConfig.from_pretrained(ref)
        check_causal(config, model, "zeroshot --method llm")
        lm = transformers.AutoModelForCausalLM.from_pretrained(ref)
    except (OSError, ValueError, KeyError) as exc:
        raise load_failure(model, exc) from None
    from tunesmith.training.hardware import resolve_precision

    precision = "bf16" if resolve_precision(precision) == "bf16" else "fp32"
    prefixes = build_prefixes(tokenizer, texts, labels, question)
    kwargs = {"batch_size": batch_size, "max_length": max_length, "precision": precision}
    scores = answer_log_likelihoods(lm, tokenizer, prefixes, labels, **kwargs)
    info: dict[str, Any] = {"model": model, "question": question, "calibrated": calibrate, "precision": precision}
    if calibrate:
        neutral = build_prefixes(tokenizer, [CONTENT_FREE], labels, question)
        bias = answer_log_likelihoods(lm, tokenizer, neutral, labels, **kwargs)[0]
        scores = scores - bias
        info["content_free_bias"] = {label: float(b) for label, b in zip(labels, bias, strict=True)}
    return scores, info
