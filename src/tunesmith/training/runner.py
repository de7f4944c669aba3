"""One training run, end to end: config -> data -> model -> Trainer -> run directory.

The transformers ``Trainer`` is the engine, used by composition: tunesmith builds its arguments,
optimizer, collator, loss and callbacks, and never subclasses it.
"""

from __future__ import annotations

import math
import re
import shlex
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
from tunesmith.training import distributed, dropout, hardware, interrupt, methods, pooled, provenance, resume
from tunesmith.training.rundir import (
    CHECKPOINTS,
    MODEL,
    atomic_write_json,
    atomic_write_text,
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
    if (run_dir / "config.yaml").exists() and distributed.is_main_process():
        raise UserError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out")
    return config.model_copy(update={"out": str(run_dir)}), run_dir


def _training_arguments(config: RunConfig, run_dir: Path, precision: str, steps_per_epoch: int, greater_is_better: bool):
    from transformers import TrainingArguments

    t = config.training
    total_steps = t.max_steps or math.ceil(steps_per_epoch * t.epochs)
    eval_every = t.eval_steps or max(1, min(steps_per_epoch, total_steps))
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
        # the best and the two newest: while the newest is being written, the one before it is still committed
        save_total_limit=3,
        load_best_model_at_end=True,
        metric_for_best_model=config.metric,
        greater_is_better=greater_is_better,
        logging_strategy="steps",
        logging_steps=max(1, min(50, total_steps // 30)),
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        activation_checkpointing=t.activation_checkpointing,
        use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        seed=t.seed,
        data_seed=t.seed,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        # task losses are per-batch means: scaling them by the number of processes would multiply the gradient
        average_tokens_across_devices=False,
        # every parameter takes part in each forward pass, except the heads of multitask batches from one head
        ddp_find_unused_parameters=config.task == "multitask",
    )


def train(
    config: RunConfig | dict[str, Any] | None = None,
    *,
    console: Console | None = None,
    callbacks: list | None = None,
    task=None,
    resume_command: str | None = None,
    **overrides: Any,
):
    """Fine-tune a model as ``config`` says and write the run directory.

    Args:
        config: a :class:`RunConfig`, a nested dict, or None for the embedded defaults
            (``minilm`` on ``sms_spam``).
        console: where progress goes (default: stderr).
        callbacks: extra ``TrainerCallback`` objects (``tunesmith search`` reports each eval to Optuna).
        task: a :class:`~tunesmith.tasks.base.Task` to use instead of the config's (``tunesmith distill``);
            it must pickle (module-level functions, ``functools.partial``) when ``num_processes`` > 1.
        resume_command: the command printed when training is interrupted (default: ``tunesmith train --out RUN --resume``).
        **overrides: flat config keys, e.g. ``train("cfg.yaml")`` is not accepted but
            ``train(epochs=1, lr=3e-5)`` is.

    Returns:
        The finished :class:`tunesmith.run.Run`, ready to ``predict`` (None on the other ranks of a data-parallel run).

    Raises:
        UserError: on invalid config or data, before anything is written.
    """
    from tunesmith.run import Run

    if isinstance(config, RunConfig):
        config = build_config(config.model_dump(), overrides) if overrides else config
    else:
        config = build_config(config or {}, overrides)
    console = console or Console(stderr=True)
    if distributed.needs_launch(config.training.num_processes):
        return _train_in_processes(config, console, callbacks, task, resume_command)
    distributed.check_world(config.training.num_processes)
    main, processes = distributed.is_main_process(), distributed.world_size()
    if not main:
        console = Console(quiet=True)  # one process speaks
    config, run_dir = _resolve_run_dir(config)
    if config.resume and task is None and (run_dir / "distill.json").is_file():
        raise UserError(f"{run_dir} is a distillation run; continue it with: tunesmith distill --out {run_dir} --resume")
    t = config.training
    # data first: most user mistakes are in the data, and they should be reported in a second,
    # before the heavy imports and the model load
    task = task or task_for(config)
    data = task.prepare(config)
    files = provenance.data_files(config)
    if config.resume:
        provenance.check_unchanged(_json_or_empty(run_dir / "data.json").get("files"), files, run_dir)

    from transformers import EarlyStoppingCallback, PrinterCallback, Trainer, set_seed

    from tunesmith.training import callbacks as cb

    quiet_transformers()
    threads, busy = hardware.configure_threads(t.threads or (distributed.threads_per_process(processes, None) if processes > 1 else None))
    if busy:
        console.print(f"[yellow]warning:[/] {busy}")
    precision = hardware.resolve_precision(t.precision)
    set_seed(t.seed)
    tokenizer, model = task.build_model(config, data)
    encoded = task.encode(tokenizer, data, config)
    base_prefix = model.base_model_prefix
    model = methods.apply_method(model, config.model, task.peft_task_type, task.auto_freeze_layers)
    first_token_only = pooled.applies(model, config.model.pooled_last_layer)

    # Everything the user could get wrong is checked by now: only now is the run directory created.
    run_dir.mkdir(parents=True, exist_ok=True)
    data_report = {**data.report, "truncated": encoded.truncated, "max_length": config.data.max_length, "files": files}
    if main:  # only one process writes the run directory
        if not config.resume:
            atomic_write_text(run_dir / "config.yaml", dump_config(config))
        atomic_write_json(run_dir / "data.json", data_report)
        _print_data_summary(console, data_report)
        if t.doctor and config.task == "classify" and not config.data.multi_label and not config.resume:
            _run_doctor(config, run_dir, console)

    parallel = distributed.plan(t, processes)
    if parallel["lr"] != t.lr:  # --lr-scaling with several processes; config.yaml keeps the lr as given
        t = t.model_copy(update={"lr": parallel["lr"], "head_lr": parallel["head_lr"]})
        config = config.model_copy(update={"training": t})
    if processes > 1:
        console.print(distributed.describe(parallel))
    steps_per_epoch = math.ceil(len(encoded.train) / (t.batch_size * t.grad_accum * processes))
    args = _training_arguments(config, run_dir, precision, steps_per_epoch, task.metrics[config.metric])
    timer = cb.StepTimer()
    extra_callbacks = list(callbacks or [])
    stop = interrupt.GracefulStop(lambda name: console.print(f"\n[yellow]{name}:[/] stopping after this step and saving a checkpoint"))
    callbacks = [cb.HistoryWriter(run_dir / "history.jsonl"), cb.RichProgress(console, config.metric), timer, *extra_callbacks]
    callbacks += [resume.CommitCheckpoint(), resume.SeedDataOrder(t.seed), stop]
    if t.overfit_monitor:
        from tunesmith.training.monitor import OverfitMonitor

        callbacks.append(OverfitMonitor(console, run_dir, config))
    if t.early_stopping:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=t.early_stopping))
    # under FSDP/DeepSpeed the optimizer must be built after sharding, by the Trainer
    optimizer = None if distributed.shards_parameters() else methods.build_optimizer(model, t, base_prefix, task.default_head_lr)
    trainer_kwargs = dict(
        model=model,
        args=args,
        data_collator=task.make_collator(tokenizer),
        train_dataset=encoded.train,
        eval_dataset=encoded.eval,
        processing_class=tokenizer,
        compute_loss_func=task.make_loss(config, data),
        compute_metrics=task.make_compute_metrics(data),
        callbacks=callbacks,
        optimizers=(optimizer, None),
        preprocess_logits_for_metrics=task.make_preprocess_logits(model) if task.make_preprocess_logits else None,
    )
    # a task whose trainer is not transformers' own (TRL's reward and DPO trainers) builds it from the same pieces
    trainer = task.make_trainer(trainer_kwargs, config, data) if task.make_trainer else Trainer(**trainer_kwargs)
    trainer.remove_callback(PrinterCallback)
    if trainer_kwargs["compute_loss_func"] is not None and not task.make_trainer:
        trainer.loss_is_scaled_for_ga = False  # task losses are per-batch means: the Trainer must divide by grad_accum

    resume_from = resume.prepare_resume(run_dir, console, main_process=main) if config.resume else None
    params = methods.count_parameters(model)
    frozen = methods.describe_frozen(model) if config.model.method == "full" else ""
    console.print(
        f"training {config.model.model} ({config.model.method}, {params['trainable']:,} of {params['total']:,} parameters trainable"
        f"{': ' + frozen if frozen else ''}) on {len(encoded.train):,} examples, precision {precision}, {threads} thread(s)"
    )
    resume_command = resume_command or f"tunesmith train --out {shlex.quote(str(run_dir))} --resume"
    started = time.perf_counter()
    try:
        with stop.handling_signals(), pooled.pooled_last_layer(model, first_token_only), dropout.fast_dropout(model, t.fast_dropout):
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except KeyboardInterrupt:
        console.print(f"\n[yellow]aborted without a checkpoint.[/] Resume from the last one with: {resume_command}", highlight=False)
        raise
    wall = time.perf_counter() - started
    if stop.stopped_at is not None:
        saved = run_dir / CHECKPOINTS / f"checkpoint-{stop.stopped_at}"
        message = f"interrupted at step {stop.stopped_at} of {trainer.state.max_steps}; checkpoint saved in {saved}"
        console.print(f"[yellow]{message}[/]\nresume with: {resume_command}", highlight=False)
        raise interrupt.TrainingInterrupted(f"{message}; resume with: {resume_command}", str(saved))
    # under FSDP/DeepSpeed the weights are spread over the processes: every rank takes part in gathering
    # them for the save and in the final evaluation's forward passes; rank 0 alone writes
    sharded = distributed.shards_parameters()
    if not main and not sharded:
        return None

    state = trainer.state
    full_epochs, rest = divmod(state.global_step, steps_per_epoch)
    trained_examples = full_epochs * len(encoded.train) + rest * t.batch_size * t.grad_accum * processes
    final_model = methods.unwrap_for_saving(trainer.model, config.model)
    full_state = trainer.accelerator.get_state_dict(trainer.model_wrapped) if sharded else None
    if main:
        _save_model(
            final_model, tokenizer, run_dir / MODEL, lambda tmp: task.save_extras(tmp, data) if task.save_extras else None, full_state
        )

    eval_started = time.perf_counter()
    with pooled.pooled_last_layer(final_model, first_token_only):
        metrics, predictions = task.evaluate(final_model, tokenizer, data, config, precision)
    eval_seconds = time.perf_counter() - eval_started
    if not main:
        return None
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
        "distributed": parallel,
        "reproducibility": provenance.record(config, files, world_size=processes, effective_batch_size=parallel["effective_batch_size"]),
    }
    atomic_write_json(run_dir / "metrics.json", summary)
    if t.report:
        from tunesmith.report import write_report

        # the report loads the saved model again to explain errors: the training copy, its gradients and
        # optimizer state go first, and the heap they leave goes back to the OS (peak RSS on MiniLM / SMS
        # spam, 1 epoch: 2.78 GB with them kept, 2.39 GB without; benchmarks/README.md)
        del trainer, trainer_kwargs, final_model, model, optimizer
        hardware.release_memory()
        console.print(f"report: {write_report(run_dir)}")
    return Run.load(run_dir)


