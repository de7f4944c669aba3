"""generate and chat: streamed replies, sampling settings, the chat history and its commands, on a model and on a run."""

from __future__ import annotations

import io
import json

import pytest

from generative.conftest import translation_pairs, write_jsonl
from tunesmith.cli import main
from tunesmith.errors import UserError
from tunesmith.generate import ChatSession, Generator, Sampling, generate, run_chat


@pytest.fixture(scope="module")
def generator(tiny_llama) -> Generator:
    return Generator.load(tiny_llama, precision="fp32")


def test_streamed_pieces_make_the_reply_and_greedy_is_deterministic(generator):
    pieces = []
    reply = generator.generate("hello teacher", Sampling(max_new_tokens=8, temperature=0), on_text=pieces.append)
    assert reply and "".join(pieces).strip() == reply
    assert generator.generate("hello teacher", Sampling(max_new_tokens=8, temperature=0)) == reply


def test_seed_makes_sampling_repeatable(generator):
    settings = {"max_new_tokens": 12, "temperature": 1.5, "top_p": 1.0, "top_k": 0}
    first = generator.generate("hello", Sampling(**settings, seed=3))
    assert generator.generate("hello", Sampling(**settings, seed=3)) == first
    assert any(generator.generate("hello", Sampling(**settings, seed=s)) != first for s in (4, 5, 6))


def test_the_prompt_is_wrapped_in_the_chat_template_unless_raw(generator, tiny_llama):
    tok = generator.tokenizer
    chat_ids = generator.prompt_ids("hello", system="i am happy")
    assert tok.convert_ids_to_tokens(chat_ids)[:3] == ["<|im_start|>", "system", "i"]
    assert tok.convert_ids_to_tokens(chat_ids)[-2:] == ["<|im_start|>", "assistant"]
    raw = Generator.load(tiny_llama, chat=False, precision="fp32")
    assert raw.tokenizer.convert_ids_to_tokens(raw.prompt_ids("hello")) == ["hello"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"temperature": -1}, "--temperature"),
        ({"top_p": 0}, "--top-p"),
        ({"max_new_tokens": 0}, "--max-new-tokens"),
        ({"top_k": -2}, "--top-k"),
    ],
)
def test_bad_sampling_settings_name_the_flag(settings, message):
    with pytest.raises(UserError, match=message):
        Sampling(**settings)


def test_chat_keeps_history_resets_and_exits(generator):
    session = ChatSession(generator, sampling=Sampling(max_new_tokens=4, temperature=0))
    written = io.StringIO()
    answered = run_chat(session, io.StringIO("hello\ngood morning\n/reset\nthank you\n/exit\nnever read\n"), written.write, prompt="")
    assert answered == 3
    # after /reset only the last exchange remains
    assert [m["role"] for m in session.history] == ["user", "assistant"] and session.history[0]["content"] == "thank you"
    assert "(conversation reset)" in written.getvalue()
    session.send("hello")
    ids = generator.prompt_ids(session.history)
    assert generator.tokenizer.convert_ids_to_tokens(ids).count("user") == 2  # the earlier turn is in the prompt


def test_chat_drops_the_oldest_turns_to_fit_the_context(generator):
    session = ChatSession(generator, sampling=Sampling(max_new_tokens=200, temperature=0))  # context 256: 56 tokens for the prompt
    turn = "hello teacher good morning thank you very much"
    for k in range(6):
        session.history += [{"role": "user", "content": f"{turn} {k}"}, {"role": "assistant", "content": turn}]
    session.history.append({"role": "user", "content": "cat"})
    ids = session._fitted_prompt()
    assert session.dropped_turns > 0 and len(ids) <= 256 - 200
    assert session.history[-1]["content"] == "cat" and session.history[0]["role"] == "user"
    with pytest.raises(UserError, match="does not fit the model's context"):
        session.send(" ".join(["cat"] * 100))
    assert session.history[-1]["content"] == "cat"  # a refused message leaves the history as it was


def test_chat_needs_a_template(tiny_llama_bare):
    bare = Generator.load(tiny_llama_bare, precision="fp32")
    assert not bare.chat
    with pytest.raises(UserError, match="--template plain"):
        ChatSession(bare)
    plain = Generator.load(tiny_llama_bare, template="plain", precision="fp32")
    assert ChatSession(plain, sampling=Sampling(max_new_tokens=3, temperature=0)).send("hello") is not None


def test_cli_generate_and_chat_on_a_model(tiny_llama, monkeypatch, capsys):
    assert (
        main(["generate", str(tiny_llama), "--prompt", "hello", "--prompt", "cat", "--json", "--max-new-tokens", "4", "--temperature", "0"])
        == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["prompt"] for line in lines] == ["hello", "cat"] and all("generated" in line for line in lines)
    assert main(["generate", str(tiny_llama), "--prompt", "hello", "--max-new-tokens", "4", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.strip() == lines[0]["generated"]
    assert main(["generate", str(tiny_llama), "--prompt", "hello", "--top-p", "2"]) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n/reset\ncat\n"))
    assert main(["chat", str(tiny_llama), "--max-new-tokens", "3", "--temperature", "0"]) == 0
    captured = capsys.readouterr()
    assert "(conversation reset)" in captured.out and "2 message(s) answered" in captured.err


def test_generate_and_chat_on_a_trained_run(tiny_llama, tmp_path, monkeypatch, capsys):
    import tunesmith

    data = write_jsonl(tmp_path / "pairs.jsonl", translation_pairs(12))
    args = {"model": str(tiny_llama), "max_steps": 1, "batch_size": 4, "max_length": 64, "precision": "fp32", "threads": 1}
    run = tunesmith.train({"task": "sft"}, train=str(data), out=str(tmp_path / "run"), eval_generate=0, report=False, **args)
    assert isinstance(generate(run.dir, "translate to english : 猫", max_new_tokens=3, temperature=0), str)
    monkeypatch.setattr("sys.stdin", io.StringIO("translate to english : 狗\n/exit\n"))
    assert main(["chat", str(run.dir), "--max-new-tokens", "3"]) == 0
    assert "1 message(s) answered" in capsys.readouterr().err


def test_a_classifier_is_refused(tiny_model):
    with pytest.raises(UserError, match="not a language model"):
        Generator.load(tiny_model)
