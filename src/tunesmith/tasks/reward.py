"""Pairwise reward modelling on preference pairs (TRL ``RewardTrainer``); the pieces live in :mod:`tunesmith.preference.reward`."""

from __future__ import annotations

from tunesmith.preference import reward
from tunesmith.preference.common import TASK_DEFAULTS
from tunesmith.tasks.base import Task

TASK = Task(
    name="reward",
    summary="pairwise reward model on prompt/chosen/rejected pairs (TRL); metric: pairwise accuracy",
    # as TRL logs each eval: mean over eval batches of the batch's accuracy and margin
    metrics={"loss": False, "accuracy": True, "margin": True},
    prepare=reward.prepare,
    build_model=reward.build_model,
    encode=reward.encode,
    make_loss=reward.make_loss,
    make_compute_metrics=reward.make_compute_metrics,
    evaluate=reward.evaluate,
    load_predictor=reward.RewardPredictor,
    peft_task_type="SEQ_CLS",
    make_trainer=reward.make_trainer,
    config_defaults=TASK_DEFAULTS,
)
