import numpy as np
import torch

from tunesmith.tasks.inference import batched_logits, length_sorted_batches, softmax


def test_length_sorted_batches_cover_every_index_once():
    lengths = [5, 1, 9, 3, 3, 7, 2]
    batches = list(length_sorted_batches(lengths, 3))
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert [lengths[i] for i in batches[0]] == [9, 7, 5]


def test_batched_logits_keep_input_order_and_match_one_by_one(tiny_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model)
    texts = ["free", "see you at lunch tomorrow mum", "win cash now", "love", "call now to claim your prize offer"]
    batched = batched_logits(model, tok, texts, max_length=32, batch_size=2)
    with torch.inference_mode():
        single = np.stack([model(**tok(t, return_tensors="pt")).logits[0].numpy() for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_softmax_rows_sum_to_one():
    p = softmax(np.array([[1000.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert p[1, 0] == 0.5
