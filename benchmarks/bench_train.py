"""Training speed, accuracy and memory of tunesmith beside stock transformers, on the same data in one run.

Three arms, each in its own subprocess (so peak RSS is per arm and no arm warms another's caches):

- ``plain``: the transformers tutorial recipe (pad every text to 128 tokens, fp32, random sampler).
- ``trainer_best``: the tuned Trainer, stock transformers as an expert configures it (dynamic padding,
  length grouping, bf16 autocast, fused AdamW).
- ``tunesmith``: ``tunesmith.train`` with its defaults (``--set KEY=VALUE`` changes one, for ablations).

All arms train ``minilm`` on the same seeded, deduplicated, stratified split of one packaged dataset with
the same epochs, batch size, learning rate, training seed, max length and torch thread count. Throughput
is measured on optimizer-step time only (:class:`tunesmith.training.callbacks.StepTimer`), exactly as
tunesmith reports it. With several ``--seeds`` the tuned Trainer and tunesmith run once per seed (the
slow tutorial arm only for the first) and the verdict compares their means.

Usage::

    python benchmarks/bench_train.py --seeds 0,1,2                       # the issue's benchmark (about 20 min, 2 idle cores)
    python benchmarks/bench_train.py --dataset trec_questions --seeds 0,1,2 --arms trainer_best,tunesmith
    python benchmarks/bench_train.py --arms tunesmith --set freeze_layers=0     # one lever off
    python benchmarks/bench_train.py --limit 200 --epochs 1                     # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ARMS = ("plain", "trainer_best", "tunesmith")
MODEL = "minilm"
BATCH_SIZE = 16
LR = 5e-5
SEED = 42
MAX_LENGTH = 128
TARGET_RATIO_PLAIN = 6.0  # tunesmith vs the tutorial recipe, samples/s
TARGET_RATIO_TUNED = 1.5  # tunesmith vs the tuned Trainer, samples/s
TARGET_POINTS = 0.3  # accuracy and macro-F1 within this many points of the tuned Trainer (mean over seeds)
BUSY_LOAD = 0.5
RESULTS_DIR = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------------------------------
# Measurements shared by every arm


class TokenCounter:
    """Counts the token ids entering the model's word embedding during training-mode forward passes.

    Counted at the embedding, so it sees exactly what the arm computes on: padding included
    (``padded``) and excluded (``useful``), for stock Trainer arms and for tunesmith alike, without
    touching either. Evaluation passes run with ``model.eval()`` and are not counted.

    A global forward pre-hook finds the word embedding (the ``nn.Embedding`` with ``vocab_size``
    rows) on the first forward pass, moves the counting onto that one module and removes itself:
    a global hook would send every module call down torch's slower hooked path for the whole run.
    """

    def __init__(self, vocab_size: int, pad_token_id: int):
        import torch

        self.vocab_size = vocab_size
        self.pad_token_id = pad_token_id
        self.padded = 0
        self.useful = 0
        self.examples = 0
        self._global = torch.nn.modules.module.register_module_forward_pre_hook(self._find_embedding)

    def _find_embedding(self, module, args):
        import torch

        if isinstance(module, torch.nn.Embedding) and module.num_embeddings == self.vocab_size:
            self._global.remove()
            module.register_forward_pre_hook(self._count)
            self._count(module, args)  # the hook just added does not fire for the call under way

    def _count(self, module, args):
        if not module.training or not args:
            return
        ids = args[0]
        self.padded += ids.numel()
        self.useful += int((ids != self.pad_token_id).sum())
        self.examples += ids.shape[0] if ids.dim() > 1 else 1

    def as_dict(self) -> dict[str, int]:
        return {"padded": self.padded, "useful": self.useful, "examples": self.examples}


def matmul_peak_gflops(dtype_name: str, n: int = 2048, warmup: int = 3, min_seconds: float = 1.0, min_iters: int = 5) -> float:
    """Achieved GFLOP/s of an ``n x n`` matmul in ``dtype_name`` with the current torch thread count."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    for _ in range(warmup):
        torch.mm(a, b, out=out)
    iters = 0
    started = time.perf_counter()
    while True:
        torch.mm(a, b, out=out)
        iters += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds and iters >= min_iters:
            return 2 * n**3 * iters / elapsed / 1e9


