"""Instruction tuning on the tiny Llama: reply-only loss, packing without cross-example attention, bad input, end to end."""

from __future__ import annotations

import json

import pytest
import torch

from generative.conftest import make_tokenizer, translation_pairs, write_jsonl
from tunesmith.cli import main
from tunesmith.data.chat import ChatData, load_chat
from tunesmith.errors import UserError
from tunesmith.tasks.causal import IGNORE, CausalCollator, pack
from tunesmith.tasks.sft import encode_conversations


def test_only_reply_tokens_carry_labels():
    tokenizer = make_tokenizer()
    conv = [
        {"role": "system", "content": "you are a teacher"},
        {"role": "user", "content": "translate to english : 猫"},
        {"role": "assistant", "content": "cat"},
        {"role": "user", "content": "translate to english : 狗 鱼"},
        {"role": "assistant", "content": "dog fish"},
    ]
    [feat], truncated = encode_conversations(tokenizer, ChatData("mem", [conv], [1]), max_length=64)
    assert truncated == 0
    tokens = tokenizer.convert_ids_to_tokens(feat["input_ids"])
    labelled = [tok for tok, label in zip(tokens, feat["labels"]) if label != IGNORE]
    # each reply and the end-of-turn token that closes it; nothing of the system/user turns or the role markup
    assert labelled == ["cat", "<|im_end|>", "dog", "fish", "<|im_end|>"]
    assert all(label in (IGNORE, tok_id) for label, tok_id in zip(feat["labels"], feat["input_ids"]))
    prompt_part = tokens[: tokens.index("cat")]
    assert {"system", "user", "translate", "猫", "assistant"} <= set(prompt_part)
    assert all(label == IGNORE for label in feat["labels"][: len(prompt_part)])
    # the ids are the whole conversation as the template renders it
    rendered = tokenizer.apply_chat_template(conv, tokenize=False)
    assert feat["input_ids"] == tokenizer(rendered, add_special_tokens=False)["input_ids"]


def test_truncation_is_counted_and_a_prompt_beyond_max_length_names_its_line():
    tokenizer = make_tokenizer()
    long_reply = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": " ".join(["cat"] * 40)}]
    feats, truncated = encode_conversations(tokenizer, ChatData("mem", [long_reply], [1]), max_length=16)
    assert truncated == 1 and len(feats[0]["input_ids"]) == 16
    long_prompt = [{"role": "user", "content": " ".join(["dog"] * 40)}, {"role": "assistant", "content": "ok"}]
    with pytest.raises(UserError, match=r"line 7 \(\d+ tokens\).*--max-length"):
        encode_conversations(tokenizer, ChatData("data.jsonl", [long_reply, long_prompt], [3, 7]), max_length=16)


