"""A tiny random Llama with a word-level tokenizer and a ChatML-like chat template (no downloads), and tiny chat data."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

SPECIALS = ["<pad>", "<unk>", "<s>", "<|im_start|>", "<|im_end|>"]
_WORD_TEXT = (
    "user assistant system translate to english : hello teacher good morning thank you very much the cat dog eats fish "
    "i am happy we go home see tomorrow one two three four five red blue green big small is a and . , ! ? "
    "你好 老师 谢谢 猫 狗 吃 鱼 我 很 高兴 回家 明天 见 一 二 三 红 蓝 大 小"
)
WORDS = _WORD_TEXT.split()
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

ZH = ["你好", "老师", "谢谢", "猫", "狗", "我", "明天", "红", "大", "小"]
EN = ["hello", "teacher", "thank you", "cat", "dog", "i", "tomorrow", "red", "big", "small"]


def make_tokenizer(*, chat_template: str | None = CHAT_TEMPLATE, pad: bool = True):
    """A word-level fast tokenizer over :data:`WORDS`; ``pad=False`` leaves it without a pad token (as Llama's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(SPECIALS + WORDS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    kwargs = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "<|im_end|>", "additional_special_tokens": ["<|im_start|>"]}
    if pad:
        kwargs["pad_token"] = "<pad>"
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def make_tiny_llama(path: Path, *, chat_template: str | None = CHAT_TEMPLATE, pad: bool = True) -> Path:
    """Save a tiny random LlamaForCausalLM (2 layers, hidden 32) with :func:`make_tokenizer`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(chat_template=chat_template, pad=pad)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if pad else None,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_llama_bare(tmp_path_factory) -> Path:
    """The same kind of model whose tokenizer has neither a chat template nor a pad token (a base Llama)."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama-bare"), chat_template=None, pad=False)


def translation_pairs(n: int = 40) -> list[dict[str, str]]:
    """Distinct prompt/response pairs of varied length: 'translate to english : 猫 狗' -> 'cat dog'."""
    pairs = []
    for k in (1, 2, 3):
        for combo in itertools.permutations(range(len(ZH)), k):
            pairs.append({"prompt": "translate to english : " + " ".join(ZH[i] for i in combo), "response": " ".join(EN[i] for i in combo)})
            if len(pairs) == n:
                return pairs
    return pairs


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def gen_args(tiny_llama) -> dict:
    """Config overrides for a fast causal-LM run on the tiny Llama."""
    return {
        "model": str(tiny_llama),
        "max_steps": 4,
        "batch_size": 4,
        "eval_batch_size": 8,
        "lr": 1e-3,
        "max_length": 64,
        "precision": "fp32",
        "threads": 1,
        "eval_generate": 4,
        "max_new_tokens": 6,
        "report": False,
    }
