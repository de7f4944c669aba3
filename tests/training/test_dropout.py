"""The cheaper dropout mask: the right keep rate and scale, the right gradient, reproducible, and put back after training."""

from __future__ import annotations

import pytest
import torch

from tunesmith.training.dropout import ATTENTION_NAME, cheap_dropout, fast_dropout, keep_mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.03])
def test_mask_keeps_one_minus_p_and_scales_the_kept(dtype, p):
    like = torch.empty(1_000_000, dtype=dtype)
    mask = keep_mask(like, p)
    assert mask.dtype == dtype and mask.shape == like.shape
    kept = mask != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.003  # 6 standard deviations at p = 0.5
    assert torch.allclose(mask[kept].float(), torch.tensor(1 / (1 - p)), rtol=1e-2 if dtype == torch.bfloat16 else 1e-6)
    # neighbouring elements come from different bits of the same 64-bit draw: they must not be correlated
    a, b = kept[:-1].float(), kept[1:].float()
    assert abs(((a - a.mean()) * (b - b.mean())).mean().item()) < 0.003


def test_gradient_is_the_same_mask():
    x = torch.randn(64, 33, requires_grad=True)
    y = cheap_dropout(x, 0.25)
    y.backward(torch.ones_like(y))
    dropped = y == 0
    assert torch.equal(x.grad == 0, dropped)
    assert torch.allclose(x.grad[~dropped], torch.tensor(1 / 0.75))
    assert torch.allclose(y[~dropped], x[~dropped] / 0.75)


def test_seeded_masks_repeat_and_off_means_identity():
    torch.manual_seed(3)
    first = keep_mask(torch.empty(1000), 0.1)
    torch.manual_seed(3)
    assert torch.equal(keep_mask(torch.empty(1000), 0.1), first)
    x = torch.randn(10, 10)
    assert cheap_dropout(x, 0.1, training=False) is x
    assert cheap_dropout(x, 0.0) is x
    assert torch.equal(cheap_dropout(x, 1.0), torch.zeros_like(x))


def _bert(tiny_model, **dropouts):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2, attn_implementation="eager", **dropouts)


IDS = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 9, 3, 0]])
MASK = (IDS > 0).long()


def test_model_switches_and_switches_back(tiny_model):
    model = _bert(tiny_model, hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3).eval()
    reference = model(input_ids=IDS, attention_mask=MASK).logits
    with fast_dropout(model) as active:
        assert active
        assert model.config._attn_implementation == ATTENTION_NAME
        assert all("forward" in vars(m) for m in model.modules() if isinstance(m, torch.nn.Dropout))
        # evaluation: no dropout, and the attention is exactly transformers' eager attention
        assert torch.allclose(model(input_ids=IDS, attention_mask=MASK).logits, reference, atol=1e-6)
    assert model.config._attn_implementation == "eager"
    assert not any("forward" in vars(m) for m in model.modules())


def test_attention_probabilities_are_dropped_too(tiny_model):
    model = _bert(tiny_model, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.5).train()
    with fast_dropout(model):
        outputs = {tuple(model(input_ids=IDS, attention_mask=MASK).logits.flatten().tolist()) for _ in range(3)}
    assert len(outputs) == 3  # only the attention dropout is on, and it changes every pass


def test_sdpa_models_keep_their_attention(tiny_model):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2, attn_implementation="sdpa")
    with fast_dropout(model) as active:
        assert active and model.config._attn_implementation == "sdpa"
    with fast_dropout(model, enabled=False) as active:
        assert not active