def test_packed_examples_do_not_attend_across_boundaries(tiny_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    features = [{"input_ids": ids, "labels": list(ids)} for ids in ([5, 8, 9, 12], [13, 14, 15, 16, 17, 18], [20, 21])]
    packed = pack(features, max_length=10, seed=0)
    assert sorted(len(p["input_ids"]) for p in packed) == [2, 10]  # best fit, longest first: 6 + 4 | 2
    assert all(p["labels"][0] == IGNORE for p in packed)
    batch = CausalCollator(pad_token_id=0)(packed)
    assert "attention_mask" not in batch and batch["use_cache"] is False
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        for row, p in enumerate(packed):
            start = 0
            for end in [i for i, pos in enumerate(p["position_ids"][1:], 1) if pos == 0] + [len(p["position_ids"])]:
                alone = model(torch.tensor([p["input_ids"][start:end]])).logits[0]
                assert torch.allclose(logits[row, start:end], alone, atol=1e-5), "a packed example saw its neighbour"
                start = end
        # the packed labels score each example's own next tokens only
        labels = batch["labels"][0]
        starts = [i for i, pos in enumerate(packed[0]["position_ids"]) if pos == 0]
        assert all(labels[s] == IGNORE for s in starts)


def test_loss_projects_only_labelled_positions_and_equals_the_models_own(tiny_llama):
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM

    from tunesmith.tasks.causal import make_labelled_token_loss

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    features = [
        {"input_ids": [5, 8, 9, 12, 13], "labels": [IGNORE, IGNORE, IGNORE, 12, 13]},
        {"input_ids": [14, 15, 16, 17], "labels": [IGNORE, 15, IGNORE, 17]},
        {"input_ids": [20, 21, 22], "labels": [IGNORE, IGNORE, 22]},
    ]
    packed = pack(features, max_length=8, seed=0)
    selected = CausalCollator(pad_token_id=0, select_logits=True)(packed)
    full = CausalCollator(pad_token_id=0)(packed)
    with torch.no_grad():
        outputs = model(**{k: v for k, v in selected.items() if k != "labels"})
        assert outputs.logits.shape[1] == 1  # no vocabulary-wide logits for every position
        ours = make_labelled_token_loss(SimpleNamespace(output_layer=model.get_output_embeddings()))(outputs, selected["labels"])
        reference = model(**full).loss
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"messages": [{"content": "hi"}, {"role": "assistant", "content": "hello"}]}, r"line 2: message 1 has no `role`"),
        (
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]},
            r"line 2: message 2 is an empty assistant",
        ),
        ({"prompt": "hi", "response": ""}, r"line 2: the response \(`response`\) is empty"),
        ({"instruction": "greet", "output": ""}, r"line 2: the response \(`output`\) is empty"),
        ({"messages": [{"role": "user", "content": "hi"}]}, r"line 2: the conversation has no assistant message"),
        ({"question": "hi"}, r"line 2: found `question`; expected `messages`"),
    ],
)
def test_bad_examples_name_their_line(tmp_path, row, expected):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "hi", "response": "hello"}, row])
    with pytest.raises(UserError, match=expected):
        load_chat(str(path))


def test_three_shapes_become_conversations(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            {"prompt": "c", "completion": "d", "system": "s"},
            {"instruction": "e", "input": "f", "output": "g"},
            {"instruction": "h", "output": "i"},
        ],
    )
    data = load_chat(str(path))
    assert data.conversations[1] == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    assert data.conversations[2][0] == {"role": "user", "content": "e\n\nf"}
    assert data.conversations[3][0] == {"role": "user", "content": "h"}
    assert data.rows == [1, 2, 3, 4]


def test_packaged_hsk_pairs():
    pytest.importorskip("hsk_sentences_audio")
    data = load_chat("hsk_zh_en")
    assert len(data) == 4354
    assert data.conversations[0] == [
        {"role": "user", "content": "Translate to English: 老师，您好！"},
        {"role": "assistant", "content": "Hello, teacher!"},
    ]