def model_shape() -> dict[str, int]:
    """Parameter counts of the classifier every arm trains, and the token ids the counter needs."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from tunesmith.models import resolve_model

    model = AutoModelForSequenceClassification.from_pretrained(resolve_model(MODEL), num_labels=2)
    embedding = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters(recurse=False))
    total = sum(p.numel() for p in model.parameters())
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}


def one_minute_load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_split(limit: int | None, dataset: str = "sms_spam"):
    """The seeded, deduplicated, stratified split tunesmith makes by default; optionally cut for a smoke test."""
    from tunesmith.config import DataConfig
    from tunesmith.data import prepare_classification

    data = prepare_classification(DataConfig(train=dataset), seed=SEED)
    if limit:
        data.train = data.train.subset(range(min(limit, len(data.train))))
        data.eval = data.eval.subset(range(min(max(limit // 4, 1), len(data.eval))))
    return data


def examples_trained(global_step: int, n_train: int, epochs: float) -> int:
    """Examples behind ``global_step`` optimizer steps, counted as tunesmith's runner counts them."""
    steps_per_epoch = math.ceil(n_train / BATCH_SIZE)
    full_epochs, rest = divmod(global_step, steps_per_epoch)
    return full_epochs * n_train + rest * BATCH_SIZE


# --------------------------------------------------------------------------------------------------
# The arms (each runs in its own process)


def run_trainer_arm(data, *, best: bool, epochs: float, workdir: Path, seed: int) -> dict[str, Any]:
    """The stock transformers Trainer: the tutorial recipe, or (``best``) the expert's configuration."""
    import torch
    from datasets import Dataset, disable_progress_bars
    from rich.console import Console
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from tunesmith.models import resolve_model
    from tunesmith.tasks import classify
    from tunesmith.training import callbacks as cb

    ref = resolve_model(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(ref)
    label_id = {name: i for i, name in enumerate(data.labels)}

    def to_dataset(texts) -> Dataset:
        return Dataset.from_dict({"text": texts.texts, "label": [label_id[name] for name in texts.labels]})

    def tokenize(batch):
        if best:  # no padding here: the collator pads each batch to its own longest text
            return tokenizer(batch["text"], truncation=True, max_length=MAX_LENGTH)
        return tokenizer(batch["text"], padding="max_length", truncation=True, max_length=MAX_LENGTH)

    disable_progress_bars()  # datasets' per-map bars
    train_ds = to_dataset(data.train).map(tokenize, batched=True)
    eval_ds = to_dataset(data.eval).map(tokenize, batched=True)

    set_seed(seed)  # before the head is initialised, as tunesmith does
    model = AutoModelForSequenceClassification.from_pretrained(ref, **classify.model_kwargs(data.labels))
    counter = TokenCounter(model.config.vocab_size, tokenizer.pad_token_id)

    common = {
        "output_dir": str(workdir / "trainer"),
        "num_train_epochs": epochs,
        "per_device_train_batch_size": BATCH_SIZE,
        "learning_rate": LR,
        "seed": seed,
        "eval_strategy": "no",
        "save_strategy": "no",  # checkpoints would only add to wall time; tunesmith's are in its wall time
        "report_to": "none",
        "disable_tqdm": True,  # progress comes from the same rich callback tunesmith uses
        "use_cpu": not torch.cuda.is_available(),
    }
    if best:
        args = TrainingArguments(
            **common,
            per_device_eval_batch_size=64,
            train_sampling_strategy="group_by_length",
            bf16=True,
            optim="adamw_torch_fused",
        )
    else:
        args = TrainingArguments(**common)  # fp32, random sampler, the default optimizer

    timer = cb.StepTimer()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        # the tutorial passes no collator: every text is already padded to max_length
        data_collator=DataCollatorWithPadding(tokenizer) if best else None,
        processing_class=tokenizer if best else None,
        callbacks=[cb.RichProgress(Console(stderr=True), "accuracy"), timer],
    )
    trainer.remove_callback(PrinterCallback)

    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    tokens = counter.as_dict()

    eval_started = time.perf_counter()
    pred = trainer.predict(eval_ds)
    eval_seconds = time.perf_counter() - eval_started
    if len(pred.label_ids) != len(data.eval):
        raise RuntimeError(f"predict returned {len(pred.label_ids)} labels for {len(data.eval)} eval examples")
    # Scored against pred.label_ids: with length grouping predict() reorders the examples.
    scores = classify.make_compute_metrics(data)(pred)

    seen = examples_trained(trainer.state.global_step, len(data.train), epochs)
    return {
        "precision": "bf16" if best else "fp32",
        "optimizer": args.optim.value if hasattr(args.optim, "value") else str(args.optim),
        "steps": trainer.state.global_step,
        "examples_seen": seen,
        "step_seconds": round(timer.seconds, 3),
        "wall_seconds": round(wall, 3),
        "train_samples_per_second": round(seen / timer.seconds, 3) if timer.seconds else None,
        "eval_samples_per_second": round(len(data.eval) / eval_seconds, 3) if eval_seconds else None,
        "accuracy": float(scores["accuracy"]),
        "macro_f1": float(scores["macro_f1"]),
        "tokens": tokens,
    }


