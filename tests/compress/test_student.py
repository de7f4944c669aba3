"""Student specs and layer dropping on a tiny random BERT."""

from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_model
from tunesmith.compress.student import build_layer_student, drop_layers, parse_student
from tunesmith.errors import UserError


@pytest.mark.parametrize(
    ("text", "total", "kept"),
    [
        ("layers:every-other", 6, [0, 2, 4]),
        ("layers:every-other", 5, [0, 2, 4]),
        ("layers:3", 6, [0, 2, 4]),
        ("layers:2", 6, [0, 3]),
        ("layers:1", 12, [0]),
        ("layers:0,5", 6, [0, 5]),
        ("layers: 5, 1", 6, [1, 5]),
    ],
)
def test_layer_selections(text, total, kept):
    spec = parse_student(text)
    assert spec.from_teacher and spec.layers(total) == kept


def test_a_model_reference_is_a_student_of_its_own():
    spec = parse_student("minilm")
    assert not spec.from_teacher and spec.model == "minilm"


@pytest.mark.parametrize(
    ("text", "total", "message"),
    [
        ("layers:6", 6, "K must be 1..5"),
        ("layers:0,9", 6, r"layer\(s\) \[9\] do not exist"),
        ("layers:0,1", 2, "keeps all 2 layers"),
        ("layers:every-other", 1, "keeps all 1 layers"),
    ],
)
def test_selections_that_do_not_shrink_are_refused(text, total, message):
    with pytest.raises(UserError, match=message):
        parse_student(text).layers(total)


@pytest.mark.parametrize("text", ["layers:", "layers:half", "layers:1-3", ""])
def test_unknown_syntax_names_the_accepted_forms(text):
    with pytest.raises(UserError, match="layers:every-other, layers:K"):
        parse_student(text)


def test_dropped_layers_keep_the_teachers_weights_and_reload(tmp_path):
    from transformers import AutoModelForSequenceClassification

    teacher_dir = make_tiny_model(tmp_path / "teacher", num_layers=4)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    info = build_layer_student(teacher_dir, parse_student("layers:every-other"), tmp_path / "student")
    assert info["kept_layers"] == [0, 2] and info["teacher_layers"] == 4
    assert info["student_parameters"] < info["teacher_parameters"]

    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    t, s = teacher.state_dict(), student.state_dict()
    for new, old in ((0, 0), (1, 2)):
        key = "bert.encoder.layer.{}.attention.self.query.weight"
        assert torch.equal(s[key.format(new)], t[key.format(old)])
    assert torch.equal(s["classifier.weight"], t["classifier.weight"]) and torch.equal(
        s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"]
    )
    # the saved student computes what the in-memory layer-dropped teacher computes
    inputs = {"input_ids": torch.tensor([[2, 5, 6, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    dropped = drop_layers(teacher, [0, 2]).eval()
    with torch.no_grad():
        assert torch.allclose(dropped(**inputs).logits, student.eval()(**inputs).logits, atol=1e-6)