def test_cli_bad_input_exits_2_naming_the_line(tmp_path, gen_args, tiny_llama_bare, capsys):
    bad = write_jsonl(
        tmp_path / "bad.jsonl", [*translation_pairs(5), {"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]}]
    )
    flags = ["--task", "sft", "--model", gen_args["model"], "--threads", "1"]
    assert main(["train", *flags, "--train", str(bad), "--out", str(tmp_path / "r1")]) == 2
    assert "line 6: message 1 has no `role`" in capsys.readouterr().err
    good = write_jsonl(tmp_path / "good.jsonl", translation_pairs(10))
    assert main(["train", *flags, "--train", str(good), "--max-length", "8", "--out", str(tmp_path / "r2")]) == 2
    assert "longer than --max-length 8 tokens in line" in capsys.readouterr().err
    bare = [
        "train",
        "--task",
        "sft",
        "--model",
        str(tiny_llama_bare),
        "--train",
        str(good),
        "--threads",
        "1",
        "--out",
        str(tmp_path / "r3"),
    ]
    assert main(bare) == 2
    message = capsys.readouterr().err
    assert "has no chat template" in message and "--template plain" in message
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


@pytest.fixture(scope="module")
def sft_run(tiny_llama, tmp_path_factory):
    import tunesmith

    root = tmp_path_factory.mktemp("sft")
    data = write_jsonl(root / "pairs.jsonl", translation_pairs(60))
    args = {"model": str(tiny_llama), "max_steps": 6, "batch_size": 4, "eval_batch_size": 8, "lr": 3e-3, "max_length": 64}
    args |= {"precision": "fp32", "threads": 1, "eval_generate": 5, "max_new_tokens": 5, "report": False, "method": "full"}
    return tunesmith.train({"task": "sft"}, train=str(data), out=str(root / "run"), **args)


def test_sft_run_end_to_end(sft_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    metrics = sft_run.metrics["eval"]
    assert metrics["generative"] is True
    for key in ("perplexity", "eval_loss", "bleu", "chrf"):
        assert f"{key}_before" in metrics and f"{key}_after" in metrics
    assert metrics["perplexity_after"] < metrics["perplexity_before"]  # it learned the replies
    assert metrics["generated"] == 5
    data = json.loads((sft_run.dir / "data.json").read_text())
    assert data["packing"]["sequences"] < data["packing"]["examples"]
    records = [json.loads(line) for line in (sft_run.dir / "eval_predictions.jsonl").read_text().splitlines()]
    assert len(records) == 5 and {"row", "prompt", "reference", "generated", "generated_before"} <= set(records[0])
    # run/model is a plain causal LM with its tokenizer and chat template: other tools load it as is
    model = AutoModelForCausalLM.from_pretrained(sft_run.dir / "model")
    tokenizer = AutoTokenizer.from_pretrained(sft_run.dir / "model")
    assert type(model).__name__ == "LlamaForCausalLM" and tokenizer.chat_template
    assert len(sft_run.predict(["translate to english : 猫"])) == 1


def test_lora_is_the_default_and_merges(tiny_llama, tmp_path):
    import tunesmith
    from tunesmith.config import build_config

    assert build_config({"task": "sft"}).model.method == "lora"
    data = write_jsonl(tmp_path / "pairs.jsonl", translation_pairs(12))
    args = {"model": str(tiny_llama), "max_steps": 1, "batch_size": 4, "max_length": 64, "precision": "fp32", "threads": 1}
    # with activation checkpointing (non-reentrant): frozen embeddings still let gradients reach the adapters
    run = tunesmith.train(
        {"task": "sft"}, train=str(data), out=str(tmp_path / "run"), eval_generate=0, report=False, activation_checkpointing=True, **args
    )
    assert run.metrics["training"]["parameters"]["trainable"] < run.metrics["training"]["parameters"]["total"] / 2
    saved = json.loads((run.dir / "model" / "config.json").read_text())
    assert saved["architectures"] == ["LlamaForCausalLM"] and not (run.dir / "model" / "adapter_config.json").exists()
    from safetensors.torch import load_file

    # the adapters trained (LoRA B starts at zero, so merging untrained adapters would change nothing)
    before, after = load_file(tiny_llama / "model.safetensors"), load_file(run.dir / "model" / "model.safetensors")
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(before[key], after[key])


def test_eval_verb_scores_the_runs_own_split(sft_run, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["eval", str(sft_run.dir), "--limit", "3", "--max-new-tokens", "4", "--output", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["generated"] == 3 and "bleu" in metrics and "chrf" in metrics and metrics["perplexity"] > 0
    assert "bleu" in capsys.readouterr().out


def test_eval_without_data_is_for_generative_runs_only(tmp_path):
    from tunesmith.config import build_config
    from tunesmith.run import Run

    run = Run(tmp_path, build_config({}))  # a classify run: nothing is loaded before the check
    with pytest.raises(UserError, match="needs --data"):
        run.evaluate()
    with pytest.raises(UserError, match="takes no limit"):
        run.evaluate("holdout.csv", limit=3)
