"""Instruction tuning of smollm2-135m: packing vs padding to the longest in the batch, and LoRA vs full fine-tuning memory.

Three arms, each in its own subprocess (so peak RSS is per arm), on the same data, model, precision and
thread count, all through transformers' ``Trainer``:

- ``pad-lora``: the stock recipe: one conversation per row, padded to the longest in the batch
  (``DataCollatorForSeq2Seq``), random order, LoRA.
- ``pack-lora``: tunesmith's sft training step: whole conversations placed into 512-token rows
  (best-fit decreasing), position ids restarting per conversation so none attends to another, and
  the vocabulary projection applied only where a reply token is predicted (``labelled_token_loss``),
  LoRA. Its batch size is chosen so that a step holds about as many real tokens as a ``pad-lora``
  step (a bigger batch alone would be faster per token, which is not what is measured here).
- ``pack-lora-alllogits``: packing alone (logits at every position, the model's own loss), to
  separate the two levers.
- ``pack-full``: as ``pack-lora`` with every weight trained (AdamW state for 135M parameters), for memory.
- ``pack-lora-ckpt``, ``pack-full-ckpt``: the same two with activation checkpointing
  (``--activation-checkpointing``), for memory: without it, activations dominate at this batch.

The data have varied lengths on purpose: the 4,354 ``hsk_zh_en`` pairs grouped, seeded, into chats of
1 to 6 translation turns (60 to ~450 tokens with SmolLM2's template). Throughput is real
(non-padding) tokens per second of optimizer steps, the first ``--warmup`` steps left out.

Usage::

    python benchmarks/bench_sft.py                          # the issue's benchmark: 30 steps per speed arm, 4 per memory arm
    python benchmarks/bench_sft.py --steps 6 --memory-steps 2 --repeats 1   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ARMS = ("pad-lora", "pack-lora-alllogits", "pack-lora", "pack-full", "pack-lora-ckpt", "pack-full-ckpt")
SPEED_ARMS = ("pad-lora", "pack-lora-alllogits", "pack-lora")
MODEL = "smollm2-135m"
MAX_LENGTH = 512
PAD_BATCH = 8
SEED = 42
TARGET_PACKING = 1.5  # pack-lora tokens/s over pad-lora
TARGET_RSS = 0.7  # pack-lora peak RSS over pack-full
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def conversations(seed: int = SEED) -> list[list[dict[str, str]]]:
    """hsk_zh_en pairs as chats of 1-6 translation turns (seeded), so lengths vary several-fold."""
    from tunesmith.data.chat import load_chat

    pairs = load_chat("hsk_zh_en").conversations
    rng = random.Random(seed)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    chats, at = [], 0
    while at < len(order):
        turns = rng.randint(1, 6)
        chats.append([message for i in order[at : at + turns] for message in pairs[i]])
        at += turns
    return chats


def features(tokenizer) -> list[dict[str, list[int]]]:
    from tunesmith.data.chat import ChatData
    from tunesmith.tasks.sft import encode_conversations

    chats = conversations()
    feats, _ = encode_conversations(tokenizer, ChatData("hsk_zh_en chats", chats, list(range(1, len(chats) + 1))), MAX_LENGTH)
    return feats


def current_rss_mib() -> float:
    """Resident memory of this process now (Linux /proc), in MiB."""
    with open("/proc/self/statm") as f:
        return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


class StepClock:
    """Seconds and real tokens of every optimizer step (the collator reports each batch's tokens)."""

    def __init__(self):
        self.seconds: list[float] = []
        self.tokens: list[int] = []
        self.batch_tokens: list[int] = []
        self.rss: list[float] = []  # resident memory after each step (MiB)
        self._start = 0.0

    def callback(self):
        from transformers import TrainerCallback

        clock = self

        class _Timer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                clock._start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                clock.seconds.append(time.perf_counter() - clock._start)
                clock.tokens.append(clock.batch_tokens.pop(0) if clock.batch_tokens else 0)
                clock.rss.append(current_rss_mib())

        return _Timer()

    def counting(self, collate):
        def wrapped(batch):
            self.batch_tokens.append(sum(len(f["input_ids"]) for f in batch))
            return collate(batch)

        return wrapped


def run_arm(arm: str, steps: int, warmup: int, threads: int) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, PrinterCallback, Trainer, TrainingArguments

    from tunesmith.config import ModelConfig, TrainingConfig
    from tunesmith.models import resolve_model
    from tunesmith.tasks.base import EncodedDataset
    from tunesmith.tasks.causal import CausalCollator, make_labelled_token_loss, pack
    from tunesmith.tasks.sft import TASK as SFT_TASK
    from tunesmith.training import hardware, methods
    from tunesmith.training.runner import quiet_transformers

    quiet_transformers()
    torch.set_num_threads(threads)
    precision = hardware.resolve_precision("auto")
    ref = resolve_model(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(ref)
    feats = features(tokenizer)
    lengths = [len(f["input_ids"]) for f in feats]
    lora = "lora" in arm
    if arm.startswith("pack"):
        data = pack(feats, MAX_LENGTH, SEED)
        fill = sum(lengths) / (len(data) * MAX_LENGTH)
        batch = max(1, round(PAD_BATCH * statistics.mean(lengths) / (MAX_LENGTH * fill)))
        collate = CausalCollator(tokenizer.pad_token_id, select_logits=not arm.endswith("alllogits"))
    else:
        data, batch = feats, PAD_BATCH
        stock = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
        collate = lambda rows: stock([{k: r[k] for k in ("input_ids", "labels")} for r in rows])  # noqa: E731
    model = AutoModelForCausalLM.from_pretrained(ref)
    model.config.use_cache = False
    selected = arm.startswith("pack") and not arm.endswith("alllogits")
    loss = make_labelled_token_loss(SimpleNamespace(output_layer=model.get_output_embeddings())) if selected else None
    base_prefix = model.base_model_prefix
    # LoRA as `tunesmith train --task sft` sets it up (its defaults: rank 8, alpha 16, no adapter dropout)
    lora_dropout = SFT_TASK.config_defaults.get("lora_dropout", ModelConfig().lora_dropout)
    model = methods.apply_method(model, ModelConfig(method="lora" if lora else "full", lora_dropout=lora_dropout), "CAUSAL_LM")
    training = TrainingConfig(lr=2e-4 if lora else 2e-5, seed=SEED)
    rss_loaded = current_rss_mib()
    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            max_steps=steps,
            per_device_train_batch_size=batch,
            learning_rate=training.lr,
            bf16=precision == "bf16",
            activation_checkpointing=arm.endswith("-ckpt"),
            use_cpu=not torch.cuda.is_available(),
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=SEED,
            dataloader_num_workers=0,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=EncodedDataset(data),
            data_collator=clock.counting(collate),
            callbacks=[clock.callback()],
            optimizers=(methods.build_optimizer(model, training, base_prefix), None),
            compute_loss_func=loss,
        )
        trainer.remove_callback(PrinterCallback)
        started = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - started
    timed_s, timed_tok = sum(clock.seconds[warmup:]), sum(clock.tokens[warmup:])
    params = methods.count_parameters(model)
    return {
        "arm": arm,
        "steps": steps,
        "batch_size": batch,
        "sequences": len(data),
        "examples": len(feats),
        "length_min_median_max": [min(lengths), int(statistics.median(lengths)), max(lengths)],
        "real_tokens_per_step": round(timed_tok / max(1, len(clock.tokens) - warmup)),
        "tokens_per_s": round(timed_tok / timed_s, 1) if timed_s else None,
        "step_seconds_mean": round(timed_s / max(1, len(clock.seconds) - warmup), 3),
        "wall_s": round(wall, 1),
        "trainable": params["trainable"],
        "total": params["total"],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # KiB on Linux
        "rss_mib_after_load": rss_loaded,
        "rss_mib_after_each_step": clock.rss,
        "precision": precision,
        "threads": threads,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps of the speed arms (pad-lora, pack-lora*) [default: 30]")
    parser.add_argument(
        "--memory-steps", type=int, default=4, help="optimizer steps of the memory-only arms (memory peaks by the second) [default: 4]"
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs of each speed arm, interleaved; the fastest counts [default: 2]")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of tokens/s [default: 2]")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    parser.add_argument("--output", help="results JSON [default: benchmarks/results/bench_sft-<time>.json]")
    args = parser.parse_args()
    if args.arm:
        steps = args.steps if args.arm in SPEED_ARMS else args.memory_steps
        Path(args.json_out).write_text(json.dumps(run_arm(args.arm, steps, args.warmup, args.threads)))
        return 0
    results, loads = {}, []
    arms = args.arms.split(",")
    speed = [arm for arm in arms if arm in SPEED_ARMS]
    # speed arms interleaved --repeats times (best run kept): a burst of load from elsewhere hits one run, not one arm
    order = speed * args.repeats + [arm for arm in arms if arm not in SPEED_ARMS]
    runs: dict[str, list[dict[str, Any]]] = {}
    for arm in order:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            target = f.name
        loads.append(os.getloadavg()[0])
        cmd = [sys.executable, __file__, "--arm", arm, "--json-out", target, "--threads", str(args.threads)]
        cmd += ["--steps", str(args.steps), "--memory-steps", str(args.memory_steps), "--warmup", str(args.warmup)]
        print(f"running {arm} ...", file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True)
        r = json.loads(Path(target).read_text())
        os.unlink(target)
        runs.setdefault(arm, []).append(r)
        results[arm] = max(runs[arm], key=lambda run: run["tokens_per_s"] or 0)
        results[arm]["tokens_per_s_runs"] = [run["tokens_per_s"] for run in runs[arm]]
        print(
            f"  {arm}: {r['tokens_per_s']} real tokens/s, batch {r['batch_size']} ({r['real_tokens_per_step']} real tokens/step), "
            f"peak RSS {r['peak_rss_mib']} MiB, {r['trainable']:,} of {r['total']:,} parameters trainable",
            file=sys.stderr,
            flush=True,
        )
    summary: dict[str, Any] = {
        "arms": results,
        "load_average_at_arm_start": loads,
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    for arm, what in (("pack-lora-alllogits", "packing alone"), ("pack-lora", "packing + reply-only projection (tunesmith sft)")):
        if "pad-lora" in results and arm in results:
            ratio = results[arm]["tokens_per_s"] / results["pad-lora"]["tokens_per_s"]
            summary[f"speedup_{arm}"] = round(ratio, 3)
            verdict = "met" if ratio >= TARGET_PACKING else "NOT met"
            print(f"{what} vs padding to the longest: {ratio:.2f}x real tokens/s (target >= {TARGET_PACKING}x: {verdict})")
    for lora_arm, full_arm, how in (("pack-lora", "pack-full", ""), ("pack-lora-ckpt", "pack-full-ckpt", " with activation checkpointing")):
        if lora_arm in results and full_arm in results:
            ratio = results[lora_arm]["peak_rss_mib"] / results[full_arm]["peak_rss_mib"]
            summary[f"lora_rss_ratio{'_ckpt' if how else ''}"] = round(ratio, 3)
            verdict = "met" if ratio <= TARGET_RSS else "NOT met"
            print(f"LoRA vs full fine-tuning peak RSS{how}: {ratio:.2f}x (target <= {TARGET_RSS}x: {verdict})")
    if max(loads) > 0.5 * (os.cpu_count() or 1):
        print(f"note: the machine was busy (1-minute load up to {max(loads):.1f}); absolute speeds are low, ratios less affected")
    out = Path(args.output) if args.output else RESULTS_DIR / f"bench_sft-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
