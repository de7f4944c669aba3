from pathlib import Path

import pytest

from tunesmith.config import RunConfig, build_config, dump_config, flat_fields, load_config
from tunesmith.errors import UserError

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))


def test_defaults_are_the_embedded_demo():
    cfg = build_config()
    assert (cfg.task, cfg.data.train, cfg.model.model, cfg.model.method) == ("classify", "sms_spam", "minilm", "full")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_shipped_example_validates(path):
    assert isinstance(load_config(path), RunConfig)


def test_examples_exist():
    assert len(EXAMPLES) >= 2


def test_all_errors_reported_together_with_key_and_value():
    with pytest.raises(UserError) as exc:
        build_config({"training": {"lr": -1, "batch_size": 0}, "model": {"method": "qlora"}})
    msg = str(exc.value)
    assert "3 invalid settings" in msg
    assert "`training.lr`" in msg and "-1" in msg
    assert "`training.batch_size`" in msg
    assert "`model.method`" in msg and "'full', 'lora' or 'freeze'" in msg


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(UserError, match=r"`training.learning_rate` is not a config key; did you mean `lr`"):
        build_config({"training": {"learning_rate": 1e-4}})


def test_flat_overrides_win_over_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  lr: 0.001\n  epochs: 5\n")
    cfg = load_config(path, {"lr": "2e-5", "text_col": "body"})
    assert cfg.training.lr == 2e-5 and cfg.training.epochs == 5 and cfg.data.text_col == "body"


def test_flat_keys_are_unique_and_cover_every_field():
    fields = flat_fields()
    assert {"lr", "train", "model", "method", "out", "task", "text_col"} <= set(fields)


def test_dump_roundtrips(tmp_path):
    cfg = build_config(overrides={"lr": 3e-5, "method": "lora"})
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize(
    ("text", "expected"),
    [("- a\n- b\n", "must hold a mapping"), ("training: [1,\n", "not valid YAML")],
)
def test_bad_yaml_files(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=expected):
        load_config(path)


def test_missing_config_file():
    with pytest.raises(UserError, match="config file not found"):
        load_config("nope.yaml")
