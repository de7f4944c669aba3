"""The new-run form: form fields -> config, data sources limited to packaged data and uploads, upload names."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.errors import UserError
from tunesmith.ui import newrun


@pytest.fixture
def upload(tmp_path) -> tuple[Path, Path]:
    root = tmp_path / "runs"
    path = root / ".uploads" / "abc" / "spam.csv"
    path.parent.mkdir(parents=True)
    path.write_text("text,label\nwin cash,spam\nsee you,ham\n")
    return root, path


def test_form_becomes_a_config_in_the_runs_directory(upload):
    root, path = upload
    form = {
        "train": str(path),
        "model": "/models/tiny",
        "method": "lora",
        "epochs": "2",
        "lr": "1e-3",
        "name": "mine",
        "extra": "label_smoothing: 0.1",
        "eval": "",
    }
    config, run_dir = newrun.form_config(form, root)
    assert run_dir == root / "mine" and config.out == str(root / "mine")
    assert (config.model.method, config.training.epochs, config.training.lr, config.training.label_smoothing) == ("lora", 2.0, 1e-3, 0.1)
    assert config.data.train == str(path.resolve()) and config.data.eval is None


def test_default_run_name_is_task_data_time(upload):
    root, path = upload
    _, run_dir = newrun.form_config({"train": str(path), "task": "classify"}, root)
    assert run_dir.parent == root and run_dir.name.startswith("classify-spam-")


def test_every_form_problem_is_reported_at_once(upload, tmp_path):
    root, _ = upload
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("text,label\na,b\n")
    form = {"train": str(outside), "eval": "../../etc/passwd", "name": "../x", "extra": "lerning_rate: 1\nout: /tmp/x"}
    with pytest.raises(UserError) as err:
        newrun.form_config(form, root)
    msg = str(err.value)
    for part in ("`data.train`", "`data.eval`", "run name", "`lerning_rate` is not a config key", "`out` is set by the form"):
        assert part in msg


def test_config_errors_name_the_key(upload):
    root, path = upload
    with pytest.raises(UserError, match="training.lr"):
        newrun.form_config({"train": str(path), "lr": "-1"}, root)
    with pytest.raises(UserError, match="choose a packaged dataset or upload"):
        newrun.form_config({"model": "minilm"}, root)


def test_packaged_dataset_names_are_accepted(tmp_path):
    config, _ = newrun.form_config({"train": "sms_spam", "name": "x"}, tmp_path)
    assert config.data.train == "sms_spam"


@pytest.mark.parametrize(
    ("name", "ok"), [("a.csv", True), ("b.JSONL", True), ("c.conll", True), ("d.xlsx", False), ("e.json", False), ("noext", False)]
)
def test_upload_types(name, ok):
    if ok:
        assert newrun.check_upload_name(name)
    else:
        with pytest.raises(newrun.UploadError) as err:
            newrun.check_upload_name(name)
        assert err.value.status == 415 and ".csv" in str(err.value)


def test_uploaded_names_are_made_safe():
    assert newrun.safe_filename("../../etc/pass wd.csv") == "pass-wd.csv"
    assert newrun.safe_filename("C:\\Users\\me\\data.csv") == "data.csv"
    assert newrun.safe_filename("..") == "data"
