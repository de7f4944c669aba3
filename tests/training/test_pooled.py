"""The last layer computed for the first token only: exact logits and gradients, nothing changed on disk."""

from __future__ import annotations

import json

import pytest
import torch

import tunesmith
from tunesmith.config import ModelConfig
from tunesmith.errors import UserError
from tunesmith.training.methods import apply_method
from tunesmith.training.pooled import applies, pooled_last_layer

IDS = torch.tensor([[2, 5, 6, 7, 8, 9, 3], [2, 10, 11, 3, 0, 0, 0], [2, 12, 3, 0, 0, 0, 0]])
MASK = (IDS > 0).long()


def _model(tiny_model, cls="AutoModelForSequenceClassification", attention="eager", **kwargs):
    import transformers

    torch.manual_seed(0)
    model = getattr(transformers, cls).from_pretrained(
        tiny_model, num_labels=2, attn_implementation=attention, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **kwargs
    )
    return model


def _roberta(tmp_path):
    from transformers import RobertaConfig, RobertaForSequenceClassification

    config = RobertaConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64
    )
    torch.manual_seed(0)
    RobertaForSequenceClassification(config).save_pretrained(tmp_path / "roberta")
    return tmp_path / "roberta"


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_same_logits_and_gradients_as_the_full_last_layer(tiny_model, attention):
    model = _model(tiny_model, attention=attention).train()  # train mode: dropout is 0, so both passes are deterministic
    labels = torch.tensor([0, 1, 1])

    def run():
        model.zero_grad()
        out = model(input_ids=IDS, attention_mask=MASK, labels=labels)
        out.loss.backward()
        return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    full_logits, full_grads = run()
    with pooled_last_layer(model) as active:
        assert active
        logits, grads = run()
    assert torch.allclose(logits, full_logits, atol=1e-5)
    assert grads.keys() == full_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, full_grads[name], atol=1e-5), name
    # keys and values of the last layer still read every token: a padded-away word changes nothing, a real one does
    changed = IDS.clone()
    changed[0, 5] = 13
    with pooled_last_layer(model):
        assert not torch.allclose(model(input_ids=changed, attention_mask=MASK).logits[0], logits[0])


def test_the_layer_computes_every_position_again_after_the_block(tiny_model):
    model = _model(tiny_model).eval()
    with pooled_last_layer(model):
        inside = model.bert(input_ids=IDS, attention_mask=MASK).last_hidden_state
    after = model.bert(input_ids=IDS, attention_mask=MASK).last_hidden_state
    assert inside.shape == (3, 1, 32)
    assert after.shape == (3, 7, 32)
    assert torch.allclose(inside[:, 0], after[:, 0], atol=1e-5)
    assert "forward" not in vars(model.bert.encoder.layer[-1])


def test_roberta_and_lora_are_covered(tmp_path, tiny_model):
    roberta = _model(_roberta(tmp_path)).eval()
    ids = IDS + 3  # RoBERTa's padding id is 1: keep the real tokens clear of it
    ids[MASK == 0] = 1
    full = roberta(input_ids=ids, attention_mask=MASK).logits
    with pooled_last_layer(roberta) as active:
        assert active and torch.allclose(roberta(input_ids=ids, attention_mask=MASK).logits, full, atol=1e-5)

    lora = apply_method(_model(tiny_model), ModelConfig(method="lora", lora_dropout=0.0)).eval()
    full = lora(input_ids=IDS, attention_mask=MASK).logits
    with pooled_last_layer(lora) as active:
        assert active and torch.allclose(lora(input_ids=IDS, attention_mask=MASK).logits, full, atol=1e-5)


def test_only_first_token_classifiers_qualify(tiny_model):
    tagger = _model(tiny_model, cls="AutoModelForTokenClassification")
    assert applies(_model(tiny_model), "auto")
    assert not applies(tagger, "auto")  # a tagger reads every position
    assert not applies(_model(tiny_model), False)
    with pytest.raises(UserError, match="BertForTokenClassification is not a first-token sequence classifier"):
        applies(tagger, True)
    with pooled_last_layer(tagger) as active:
        assert not active


def test_training_with_and_without_it_gives_the_same_model(tmp_path, tiny_args, spam_csv):
    args = {**tiny_args, "dropout": 0.0, "epochs": 1}
    probabilities = {}
    for setting in (True, False):
        run = tunesmith.train({"data": {"train": str(spam_csv)}}, **args, pooled_last_layer=setting, out=str(tmp_path / str(setting)))
        lines = (run.dir / "eval_predictions.jsonl").read_text().splitlines()
        probabilities[setting] = torch.tensor([list(json.loads(line)["probabilities"].values()) for line in lines])
    assert torch.allclose(probabilities[True], probabilities[False], atol=1e-4)
