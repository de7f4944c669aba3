import pytest

from tunesmith.evaluate.metrics import classification_metrics, majority_baseline


def test_metrics_by_hand():
    # gold: a a a b b c ; pred: a a b b c c
    m = classification_metrics([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8), "support": 3}
    assert m["per_class"]["c"]["precision"] == 0.5 and m["per_class"]["c"]["recall"] == 1.0
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["micro_f1"] == pytest.approx(m["accuracy"])
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_a_class_never_predicted_counts_as_zero_not_an_error():
    m = classification_metrics([0, 1], [0, 0], ["x", "y"])
    assert m["per_class"]["y"]["f1"] == 0.0


def test_majority_baseline_uses_the_training_majority():
    base = majority_baseline([0, 0, 0, 1], [1, 1, 0], ["ham", "spam"])
    assert base["predicts"] == "ham" and base["accuracy"] == pytest.approx(1 / 3)