def _train_in_processes(config: RunConfig, console: Console, callbacks, task, resume_command):
    """``num_processes`` > 1: check here what every rank would check, then run :func:`train` as that many ranks."""
    from tunesmith.run import Run

    if callbacks:
        raise UserError("num_processes > 1 cannot carry Python callbacks into the processes; set num_processes to 1 for this run")
    config, run_dir = _resolve_run_dir(config)
    (task or task_for(config)).prepare(config)  # bad data is reported once, here, and nothing is started
    console.print(f"starting {config.training.num_processes} data-parallel processes")
    kwargs = {"config": config, "task": task, "resume_command": resume_command}
    distributed.launch(train, kwargs, config.training.num_processes, threads=config.training.threads)
    return Run.load(run_dir)


def _json_or_empty(path: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


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


def _save_model(model, tokenizer, final: Path, write_extras, state_dict=None) -> None:
    """Write the model, tokenizer and task extras to a temporary directory, then move it into place.

    ``state_dict``: the full weights gathered from the processes when they were sharded (FSDP/DeepSpeed).
    """
    tmp = final.with_name(f".{final.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, **({"state_dict": state_dict} if state_dict is not None else {}))
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
    packing = report.get("packing")
    if packing:  # sft/clm: the Trainer's "examples" are then packed sequences
        examples = packing.get("examples", packing.get("pieces"))
        parts.append(
            f"{examples:,} training examples packed into {packing['sequences']:,} sequences of {report['max_length']} tokens ({packing['fill']:.0%} full)"
        )
    console.print("data: " + "; ".join(parts))
