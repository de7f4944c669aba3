"""Demo preference pairs built from packaged translation data, for trying ``--task reward`` and ``--task dpo``.

Each translation pair becomes a preference pair: the prompt asks for the translation, the reference
translation is ``chosen`` and the translation of another sentence is ``rejected``. The wrong
translation is drawn from sentences of similar length, so length alone does not give the answer
away: a model has to read the source sentence to prefer the right one.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError

NEIGHBOURS = 20  # the wrong translation comes from this many sentences of closest length on either side


def translation_preferences(source: str = "hsk_zh_en", *, seed: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
    """Preference pairs from single-turn instruction data (a packaged sft dataset or a ``.jsonl`` file).

    Args:
        source: ``hsk_zh_en`` (Chinese -> English) or any instruction file ``tunesmith train --task sft`` reads.
        seed: seed of the choice of wrong answers (and of the sample under ``limit``).
        limit: keep a seeded random sample of this many pairs.

    Returns:
        ``{"prompt", "chosen", "rejected", "source_row"}`` dicts, in the source's order.

    Raises:
        UserError: the source cannot be read, or has fewer than two distinct answers to pair.
    """
    from tunesmith.data.chat import load_chat, prompt_and_reference

    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1 pair, got {limit}; omit it to keep every pair")
    data = load_chat(source)
    prompts, answers, rows = [], [], []
    for messages, row in zip(data.conversations, data.rows, strict=True):
        context, answer = prompt_and_reference(messages)
        users = [m["content"] for m in context if m["role"] == "user"]
        if len(users) != 1 or len(context) != 1:
            continue  # multi-turn or system-prompted examples do not make a single prompt
        prompts.append(users[0])
        answers.append(answer)
        rows.append(row)
    if len({a.strip().casefold() for a in answers}) < 2:
        raise UserError(
            f"{source}: need at least two single-turn examples with different answers to build preference pairs, got {len(answers)}"
        )
    rng = random.Random(seed)
    by_length = sorted(range(len(answers)), key=lambda i: (len(answers[i]), i))
    position = {i: k for k, i in enumerate(by_length)}
    pairs = []
    for i in range(len(answers)):
        k = position[i]
        window = by_length[max(0, k - NEIGHBOURS) : k + NEIGHBOURS + 1]
        wrong = [j for j in window if answers[j].strip().casefold() != answers[i].strip().casefold()]
        if not wrong:  # every neighbour says the same: look further
            wrong = [j for j in range(len(answers)) if answers[j].strip().casefold() != answers[i].strip().casefold()]
        j = rng.choice(wrong)
        pairs.append({"prompt": prompts[i], "chosen": answers[i], "rejected": answers[j], "source_row": rows[i]})
    if limit is not None and limit < len(pairs):
        keep = sorted(random.Random(seed).sample(range(len(pairs)), limit))
        pairs = [pairs[i] for i in keep]
    return pairs


def write_preferences(pairs: list[dict[str, Any]], out: str | Path) -> Path:
    """Write pairs as JSON Lines (atomically: a killed write leaves no half file)."""
    from tunesmith.training.rundir import atomic_write_text

    path = Path(out)
    if path.suffix.lower() != ".jsonl":
        raise UserError(f"{path}: preference pairs are written as JSON Lines; name the file with .jsonl, e.g. {path.with_suffix('.jsonl')}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    return path