def write_split_files(data, folder: Path) -> tuple[str, str]:
    """The (cut) split as JSONL files, so tunesmith trains on exactly the examples the other arms do."""
    paths = []
    for name, texts in (("train", data.train), ("eval", data.eval)):
        path = folder / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for text, label in zip(texts.texts, texts.labels, strict=True):
                f.write(json.dumps({"text": text, "label": label}) + "\n")
        paths.append(str(path))
    return paths[0], paths[1]


def run_tunesmith_arm(data, *, epochs: float, threads: int, workdir: Path, seed: int, sets: dict[str, str]) -> dict[str, Any]:
    """``tunesmith.train`` with its defaults and ``sets`` (it evaluates every epoch; its throughput excludes that)."""
    from transformers import AutoConfig, AutoTokenizer

    import tunesmith
    from tunesmith.models import resolve_model

    ref = resolve_model(MODEL)
    counter = TokenCounter(AutoConfig.from_pretrained(ref).vocab_size, AutoTokenizer.from_pretrained(ref).pad_token_id)
    # The split is handed over as files: tunesmith would otherwise hold out its own split, seeded by
    # the training seed, and each seed would be scored on other texts than the other arms'.
    train_file, eval_file = write_split_files(data, workdir)
    config: dict[str, Any] = {"data": {"train": train_file, "eval": eval_file}}
    run = tunesmith.train(
        config,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        lr=LR,
        max_length=MAX_LENGTH,
        seed=seed,
        early_stopping=None,
        threads=threads,
        out=str(workdir / "run"),
        **sets,
    )
    metrics = run.metrics
    training = metrics["training"]
    report = json.loads((run.dir / "data.json").read_text(encoding="utf-8"))
    seen_by_tunesmith = (report["train_size"], report["eval_size"], report["class_counts_train"], report["class_counts_eval"])
    same_data = seen_by_tunesmith == (len(data.train), len(data.eval), _class_counts(data.train.labels), _class_counts(data.eval.labels))
    return {
        "precision": training["precision"],
        "optimizer": "AdamW (fused, tunesmith parameter groups)",
        "steps": training["steps"],
        "examples_seen": training["examples_seen"],
        "step_seconds": training["step_seconds"],
        "wall_seconds": training["wall_seconds"],
        "train_samples_per_second": training["train_samples_per_second"],
        "eval_samples_per_second": training["eval_samples_per_second"],
        "accuracy": float(metrics["eval"]["accuracy"]),
        "macro_f1": float(metrics["eval"]["macro_f1"]),
        "tokens": counter.as_dict(),
        "settings": sets,
        "same_data_as_other_arms": same_data,
        "tunesmith_threads": training["threads"],
    }


