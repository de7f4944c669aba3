"""Speed levers of full fine-tuning: frozen embeddings and lower layers, the attention kernel.

Each lever must leave training correct: frozen weights stay bit-identical, everything above them
still learns, backpropagation really stops at the lowest trainable layer, and impossible settings
are refused with a message that says what to choose instead.
"""

from __future__ import annotations

import pytest
import torch

import tunesmith
from tunesmith.config import ModelConfig
from tunesmith.errors import UserError
from tunesmith.training.hardware import training_attention
from tunesmith.training.methods import apply_method, describe_frozen, freeze_lower, transformer_layers


def _classifier(tiny_model):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)


def _trainable(model, prefix: str) -> set[bool]:
    return {p.requires_grad for n, p in model.named_parameters() if n.startswith(prefix)}


def test_auto_freezes_the_embedding_block_only(tiny_model):
    model = apply_method(_classifier(tiny_model), ModelConfig())
    assert _trainable(model, "bert.embeddings.") == {False}
    assert _trainable(model, "bert.encoder.layer.0.") == {True}
    assert _trainable(model, "classifier.") == {True}


def test_freeze_layers_stops_backpropagation_above_them(tiny_model):
    model = apply_method(_classifier(tiny_model), ModelConfig(freeze_layers=1))
    assert _trainable(model, "bert.encoder.layer.0.") == {False}
    assert _trainable(model, "bert.encoder.layer.1.") == {True}
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 9, 3, 0]])
    out = model(input_ids=ids, attention_mask=(ids > 0).long(), labels=torch.tensor([0, 1]))
    # layer 0 runs without building a graph: its output enters layer 1 as a constant
    seen = []
    hook = model.bert.encoder.layer[1].register_forward_pre_hook(lambda _m, args: seen.append(args[0].requires_grad))
    model(input_ids=ids, attention_mask=(ids > 0).long())
    hook.remove()
    assert seen == [False]
    out.loss.backward()
    assert all(p.grad is None for p in model.bert.encoder.layer[0].parameters())
    assert all(p.grad is not None for p in model.bert.encoder.layer[1].parameters())


def test_frozen_weights_stay_identical_through_training(tmp_path, tiny_model, tiny_args, spam_csv):
    args = {**tiny_args, "freeze_embeddings": True, "freeze_layers": 1}
    run = tunesmith.train({"data": {"train": str(spam_csv)}}, **args, out=str(tmp_path / "run"))
    before, after = _classifier(tiny_model).state_dict(), _classifier(run.dir / "model").state_dict()
    for name in ("bert.embeddings.word_embeddings.weight", "bert.embeddings.LayerNorm.weight", "bert.encoder.layer.0.output.dense.weight"):
        assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["bert.encoder.layer.1.output.dense.weight"], after["bert.encoder.layer.1.output.dense.weight"])


@pytest.fixture(scope="module")
def six_layer_model(tmp_path_factory):
    from tests.conftest import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("six-layers"), num_layers=6)


def test_auto_freezes_the_tasks_layers_only_on_deep_models(tiny_model, six_layer_model):
    deep = apply_method(_classifier(six_layer_model), ModelConfig(), auto_freeze_layers=1)
    assert _trainable(deep, "bert.encoder.layer.0.") == {False}
    assert _trainable(deep, "bert.encoder.layer.1.") == {True}
    # a shallow model keeps every layer; a number the user gives wins; trained embeddings leave nothing to freeze
    assert freeze_lower(_classifier(tiny_model), ModelConfig(), auto_layers=1) == {"embeddings": 1, "layers": 0}
    assert freeze_lower(_classifier(six_layer_model), ModelConfig(freeze_layers=0), auto_layers=1) == {"embeddings": 1, "layers": 0}
    assert freeze_lower(_classifier(six_layer_model), ModelConfig(freeze_embeddings=False), auto_layers=1) == {
        "embeddings": 0,
        "layers": 0,
    }
    # tasks other than classify choose nothing: auto stays 0
    assert freeze_lower(_classifier(six_layer_model), ModelConfig()) == {"embeddings": 1, "layers": 0}
    # the run header says what stayed fixed
    assert describe_frozen(deep) == "embeddings and lowest 1 of 6 layers fixed"
    assert describe_frozen(apply_method(_classifier(tiny_model), ModelConfig())) == "embeddings fixed"
    assert describe_frozen(_classifier(tiny_model)) == ""


