"""Data-parallel training: two real gloo processes on CPU, the launch checks, and the shipped Accelerate configs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from unittest import mock

import pytest

import tunesmith
from conftest import make_texts, write_csv
from tunesmith.config import TrainingConfig
from tunesmith.errors import UserError
from tunesmith.training import distributed
from tunesmith.training.rundir import CHECKPOINT_MANIFEST, checkpoint_problem

ACCELERATE_CONFIGS = sorted((Path(__file__).parents[2] / "examples" / "accelerate").glob("*.yaml"))


def test_two_gloo_processes_train_once_and_write_once(tmp_path, tiny_args, capfd, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # the ranks' consoles: one line per message
    data = write_csv(tmp_path / "spam.csv", make_texts(120))
    run = tunesmith.train(
        {"data": {"train": str(data)}},
        **{**tiny_args, "epochs": 1, "report": False, "baseline": False, "early_stopping": None, "eval_steps": 3},
        num_processes=2,
        lr_scaling="linear",
        out=str(tmp_path / "run"),
    )
    m = run.metrics
    assert m["distributed"] == {
        "processes": 2,
        "backend": "gloo",
        "per_process_batch_size": 8,
        "grad_accum": 1,
        "effective_batch_size": 16,
        "lr_scaling": "linear",
        "lr": pytest.approx(2e-3),
        "head_lr": None,
        "lr_given": 1e-3,
    }
    assert m["training"]["steps"] == 6, "96 examples in global batches of 16"
    assert m["training"]["examples_seen"] == 96
    assert m["reproducibility"]["world_size"] == 2
    # each rank saves its own RNG state; the manifest is committed after both did
    ckpt = run.dir / "checkpoints" / "checkpoint-6"
    manifest = json.loads((ckpt / CHECKPOINT_MANIFEST).read_text())["files"]
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(manifest) and checkpoint_problem(ckpt) is None
    # logged once: one history line per step and per evaluation, one progress line per evaluation
    history = [json.loads(line) for line in (run.dir / "history.jsonl").read_text().splitlines()]
    loss_steps = [r["step"] for r in history if "loss" in r]
    assert loss_steps == sorted(set(loss_steps)) and [r["step"] for r in history if "eval_loss" in r] == [3, 6]
    err = capfd.readouterr().err
    assert err.count("eval at epoch 0.50") == 1 and err.count("effective batch 16 = 8 per process x 2 x 1 accumulation") == 1
    assert (run.dir / "config.yaml").read_text().count("num_processes: 2") == 1
    assert run.predict(["free prize now"])[0]["label"] in ("ham", "spam")


def test_bad_input_is_reported_before_any_process_starts(tmp_path, tiny_args):
    with mock.patch("torch.multiprocessing.start_processes") as start, pytest.raises(UserError, match="missing.csv"):
        tunesmith.train({"data": {"train": str(tmp_path / "missing.csv")}}, **tiny_args, num_processes=2, out=str(tmp_path / "r"))
    start.assert_not_called()
    with pytest.raises(UserError, match="callbacks"):
        tunesmith.train({"data": {"train": "x.csv"}}, **tiny_args, num_processes=2, callbacks=[object()])


def test_under_a_launcher_num_processes_must_match(monkeypatch, tiny_args):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert not distributed.needs_launch(2) and distributed.is_launched()
    with pytest.raises(UserError, match="launcher started 2 processes"):
        tunesmith.train(**tiny_args, num_processes=3)
    monkeypatch.setenv("RANK", "1")
    assert not distributed.is_main_process()


def test_plan_scales_the_learning_rate_and_logs_the_effective_batch():
    t = TrainingConfig(lr=1e-4, head_lr=1e-3, batch_size=8, grad_accum=2, lr_scaling="sqrt")
    p = distributed.plan(t, 4)
    assert p["effective_batch_size"] == 64 and p["lr"] == pytest.approx(2e-4) and p["head_lr"] == pytest.approx(2e-3)
    assert distributed.plan(t.model_copy(update={"lr_scaling": "none"}), 4)["lr"] == 1e-4
    assert distributed.scaled_lr(1e-4, 4, "linear") == pytest.approx(4e-4)
    assert "effective batch 64 = 8 per process x 4 x 2 accumulation; lr 0.0002 (sqrt scaling of 0.0001)" in distributed.describe(p)
    assert distributed.describe(distributed.plan(t, 1)) == ""
    assert distributed.threads_per_process(2, None) == max(1, (os.cpu_count() or 1) // 2)
    assert distributed.threads_per_process(2, 3) == 3


def _launch_environment(config_file: Path) -> tuple[object, dict[str, str]]:
    """What `accelerate launch --config_file FILE -m tunesmith train` would do before starting processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config_file), "-m", "tunesmith", "train"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:  # as accelerate's launch_command does before its DeepSpeed launcher
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        return args, prepare_deepspeed_cmd_env(args)[1]
    return args, prepare_multi_gpu_env(args)


def test_accelerate_examples_exist_for_every_backend():
    assert {p.stem for p in ACCELERATE_CONFIGS} == {"ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"}
    readme = (ACCELERATE_CONFIGS[0].parent / "README.md").read_text()
    assert "--machine_rank" in readme and "--main_process_ip" in readme, "the README explains multi-node launch"


@pytest.mark.parametrize("config_file", ACCELERATE_CONFIGS, ids=lambda p: p.stem)
def test_accelerate_config_validates(config_file):
    """Accelerate's own config class parses it, and the plugin the Accelerator would build accepts its values."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin

    config = load_config_from_file(str(config_file))  # unknown keys and bad enum values raise here
    assert config.mixed_precision == "no", "tunesmith's --precision decides, not accelerate's"
    args, env = _launch_environment(config_file)
    with mock.patch.dict(os.environ, env):
        if config.distributed_type == DistributedType.MULTI_GPU:
            assert args.multi_gpu and not args.use_fsdp and not args.use_deepspeed
        elif config.distributed_type == DistributedType.FSDP:
            plugin = FullyShardedDataParallelPlugin()
            assert plugin.fsdp_version == 2 and plugin.transformer_cls_names_to_wrap == ["BertLayer"]
            assert distributed.shards_parameters(), "the Trainer builds the optimizer after sharding"
        elif config.distributed_type == DistributedType.DEEPSPEED:
            plugin = DeepSpeedPlugin()  # assembles the DeepSpeed config; DeepSpeed itself is not needed for that
            stage = int(config_file.stem[-1])
            zero = plugin.deepspeed_config["zero_optimization"]
            assert plugin.zero_stage == stage and zero["stage"] == stage
            assert zero["offload_optimizer"]["device"] in ("none", "cpu", "nvme")
            assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto", "tunesmith's --grad-accum decides"
            assert distributed.shards_parameters()
        else:
            pytest.fail(f"{config_file.name}: unexpected distributed_type {config.distributed_type}")