def _class_counts(labels: list[str]) -> dict[str, int]:
    return {label: labels.count(label) for label in sorted(set(labels))}


def run_arm(
    arm: str, *, epochs: float, threads: int, limit: int | None, json_out: Path, seed: int, dataset: str, sets: dict[str, str]
) -> None:
    """Run one arm in this process and write its result (with this process's peak RSS) to ``json_out``."""
    import torch

    from tunesmith.training.runner import quiet_transformers

    torch.set_num_threads(threads)
    quiet_transformers()
    load_before = one_minute_load()
    data = load_split(limit, dataset)
    with tempfile.TemporaryDirectory(prefix=f"bench-{arm}-") as tmp:
        workdir = Path(tmp)
        if arm == "tunesmith":
            result = run_tunesmith_arm(data, epochs=epochs, threads=threads, workdir=workdir, seed=seed, sets=sets)
        else:
            result = run_trainer_arm(data, best=arm == "trainer_best", epochs=epochs, workdir=workdir, seed=seed)
    majority = max(set(data.train.labels), key=data.train.labels.count)
    result.update(
        arm=arm,
        seed=seed,
        dataset=dataset,
        train_size=len(data.train),
        eval_size=len(data.eval),
        majority_baseline_accuracy=data.eval.labels.count(majority) / len(data.eval),
        threads=torch.get_num_threads(),
        peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # KiB on Linux
        load_average_before=round(load_before, 2),
        load_average_after=round(one_minute_load(), 2),
    )
    json_out.write_text(json.dumps(result, indent=2), encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# The driver


def machine_info(threads: int) -> dict[str, Any]:
    from tunesmith.training import hardware

    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "load_average_at_start": round(one_minute_load(), 2),
        "versions": hardware.library_versions(),
        "hardware": hardware.hardware_info(),
    }


def spawn_arm(arm: str, args: argparse.Namespace, folder: Path, seed: int) -> dict[str, Any]:
    out = folder / f"{arm}-{seed}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--arm", arm, "--json-out", str(out)]
    cmd += ["--epochs", str(args.epochs), "--threads", str(args.threads), "--seeds", str(seed), "--dataset", args.dataset]
    for key, value in args.sets.items():
        cmd += ["--set", f"{key}={value}"]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0 or not out.is_file():
        return {"arm": arm, "seed": seed, "error": f"exit code {proc.returncode}", "process_seconds": round(elapsed, 1)}
    result = json.loads(out.read_text(encoding="utf-8"))
    result["process_seconds"] = round(elapsed, 1)
    return result