def test_classify_defaults_freeze_one_layer_and_train_the_head_faster(tmp_path, six_layer_model, tiny_args, spam_csv):
    from tunesmith.config import TrainingConfig
    from tunesmith.tasks import classify
    from tunesmith.training.methods import build_optimizer

    args = {k: v for k, v in tiny_args.items() if k != "freeze_embeddings"} | {"model": str(six_layer_model), "epochs": 1}
    run = tunesmith.train({"data": {"train": str(spam_csv)}}, **args, out=str(tmp_path / "run"))
    before, after = _classifier(six_layer_model).state_dict(), _classifier(run.dir / "model").state_dict()
    assert torch.equal(before["bert.encoder.layer.0.output.dense.weight"], after["bert.encoder.layer.0.output.dense.weight"])
    assert not torch.equal(before["bert.encoder.layer.1.output.dense.weight"], after["bert.encoder.layer.1.output.dense.weight"])
    optimizer = build_optimizer(_classifier(six_layer_model), TrainingConfig(lr=5e-5), "bert", classify.TASK.default_head_lr)
    assert sorted({group["lr"] for group in optimizer.param_groups}) == [5e-5, 1e-3]


def test_tied_embeddings_stay_trainable_under_auto(tiny_model):
    from transformers import AutoModelForMaskedLM

    mlm = AutoModelForMaskedLM.from_pretrained(tiny_model)
    assert freeze_lower(mlm, ModelConfig()) == {"embeddings": 0, "layers": 0}
    assert _trainable(mlm, "bert.embeddings.") == {True}


def test_impossible_settings_are_refused(tiny_model):
    model = _classifier(tiny_model)
    assert len(transformer_layers(model)) == 2
    with pytest.raises(UserError, match="leaves nothing to fine-tune: .* has 2 layers; choose at most 1"):
        freeze_lower(model, ModelConfig(freeze_layers=2))
    with pytest.raises(UserError, match="needs frozen embeddings"):
        freeze_lower(model, ModelConfig(freeze_layers=1, freeze_embeddings=False))
    assert freeze_lower(_classifier(tiny_model), ModelConfig(freeze_embeddings=False)) == {"embeddings": 0, "layers": 0}


def test_attention_kernel_choice():
    from transformers import BertConfig, LlamaConfig

    encoder, decoder = BertConfig(), LlamaConfig(architectures=["LlamaForCausalLM"])
    assert training_attention("auto", encoder) == ("eager" if not torch.cuda.is_available() else None)
    assert training_attention("auto", decoder) is None
    assert training_attention("sdpa", encoder) == "sdpa"


def test_eager_and_sdpa_kernels_agree(tiny_model):
    from transformers import AutoModelForSequenceClassification

    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 9, 3, 0]])
    logits = [
        AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2, attn_implementation=kernel)
        .eval()(input_ids=ids, attention_mask=(ids > 0).long())
        .logits
        for kernel in ("eager", "sdpa")
    ]
    torch.testing.assert_close(logits[0], logits[1], atol=1e-5, rtol=1e-5)


def test_decoders_keep_their_embeddings_under_auto():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        architectures=["LlamaForCausalLM"], pad_token_id=0,
    )  # fmt: skip
    model = LlamaForSequenceClassification(config)
    assert freeze_lower(model, ModelConfig()) == {"embeddings": 0, "layers": 0}
    assert freeze_lower(model, ModelConfig(freeze_embeddings=True, freeze_layers=1)) == {"embeddings": 1, "layers": 1}
    assert not model.model.embed_tokens.weight.requires_grad and not any(p.requires_grad for p in model.model.layers[0].parameters())
