"""Fixtures for preference tuning: a tiny random Llama with a word-level chat tokenizer, and preference pairs.

The pairs are learnable from a handful of steps: the chosen answer of a colour question is always
from the "good" word list and the rejected one from the "bad" list.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

GOOD = ["sky", "blue", "sea", "calm", "sun", "warm", "bright", "clear"]
BAD = ["mud", "grey", "storm", "cold", "dark", "rain", "fog", "dull"]
QUESTION = ["what", "colour", "is", "the", "weather", "like", "today", "tell", "me", "about", "please", "answer"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_word_tokenizer(extra_words: list[str] = (), *, chat_template: str | None = CHAT_TEMPLATE):
    """A whitespace word-level fast tokenizer with ChatML specials (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    words = [*GOOD, *BAD, *QUESTION, "user", "assistant", "system", *[str(i) for i in range(100)], *extra_words]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys([*specials, *words]))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece()  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="<|im_end|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def make_tiny_llama(path: Path, *, chat_template: str | None = CHAT_TEMPLATE) -> Path:
    """Save a tiny random Llama (2 layers, hidden 32) with the word tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = make_word_tokenizer(chat_template=chat_template)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_pairs(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Distinct prompt/chosen/rejected rows: chosen answers use GOOD words, rejected ones BAD words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        prompt = " ".join(rng.choices(QUESTION, k=rng.randint(3, 6))) + f" {i % 100}"
        chosen = " ".join(rng.choices(GOOD, k=rng.randint(2, 5)))
        rejected = " ".join(rng.choices(BAD, k=rng.randint(2, 5)))
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def pairs_jsonl(tmp_path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", make_pairs(48))


@pytest.fixture
def llama_args(tiny_llama) -> dict:
    """Config overrides for a fast preference run on the tiny Llama."""
    return {
        "model": str(tiny_llama),
        "max_steps": 12,
        "batch_size": 8,
        "eval_batch_size": 16,
        "lr": 5e-3,
        "max_length": 64,
        "eval_fraction": 0.25,
        "max_new_tokens": 8,
        "precision": "fp32",
        "threads": 1,
        "report": False,
        "overfit_monitor": False,
        "early_stopping": None,
    }


def cli_flags(overrides: dict) -> list[str]:
    """Config overrides as `tunesmith train` flags (--no-x for False, none for None)."""
    flags = []
    for key, value in overrides.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{key.replace('_', '-')}")
        else:
            flags += [flag, "none" if value is None else str(value)]
    return flags