def add_derived(results: list[dict[str, Any]], peaks: dict[str, float], non_embedding: int) -> None:
    """Ratios and deltas against the tutorial (its one run) and the tuned Trainer (same seed), and MFU, in place."""
    ok = [r for r in results if "error" not in r]
    plain = next((r for r in ok if r["arm"] == "plain"), None)
    tuned = {r["seed"]: r for r in ok if r["arm"] == "trainer_best"}
    for r in ok:
        if plain and r.get("train_samples_per_second") and plain.get("train_samples_per_second"):
            r["ratio_vs_plain"] = round(r["train_samples_per_second"] / plain["train_samples_per_second"], 3)
            r["accuracy_delta_points"] = round((r["accuracy"] - plain["accuracy"]) * 100, 2)
        base = tuned.get(r["seed"])
        if base and r is not base and r.get("train_samples_per_second") and base.get("train_samples_per_second"):
            r["ratio_vs_tuned"] = round(r["train_samples_per_second"] / base["train_samples_per_second"], 3)
        peak = peaks.get(r["precision"], peaks["fp32"]) * 1e9
        if r["step_seconds"]:
            r["real_tokens_per_second"] = round(r["tokens"]["useful"] / r["step_seconds"], 1)
            for kind in ("padded", "useful"):
                flops = 6 * non_embedding * r["tokens"][kind] / r["step_seconds"]
                r[f"mfu_{kind}"] = round(flops / peak, 4)
                r[f"model_gflops_per_second_{kind}"] = round(flops / 1e9, 1)


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per arm: mean (and spread) over seeds of throughput, accuracy and macro-F1."""
    summary: dict[str, dict[str, Any]] = {}
    for arm in ARMS:
        runs = [r for r in results if r["arm"] == arm and "error" not in r]
        if not runs:
            continue
        row: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
        for key in ("train_samples_per_second", "accuracy", "macro_f1", "peak_rss_mib"):
            values = [r[key] for r in runs if r.get(key) is not None]
            if values:
                row[key] = round(statistics.fmean(values), 4)
                row[f"{key}_min"], row[f"{key}_max"] = round(min(values), 4), round(max(values), 4)
        summary[arm] = row
    return summary


def target_verdict(summary: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The issue's targets: >= 1.5x the tuned Trainer and >= 6x the tutorial, at equal accuracy and macro-F1."""
    ts, tuned, plain = summary.get("tunesmith"), summary.get("trainer_best"), summary.get("plain")
    if not ts or not tuned:
        return None
    verdict: dict[str, Any] = {
        "target": f"tunesmith >= {TARGET_RATIO_TUNED}x the tuned Trainer's samples/s (and >= {TARGET_RATIO_PLAIN}x the tutorial's), "
        f"with mean accuracy and macro-F1 no more than {TARGET_POINTS} points below the tuned Trainer's",
        "ratio_vs_tuned": round(ts["train_samples_per_second"] / tuned["train_samples_per_second"], 3),
        "accuracy_delta_points": round((ts["accuracy"] - tuned["accuracy"]) * 100, 2),
        "macro_f1_delta_points": round((ts["macro_f1"] - tuned["macro_f1"]) * 100, 2),
        "seeds": ts["seeds"],
    }
    met = (
        verdict["ratio_vs_tuned"] >= TARGET_RATIO_TUNED
        and verdict["accuracy_delta_points"] >= -TARGET_POINTS
        and verdict["macro_f1_delta_points"] >= -TARGET_POINTS
    )
    if plain:
        verdict["ratio_vs_plain"] = round(ts["train_samples_per_second"] / plain["train_samples_per_second"], 3)
        met = met and verdict["ratio_vs_plain"] >= TARGET_RATIO_PLAIN
    verdict["met"] = met
    return verdict


