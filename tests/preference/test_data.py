"""Preference pairs: validation with file and line, the prompt-grouped split, and tokenization identical to TRL's."""

from __future__ import annotations

import json

import pytest

from preference.conftest import make_pairs, make_word_tokenizer, write_jsonl
from tunesmith.cli import main
from tunesmith.errors import UserError
from tunesmith.preference.data import dedupe_pairs, load_pairs, prompt_holdout, tokenize_pairs, trl_example


def _lines(tmp_path, *rows) -> str:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


GOOD = {"prompt": "what colour", "chosen": "blue sky", "rejected": "mud"}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"prompt": "what", "chosen": "blue"}, r"line 2: a `chosen` answer without a `rejected` one"),
        ({"prompt": "what", "rejected": "mud"}, r"line 2: a `rejected` answer without a `chosen` one"),
        ({"prompt": "what", "chosen": "  ", "rejected": "mud"}, r"line 2: empty `chosen` answer"),
        ({"prompt": "what", "chosen": "blue", "rejected": ""}, r"line 2: empty `rejected` answer"),
        ({"prompt": "what", "chosen": "blue sky", "rejected": "blue sky "}, r"line 2: `chosen` and `rejected` are the same text"),
        ({"prompt": "what", "chosen": ["blue"], "rejected": "mud"}, r"line 2: `chosen` is a list; give plain text"),
    ],
)
def test_unusable_pairs_name_file_and_line(tmp_path, bad, message):
    path = _lines(tmp_path, GOOD, bad, GOOD | {"prompt": "other"})
    with pytest.raises(UserError, match=f"pairs.jsonl {message}"):
        load_pairs(path)


def test_every_bad_line_is_listed_and_dpo_needs_prompts(tmp_path):
    path = _lines(tmp_path, GOOD, {"chosen": "a"}, {"chosen": "x", "rejected": "x"}, GOOD | {"prompt": ""})
    with pytest.raises(UserError, match=r"line 2: .*\n  line 3: `chosen` and `rejected` are the same") as err:
        load_pairs(path)
    assert "line 4" not in str(err.value)  # an empty prompt is fine for a reward model
    with pytest.raises(UserError, match=r"line 2: empty or missing `prompt`"):
        load_pairs(_lines(tmp_path, GOOD, GOOD | {"prompt": ""}), require_prompt=True)
    with pytest.raises(UserError, match=r"has no `chosen` and `rejected` columns \(found: text, label\)"):
        load_pairs(_lines(tmp_path, {"text": "a", "label": "b"}))


def test_dedupe_and_split_keep_each_prompt_on_one_side(tmp_path):
    rows = make_pairs(30)
    rows += [dict(rows[0]), {**rows[1], "chosen": "warm sun"}]  # an exact duplicate, and a second pair for one prompt
    pairs, removed = dedupe_pairs(load_pairs(write_jsonl(tmp_path / "p.jsonl", rows)))
    assert removed == 1 and len(pairs) == 31
    train, held = prompt_holdout(pairs, 0.2, seed=3)
    assert len(train) + len(held) == 31 and len(held) >= 7
    assert not set(train.prompts) & set(held.prompts)
    again, _ = prompt_holdout(pairs, 0.2, seed=3)
    assert again.rows == train.rows


@pytest.mark.parametrize("chat", [True, False])
def test_tokenization_is_what_trl_dpo_builds(tiny_llama, tmp_path, chat):
    """TRL tokenizes DPO pairs itself; the checks and eval scores here rely on building exactly the same ids."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    pairs = load_pairs(write_jsonl(tmp_path / "p.jsonl", make_pairs(6)))
    ours, _ = tokenize_pairs(tokenizer, pairs, 64, chat)
    dataset = Dataset.from_list([trl_example(p, c, r, chat) for p, c, r in zip(pairs.prompts, pairs.chosen, pairs.rejected)])
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"), report_to="none", use_cpu=True, bf16=False, max_length=64, gradient_checkpointing=False
    )
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_llama), args=args, train_dataset=dataset, processing_class=tokenizer
    )
    theirs = trainer.train_dataset
    assert [f.prompt_ids for f in ours] == theirs["prompt_ids"]
    assert [f.chosen_ids for f in ours] == theirs["chosen_ids"]
    assert [f.rejected_ids for f in ours] == theirs["rejected_ids"]


def test_a_prompt_longer_than_max_length_names_the_line(tmp_path):
    tokenizer = make_word_tokenizer()
    long_prompt = " ".join(["what colour"] * 20)
    pairs = load_pairs(_lines(tmp_path, GOOD, GOOD | {"prompt": long_prompt}))
    with pytest.raises(
        UserError, match=r"pairs.jsonl line 2: the prompt is \d+ tokens with the chat template, which leaves no room .* --max-length 16"
    ):
        tokenize_pairs(tokenizer, pairs, 16, chat=True)
    features, truncated = tokenize_pairs(tokenizer, load_pairs(_lines(tmp_path, GOOD | {"chosen": "blue " * 30})), 16, chat=True)
    assert truncated == 1 and len(features[0].prompt_ids) + len(features[0].chosen_ids) == 16


@pytest.mark.parametrize("task", ["reward", "dpo"])
def test_cli_bad_pairs_exit_2_before_writing_anything(tmp_path, capsys, llama_args, task):
    bad = _lines(tmp_path, GOOD, GOOD | {"prompt": "x"}, {"prompt": "what", "chosen": "blue"})
    out = tmp_path / "run"
    code = main(["train", "--task", task, "--train", bad, "--model", llama_args["model"], "--out", str(out)])
    assert code == 2
    assert "pairs.jsonl line 3: a `chosen` answer without a `rejected` one" in capsys.readouterr().err
    long = _lines(tmp_path, GOOD, GOOD | {"prompt": " ".join(["what colour"] * 40)})
    code = main(["train", "--task", task, "--train", long, "--model", llama_args["model"], "--max-length", "32", "--out", str(out)])
    assert code == 2
    assert "pairs.jsonl line 2: the prompt is" in capsys.readouterr().err
    assert not out.exists()


def test_demo_preferences_from_translation_pairs(tmp_path, capsys):
    from tunesmith.preference.recipes import translation_preferences

    sft = tmp_path / "sft.jsonl"
    rows = [{"prompt": f"say {i}", "response": " ".join(["word"] * (i % 7 + 1)) + f" {i}"} for i in range(40)]
    sft.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    pairs = translation_preferences(str(sft), seed=1)
    assert len(pairs) == 40
    for i, p in enumerate(pairs):
        assert p["prompt"] == f"say {i}" and p["chosen"] == rows[i]["response"] and p["rejected"] != p["chosen"]
    out = tmp_path / "prefs.jsonl"
    assert main(["data", "preferences", str(sft), "--out", str(out), "--limit", "10"]) == 0
    assert len(load_pairs(str(out))) == 10
    assert "tunesmith train --task dpo" in capsys.readouterr().out
