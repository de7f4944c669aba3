"""Optuna search on the tiny BERT: trials are runs, the study resumes, pruning stops a trial, bad spaces exit 2."""

from __future__ import annotations

import io
import json
from pathlib import Path

import optuna
import pytest
import yaml
from rich.console import Console

import tunesmith
from conftest import make_texts, write_csv
from tunesmith.cli import main
from tunesmith.config import build_config, load_config
from tunesmith.errors import UserError
from tunesmith.evaluate.search import load_space, search

EXAMPLE_SPACE = Path(__file__).parents[2] / "examples" / "search" / "sms_spam_space.yaml"


@pytest.fixture
def fast(tiny_args) -> dict:
    return {**tiny_args, "epochs": 1, "max_steps": 2, "baseline": False, "overfit_monitor": False}


@pytest.fixture
def space_file(tmp_path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text("lr: {low: 1.0e-4, high: 1.0e-2, log: true}\nbatch_size: {choices: [4, 8]}\n", encoding="utf-8")
    return path


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_load_space_types_and_problems():
    config = build_config()
    space = load_space(
        {"lr": {"low": 1e-5, "high": 1e-3, "log": True}, "epochs": {"low": 1, "high": 3}, "dropout": {"choices": [0.0, 0.1]}}, config
    )
    assert space["lr"] == {"type": "float", "low": 1e-5, "high": 1e-3, "log": True, "step": None}
    assert space["epochs"]["type"] == "int" and space["dropout"] == {"type": "categorical", "choices": [0.0, 0.1]}
    with pytest.raises(
        UserError,
        match=r"3 problems:(.|\n)*`learning_rate` is not a searchable(.|\n)*valid keys: .*lr(.|\n)*`epochs`: low must be below high",
    ):
        load_space({"learning_rate": {"low": 1, "high": 2}, "epochs": {"low": 3, "high": 1}, "out": {"choices": ["a"]}}, config)
    with pytest.raises(UserError, match=r"`lr` = 2.0 gives a config that has 1 invalid setting"):
        load_space({"lr": {"low": 1e-5, "high": 2.0}}, config)


def test_example_space_is_valid():
    config = load_config(EXAMPLE_SPACE.parents[1] / "sms_spam.yaml")
    space = load_space(EXAMPLE_SPACE, config)
    assert {"lr", "batch_size"} <= set(space)


def test_search_trains_trials_writes_best_config_and_resumes(tmp_path, fast, space_file, capsys):
    data = write_csv(tmp_path / "d.csv", make_texts(60))
    out = tmp_path / "search"
    result = search({"data": {"train": str(data)}}, space_file, 3, out=out, console=Console(file=io.StringIO()), **fast)

    assert len(result.trials) == 3 and (out / "study.db").is_file() and (out / "search.png").is_file()
    for k in range(3):
        assert (out / f"trial-{k}" / "metrics.json").is_file()
        assert tunesmith.load(out / f"trial-{k}").config.training.max_steps == 2
    saved = json.loads((out / "search.json").read_text())
    assert saved["n_trials"] == 3 and saved["metric"] == "macro_f1" and saved["direction"] == "maximize"
    assert all(set(t["params"]) == {"lr", "batch_size"} and t["intermediate"] for t in saved["trials"])
    complete = [t for t in saved["trials"] if t["state"] == "complete"]
    assert saved["best"]["value"] == max(t["value"] for t in complete)

    best = load_config(out / "best_config.yaml")  # a ready `tunesmith train --config` file
    assert best.training.lr == pytest.approx(saved["best"]["params"]["lr"]) and best.out is None
    assert best.training.batch_size == saved["best"]["params"]["batch_size"] and best.data.train == str(data)

    # the CLI with the same --out continues the study
    flags = ["--model", fast["model"], "--max-steps", "2", "--max-length", "32", "--precision", "fp32", "--threads", "1", "--no-doctor"]
    rc = main(["search", "--train", str(data), "--space", str(space_file), "--trials", "1", "--out", str(out), "--no-baseline", *flags])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "best: trial" in printed and "best_config.yaml" in printed
    assert json.loads((out / "search.json").read_text())["n_trials"] == 4 and (out / "trial-3" / "metrics.json").is_file()


def test_pruned_trial_stops_and_is_recorded(tmp_path, fast):
    data = write_csv(tmp_path / "d.csv", make_texts(60))
    out = tmp_path / "search"
    space = {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}
    # 48 training texts, batch 8: 6 steps an epoch, an evaluation after each; the first one prunes
    result = search(
        {"data": {"train": str(data)}},
        space,
        1,
        out=out,
        pruner=AlwaysPrune(),
        console=Console(file=io.StringIO()),
        **{**fast, "max_steps": None, "epochs": 2},
    )
    [trial] = result.trials
    assert trial["state"] == "pruned" and list(trial["intermediate"]) == ["1"]
    metrics = json.loads((out / "trial-0" / "metrics.json").read_text())
    assert metrics["training"]["steps"] == 6, "training stopped at the first evaluation, not after 12 steps"
    assert result.best is None and not (out / "best_config.yaml").exists()


def test_cli_unknown_key_exits_2_and_writes_nothing(tmp_path, capsys):
    space = tmp_path / "bad.yaml"
    space.write_text(yaml.safe_dump({"learning_rate": {"low": 1e-5, "high": 1e-3}}), encoding="utf-8")
    out = tmp_path / "search"
    rc = main(["search", "--space", str(space), "--trials", "1", "--out", str(out)])
    assert rc == 2
    message = capsys.readouterr().err
    assert "`learning_rate` is not a searchable config key" in message and "lr" in message and "weight_decay" in message
    assert not out.exists()