def print_table(results: list[dict[str, Any]], info: dict[str, Any], summary, verdict: dict[str, Any] | None, smoke: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # piped or logged: do not squeeze the table into 80 columns
        console = Console(width=190)

    def num(value, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    table = Table(title=f"Training on {info['dataset']}, {MODEL}, {info['threads']} thread(s) on {info['cpu_model']}")
    columns = (
        "arm",
        "seed",
        "precision",
        "train samples/s",
        "real tok/s",
        "x plain",
        "x tuned",
        "step s",
        "wall s",
        "eval acc",
        "macro-F1",
    )
    for col in (*columns, "peak RSS MiB", "MFU all tok", "MFU useful tok"):
        table.add_column(col, justify="left" if col in ("arm", "precision") else "right")
    for r in results:
        if "error" in r:
            table.add_row(r["arm"], str(r.get("seed", "")), f"[red]failed ({r['error']})[/]", *[""] * 11)
            continue
        table.add_row(
            r["arm"],
            str(r["seed"]),
            r["precision"],
            num(r.get("train_samples_per_second"), ".1f"),
            num(r.get("real_tokens_per_second"), ",.0f"),
            num(r.get("ratio_vs_plain"), ".2f"),
            num(r.get("ratio_vs_tuned"), ".2f"),
            num(r.get("step_seconds"), ".1f"),
            num(r.get("wall_seconds"), ".1f"),
            num(r.get("accuracy"), ".4f"),
            num(r.get("macro_f1"), ".4f"),
            num(r.get("peak_rss_mib"), ".0f"),
            num(r.get("mfu_padded"), ".1%"),
            num(r.get("mfu_useful"), ".1%"),
        )
    console.print(table)
    if len({r.get("seed") for r in results}) > 1:
        means = Table(title="Mean over seeds (min-max)")
        for col in ("arm", "seeds", "train samples/s", "eval acc", "macro-F1"):
            means.add_column(col, justify="left" if col == "arm" else "right")
        for arm, row in summary.items():
            cells = [f"{row[k]:.4f} ({row[k + '_min']:.4f}-{row[k + '_max']:.4f})" if k in row else "n/a" for k in ("accuracy", "macro_f1")]
            means.add_row(arm, ",".join(map(str, row["seeds"])), num(row.get("train_samples_per_second"), ".1f"), *cells)
        console.print(means)
    peaks = info["matmul_peak_gflops"]
    console.print(
        "train samples/s: examples / optimizer-step seconds (StepTimer; excludes data loading, evaluation, checkpoints). "
        "real tok/s: non-padding tokens / optimizer-step seconds. x tuned: against the tuned Trainer (trainer_best) of the same seed.\n"
        "wall s: the whole train() call (tunesmith's includes its per-epoch evaluation and checkpoints).\n"
        f"MFU: 6 x {info['model_parameters']['non_embedding']:,} non-embedding parameters x tokens / step seconds, against the "
        f"matmul peak of the arm's precision (fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s); "
        "'all tok' counts padding (real compute), 'useful tok' does not. Attention's seq² FLOPs are not counted; "
        "frozen layers do less than 6 FLOPs per parameter and token, so tunesmith's MFU is overstated by that."
    )
    baselines = {r["majority_baseline_accuracy"] for r in results if "error" not in r}
    if baselines:
        (baseline,) = baselines
        console.print(f"eval acc: accuracy on the held-out split; always predicting the majority class scores {baseline:.4f}.")
    if any(r.get("same_data_as_other_arms") is False for r in results):
        console.print("[red]tunesmith trained on a different split from the other arms: its numbers are not comparable[/]")
    if verdict:
        colour = "green" if verdict["met"] else "red"
        note = " [dim](smoke run with --limit: not a verdict)[/]" if smoke else ""
        plain = f", {verdict['ratio_vs_plain']:.2f}x plain" if "ratio_vs_plain" in verdict else ""
        console.print(
            f"target: {verdict['target']}: [{colour}]{'met' if verdict['met'] else 'NOT met'}[/] "
            f"({verdict['ratio_vs_tuned']:.2f}x tuned{plain}; accuracy {verdict['accuracy_delta_points']:+.2f}, "
            f"macro-F1 {verdict['macro_f1_delta_points']:+.2f} points over seeds {verdict['seeds']}){note}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the training data (default 1)")
    parser.add_argument("--dataset", default="sms_spam", help="packaged classification dataset (default sms_spam; e.g. trec_questions)")
    parser.add_argument(
        "--seeds", default=str(SEED), help=f"comma-separated training seeds (default {SEED}); the split is always seed {SEED}"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a tunesmith config key for its arm (repeatable)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N train examples and N//4 eval (smoke test)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads in every arm (default: all cores)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated arms to run (default {','.join(ARMS)})")
    parser.add_argument(
        "--output", type=Path, default=None, help="JSON results file (default benchmarks/results/bench_train-<date>-<time>.json)"
    )
    parser.add_argument("--arm", choices=ARMS, help="internal: run this one arm in this process")
    parser.add_argument("--json-out", type=Path, help="internal: where --arm writes its result")
    args = parser.parse_args(argv)
    problems = []
    if args.epochs <= 0:
        problems.append(f"--epochs must be > 0, got {args.epochs:g}")
    if args.limit is not None and args.limit < 2:
        problems.append(f"--limit must be at least 2, got {args.limit}")
    if args.threads < 1:
        problems.append(f"--threads must be >= 1, got {args.threads}")
    try:
        args.seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        problems.append(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    bad_sets = [item for item in args.set if "=" not in item]
    if bad_sets:
        problems.append(f"--set needs KEY=VALUE, got {', '.join(bad_sets)}")
    args.sets = dict(item.split("=", 1) for item in args.set if "=" in item)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        problems.append(f"--arms: unknown arm(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(ARMS)}")
    if args.arm and not args.json_out:
        problems.append("--arm needs --json-out FILE")
    if problems:
        parser.exit(2, "bench_train.py: " + "; ".join(problems) + "\n")
    args.arms = [a for a in ARMS if a in arms]  # fixed order: plain first, so the ratios have their base
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.arm:
        run_arm(
            args.arm,
            epochs=args.epochs,
            threads=args.threads,
            limit=args.limit,
            json_out=args.json_out,
            seed=args.seeds[0],
            dataset=args.dataset,
            sets=args.sets,
        )
        return 0

    import torch
    from rich.console import Console

    from tunesmith.training.rundir import atomic_write_json
    from tunesmith.training.runner import quiet_transformers

    quiet_transformers()
    torch.set_num_threads(args.threads)
    console = Console(stderr=True)
    info = machine_info(args.threads)
    info["dataset"] = args.dataset
    load = info["load_average_at_start"]
    if load > BUSY_LOAD:
        console.print(
            f"[yellow]warning:[/] 1-minute load average is {load:.2f} (> {BUSY_LOAD}): another process is using the CPU, "
            "and a busy machine slows multi-threaded torch several times over. These numbers will be distorted."
        )
    console.print(f"measuring matmul peak (2048x2048, {args.threads} thread(s))...")
    info["matmul_peak_gflops"] = {name: round(matmul_peak_gflops(name), 1) for name in ("fp32", "bf16")}
    info["model_parameters"] = model_shape()

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for i, seed in enumerate(args.seeds):
            for arm in args.arms:
                if arm == "plain" and i > 0:  # the slow tutorial recipe is the 6x reference only: one run
                    continue
                console.rule(f"arm: {arm}, seed {seed}")
                results.append(spawn_arm(arm, args, Path(tmp), seed))
    add_derived(results, info["matmul_peak_gflops"], info["model_parameters"]["non_embedding"])
    summary = summarise(results)
    verdict = target_verdict(summary)
    info["max_load_average_during_arms"] = max((r.get("load_average_after", 0.0) for r in results), default=0.0)

    print_table(results, info, summary, verdict, smoke=bool(args.limit))
    if info["max_load_average_during_arms"] > BUSY_LOAD:
        console.print(f"[yellow]warning:[/] load average reached {info['max_load_average_during_arms']:.2f} during the arms")

    output = args.output or RESULTS_DIR / f"bench_train-{datetime.now():%Y%m%d-%H%M%S}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        output,
        {
            "benchmark": "bench_train",
            "created": datetime.now().isoformat(timespec="seconds"),
            "settings": {
                "dataset": args.dataset,
                "model": MODEL,
                "epochs": args.epochs,
                "batch_size": BATCH_SIZE,
                "lr": LR,
                "split_seed": SEED,
                "seeds": args.seeds,
                "tunesmith_settings": args.sets,
                "max_length": MAX_LENGTH,
                "limit": args.limit,
                "threads": args.threads,
                "arms": args.arms,
            },
            "machine": info,
            "results": results,
            "summary": summary,
            "target": verdict,
            "notes": {
                "train_samples_per_second": "examples / optimizer-step seconds (tunesmith StepTimer in every arm)",
                "wall_seconds": "Trainer.train() / tunesmith's train() including its per-epoch evaluation and checkpoints",
                "real_tokens_per_second": "non-padding tokens / optimizer-step seconds",
                "mfu_padded": "6 x non-embedding params x tokens incl. padding / step seconds / matmul peak of the arm's precision",
                "mfu_useful": "as mfu_padded, counting only non-padding tokens",
                "tokens": "counted at the word embedding in training-mode forward passes",
            },
        },
    )
    console.print(f"results written to {output}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
