"""Direct preference optimisation of a causal LM (TRL ``DPOTrainer``); the pieces live in :mod:`tunesmith.preference.dpo`."""

from __future__ import annotations

from tunesmith.preference import dpo
from tunesmith.preference.common import TASK_DEFAULTS
from tunesmith.tasks.base import Task

TASK = Task(
    name="dpo",
    summary="direct preference optimisation of a causal LM on prompt/chosen/rejected pairs (TRL); metrics: reward accuracy and margin",
    # as TRL logs each eval: mean over eval batches
    metrics={"loss": False, "rewards/accuracies": True, "rewards/margins": True},
    prepare=dpo.prepare,
    build_model=dpo.build_model,
    encode=dpo.encode,
    make_loss=dpo.make_loss,
    make_compute_metrics=dpo.make_compute_metrics,
    evaluate=dpo.evaluate,
    load_predictor=dpo.DpoPredictor,
    peft_task_type="CAUSAL_LM",
    make_trainer=dpo.make_trainer,
    config_defaults=TASK_DEFAULTS,
)
