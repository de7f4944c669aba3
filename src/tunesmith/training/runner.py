"""One training run, end to end: config -> data -> model -> Trainer -> run directory.

The transformers ``Trainer`` is the engine, used by composition: tunesmith builds its arguments,
optimizer, collator, loss and callbacks, and never subclasses it.
"""

from __future__ import annotations

import math
import re
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from tunesmith.config import RunConfig, build_config, dump_config, load_config
from tunesmith.errors import UserError
from tunesmith.tasks import task_for
from tunesmith.training import hardware, methods
from tunesmith.training.rundir import (
    CHECKPOINTS,
    MODEL,
    atomic_write_json,
    atomic_write_text,
    last_checkpoint,
    replace_dir,
    write_jsonl,
)


def quiet_transformers() -> None:
    """tunesmith shows its own progress; transformers' per-file bars and notices would bury it."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def default_run_dir(config: RunConfig) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(config.data.train).stem) or "data"
    return Path("runs") / f"{config.task}-{stem}-{datetime.now():%Y%m%d-%H%M%S}"


def _resolve_run_dir(config: RunConfig) -> tuple[RunConfig, Path]:
    """Pick the run directory; on --resume, continue with the config the run was started with."""
    run_dir = Path(config.out) if config.out else default_run_dir(config)
    if config.resume:
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise UserError(f"cannot resume: {run_dir} holds no run (no config.yaml); pass --out with the directory of the run to continue")
        resumed = load_config(saved)
        return resumed.model_copy(update={"resume": True, "out": str(run_dir)}), run_dir
    if (run_dir / "config.yaml").exists():
        raise UserError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out")
    return config.model_copy(update={"out": str(run_dir)}), run_dir


def _training_arguments(config: RunConfig, run_dir: Path, precision: str, steps_per_epoch: int, greater_is_better: bool):
    from transformers import TrainingArguments

    t = config.training
    total_steps = t.max_steps or math.ceil(steps_per_epoch * t.epochs)
    eval_every = max(1, min(steps_per_epoch, total_steps))
    return TrainingArguments(
        output_dir=str(run_dir / CHECKPOINTS),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a ratio of the total steps
        lr_scheduler_type="constant_with_warmup" if t.scheduler == "constant" else t.scheduler,
        eval_strategy="steps",
        eval_steps=eval_every,
        save_strategy="steps",
        save_steps=eval_every,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=config.metric,
        greater_is_better=greater_is_better,
        logging_strategy="steps",
        logging_steps=max(1, min(50, total_steps // 30)),
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        seed=t.seed,
        data_seed=t.seed,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def train(
    config: RunConfig | dict[str, Any] | None = None, *, console: Console | None = None, callbacks: list | None = None, **overrides: Any
):
    """Fine-tune a model as ``config`` says and write the run directory.

    Args:
        config: a :class:`RunConfig`, a nested dict, or None for the embedded defaults
            (``minilm`` on ``sms_spam``).
        console: where progress goes (default: stderr).
        callbacks: extra ``TrainerCallback`` objects (``tunesmith search`` reports each eval to Optuna).
        **overrides: flat config keys, e.g. ``train("cfg.yaml")`` is not accepted but
            ``train(epochs=1, lr=3e-5)`` is.

    Returns:
        The finished :class:`tunesmith.run.Run`, ready to ``predict``.

    Raises:
        UserError: on invalid config or data, before anything is written.
    """
    from tunesmith.run import Run

    if isinstance(config, RunConfig):
        config = build_config(config.model_dump(), overrides) if overrides else config
    else:
        config = build_config(config or {}, overrides)
    console = console or Console(stderr=True)
    config, run_dir = _resolve_run_dir(config)
    t = config.training
    # data first: most user mistakes are in the data, and they should be reported in a second,
    # before the heavy imports and the model load
    task = task_for(config)
    data = task.prepare(config)

    from transformers import EarlyStoppingCallback, PrinterCallback, Trainer, set_seed

    from tunesmith.training import callbacks as cb

    quiet_transformers()
    threads, busy = hardware.configure_threads(t.threads)
    if busy:
        console.print(f"[yellow]warning:[/] {busy}")
    precision = hardware.resolve_precision(t.precision)
    set_seed(t.seed)
    tokenizer, model = task.build_model(config, data)
    encoded = task.encode(tokenizer, data, config)
    base_prefix = model.base_model_prefix
    model = methods.apply_method(model, config.model, task.peft_task_type)

    # Everything the user could get wrong is checked by now: only now is the run directory created.
    run_dir.mkdir(parents=True, exist_ok=True)
    if not config.resume:
        atomic_write_text(run_dir / "config.yaml", dump_config(config))
    data_report = {**data.report, "truncated": encoded.truncated, "max_length": config.data.max_length}
    atomic_write_json(run_dir / "data.json", data_report)
    _print_data_summary(console, data_report)
    if t.doctor and config.task == "classify" and not config.data.multi_label and not config.resume:
        _run_doctor(config, run_dir, console)

    steps_per_epoch = math.ceil(len(encoded.train) / (t.batch_size * t.grad_accum))
    args = _training_arguments(config, run_dir, precision, steps_per_epoch, task.metrics[config.metric])
    timer = cb.StepTimer()
    extra_callbacks = list(callbacks or [])
    callbacks = [cb.HistoryWriter(run_dir / "history.jsonl"), cb.RichProgress(console, config.metric), timer, *extra_callbacks]
    if t.overfit_monitor:
        from tunesmith.training.monitor import OverfitMonitor

        callbacks.append(OverfitMonitor(console, run_dir, config))
    if t.early_stopping:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=t.early_stopping))
    trainer = Trainer(
        model=model,
        args=args,
        data_collator=task.make_collator(tokenizer),
        train_dataset=encoded.train,
        eval_dataset=encoded.eval,
        processing_class=tokenizer,
        compute_loss_func=task.make_loss(config, data),
        compute_metrics=task.make_compute_metrics(data),
        callbacks=callbacks,
        optimizers=(methods.build_optimizer(model, t, base_prefix, task.default_head_lr), None),
        preprocess_logits_for_metrics=task.make_preprocess_logits(model) if task.make_preprocess_logits else None,
    )
    trainer.remove_callback(PrinterCallback)

    resume_from = None
    if config.resume:
        resume_from, skipped = last_checkpoint(run_dir)
        for path in skipped:
            console.print(f"[yellow]skipping incomplete checkpoint[/] {path}")
        if resume_from is None:
            console.print("no complete checkpoint yet: training from the start")
        else:
            console.print(f"resuming from {resume_from}")
    params = methods.count_parameters(model)
    console.print(
        f"training {config.model.model} ({config.model.method}, {params['trainable']:,} of {params['total']:,} parameters trainable) "
        f"on {len(encoded.train):,} examples, precision {precision}, {threads} thread(s)"
    )
    started = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except KeyboardInterrupt:
        console.print(f"\n[yellow]interrupted.[/] Resume with: tunesmith train --out {run_dir} --resume")
        raise
    wall = time.perf_counter() - started

    state = trainer.state
    full_epochs, rest = divmod(state.global_step, steps_per_epoch)
    trained_examples = full_epochs * len(encoded.train) + rest * t.batch_size * t.grad_accum
    final_model = methods.unwrap_for_saving(trainer.model, config.model)
    _save_model(final_model, tokenizer, run_dir / MODEL, lambda tmp: task.save_extras(tmp, data) if task.save_extras else None)

    eval_started = time.perf_counter()
    metrics, predictions = task.evaluate(final_model, tokenizer, data, config, precision)
    eval_seconds = time.perf_counter() - eval_started
    write_jsonl(run_dir / "eval_predictions.jsonl", predictions)
    summary = {
        "task": config.task,
        "eval": metrics,
        "training": {
            "steps": state.global_step,
            "epochs": round(state.epoch or 0.0, 4),
            "examples_seen": trained_examples,
            "step_seconds": round(timer.seconds, 3),
            "wall_seconds": round(wall, 3),
            "train_samples_per_second": round(trained_examples / timer.seconds, 3) if timer.seconds else None,
            "eval_samples_per_second": round(len(data.eval) / eval_seconds, 3) if eval_seconds else None,
            "best_checkpoint": state.best_model_checkpoint,
            "best_metric": state.best_metric,
            "stopped_early": state.global_step < (t.max_steps or math.ceil(t.epochs * steps_per_epoch)),
            "precision": precision,
            "threads": threads,
            "parameters": params,
        },
        "versions": hardware.library_versions(),
        "hardware": hardware.hardware_info(),
    }
    atomic_write_json(run_dir / "metrics.json", summary)
    if t.report:
        from tunesmith.report import write_report

        console.print(f"report: {write_report(run_dir)}")
    return Run.load(run_dir)


def _run_doctor(config: RunConfig, run_dir: Path, console: Console) -> None:
    """Diagnose the training data and keep the findings with the run (advice: it never stops training)."""
    from tunesmith.doctor import diagnose

    d = config.data
    try:
        report = diagnose(
            d.train,
            d.eval,
            text_col=d.text_col,
            label_col=d.label_col,
            model=config.model.model,
            max_length=d.max_length,
            seed=config.training.seed,
        )
    except UserError as exc:  # the doctor reads the data more leniently; a problem it still has is worth a line
        console.print(f"[yellow]doctor skipped:[/] {exc}")
        return
    atomic_write_text(run_dir / "doctor.json", report.to_json())
    counts = report.counts()
    warnings = [f for f in report.findings if f.severity in ("error", "warning")]
    console.print(
        f"doctor: {counts.get('error', 0)} errors, {counts.get('warning', 0)} warnings, {counts.get('info', 0)} notes in {run_dir / 'doctor.json'}"
        + "".join(f"\n  {f.severity}: {f.message}" for f in warnings[:3])
    )


def _save_model(model, tokenizer, final: Path, write_extras) -> None:
    """Write the model, tokenizer and task extras to a temporary directory, then move it into place."""
    tmp = final.with_name(f".{final.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_extras(tmp)
    replace_dir(tmp, final)


def _print_data_summary(console: Console, report: dict[str, Any]) -> None:
    dup = report.get("duplicates_removed", 0)
    parts = [f"{report.get('train_size', '?'):,} train / {report.get('eval_size', '?'):,} eval ({report.get('split', '')})"]
    if dup:
        conflicts = report.get("conflicting_duplicates", 0)
        parts.append(f"{dup} duplicate texts removed" + (f" ({conflicts} with conflicting labels)" if conflicts else ""))
    trunc = report.get("truncated", {})
    if any(trunc.values()):
        parts.append(f"truncated to {report['max_length']} tokens: {trunc.get('train', 0)} train, {trunc.get('eval', 0)} eval texts")
    console.print("data: " + "; ".join(parts))
