"""seq2seq: a tiny random T5 with a word-level tokenizer built here (no download), on a toy word-by-word translation."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.errors import UserError

WORDS = {"ni": "you", "hao": "good", "wo": "i", "ai": "love", "cha": "tea", "mao": "cat", "gou": "dog", "shui": "water"}


def make_tiny_t5(path: Path) -> Path:
    """A tiny random T5 (2+2 layers, d_model 32) and a whitespace word tokenizer that appends </s>, as T5's does."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    specials = ["<pad>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys([*specials, *WORDS, *WORDS.values(), "translate", ":"]))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    backend.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    config = T5Config(
        vocab_size=len(vocab),
        d_model=32,
        d_ff=64,
        d_kv=16,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(0)
    path.mkdir(parents=True, exist_ok=True)
    T5ForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_pairs(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        src = rng.choices(list(WORDS), k=rng.randint(2, 5))
        rows.append({"source": " ".join(src), "target": " ".join(WORDS[w] for w in src)})
    return rows


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory) -> Path:
    return make_tiny_t5(tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture
def pairs_jsonl(tmp_path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in make_pairs(80)), encoding="utf-8")
    return path


def t5_args(model: Path) -> dict:
    return {
        "model": str(model),
        "max_steps": 30,
        "batch_size": 8,
        "eval_batch_size": 16,
        "lr": 3e-3,
        "max_length": 16,
        "max_new_tokens": 8,
        "eval_generate": 12,
        "precision": "fp32",
        "threads": 1,
        "report": False,
        "overfit_monitor": False,
        "early_stopping": None,
    }


def test_seq2seq_trains_and_reports_bleu_chrf_before_and_after(tiny_t5, pairs_jsonl, tmp_path):
    import tunesmith
    from tunesmith.training.runner import train

    out = tmp_path / "run"
    run = train({"task": "seq2seq"}, train=str(pairs_jsonl), out=str(out), **t5_args(tiny_t5))
    assert {"config.yaml", "metrics.json", "history.jsonl", "model", "eval_predictions.jsonl"} <= {p.name for p in out.iterdir()}
    m = run.metrics["eval"]
    assert m["generated"] == 12
    for key in ("bleu", "chrf", "bleu_before", "chrf_before"):
        assert 0.0 <= m[key] <= 100.0
    evals = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines() if '"eval_loss"' in line]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]  # teacher-forced training lowered the target loss
    assert 0.0 <= evals[-1]["eval_token_accuracy"] <= 1.0
    records = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    assert len(records) == 12 and {"source", "reference", "generated", "generated_before"} <= set(records[0])
    # the saved run reloads and generates text for new sources
    rows = tunesmith.load(out).predict(["wo ai cha", "ni hao"])
    assert len(rows) == 2 and all(isinstance(r["generated"], str) for r in rows)
    metrics, preds = tunesmith.load(out).evaluate(str(pairs_jsonl))
    assert {"bleu", "chrf"} <= set(metrics) and len(preds) == 12


def test_seq2seq_accepts_prompt_response_columns(tmp_path):
    from tunesmith.tasks.seq2seq import load_text_pairs

    path = tmp_path / "pr.jsonl"
    path.write_text('{"prompt": "ni hao", "response": "you good"}\n{"prompt": "wo", "response": "i"}\n', encoding="utf-8")
    pairs = load_text_pairs(str(path))
    assert pairs.sources == ["ni hao", "wo"] and pairs.targets == ["you good", "i"] and pairs.rows == [1, 2]


def test_seq2seq_bad_rows_name_the_lines(tmp_path):
    from tunesmith.tasks.seq2seq import load_text_pairs

    path = tmp_path / "bad.jsonl"
    path.write_text('{"source": "ni", "target": "you"}\n{"source": "hao", "target": ""}\n{"source": "wo"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.jsonl line 2: .*`target`.*\n  line 3: `target` is missing"):
        load_text_pairs(str(path))
    other = tmp_path / "cols.jsonl"
    other.write_text('{"zh": "ni", "en": "you"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"--text-col SOURCE --label-col TARGET"):
        load_text_pairs(str(other))
    assert load_text_pairs(str(other), "zh", "en").targets == ["you"]


def test_seq2seq_refuses_a_decoder_only_model(tmp_path, pairs_jsonl, capsys):
    from preference.conftest import make_tiny_llama

    llama = make_tiny_llama(tmp_path / "llama")
    code = main(["train", "--task", "seq2seq", "--train", str(pairs_jsonl), "--model", str(llama), "--out", str(tmp_path / "r")])
    assert code == 2
    assert "not an encoder-decoder" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
