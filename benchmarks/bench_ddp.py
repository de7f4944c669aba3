"""Data-parallel training speed: the same examples through 1 process and through N processes (DDP).

Each arm is ``tunesmith.train`` on the packaged ``minilm`` and ``sms_spam`` (the seeded, deduplicated
split every tunesmith run uses), with the same per-process batch size and the same number of
training examples: the N-process arm takes 1/N of the optimizer steps, each on N batches at once.
Throughput is examples / optimizer-step seconds on rank 0 (its steps include the gradient
all-reduce and the wait for the slowest rank), exactly as tunesmith reports it.

On CPU the cores are split: 1 process uses all of them, N processes use cores / N threads each, so
the comparison asks whether N data-parallel processes beat one multi-threaded process on the same
silicon (on a 2-core machine expect little or nothing: one process already uses both cores). On
GPUs each process takes one GPU, the usual DDP setting.

Usage::

    python benchmarks/bench_ddp.py                                   # CPU: 1 vs 2 processes, 960 examples each
    python benchmarks/bench_ddp.py --device cuda --processes 1,2,4,8 --examples 20000 --batch-size 32
    python benchmarks/bench_ddp.py --processes 1 --threads 1         # one single-threaded process, for reference
    python benchmarks/bench_ddp.py --examples 160                    # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MODEL = "minilm"
DATASET = "sms_spam"


def run_arm(processes: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    import tunesmith

    global_batch = args.batch_size * processes
    steps = max(1, args.examples // global_batch)
    threads = (args.threads or max(1, (os.cpu_count() or 1) // processes)) if args.device == "cpu" else None
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    run = tunesmith.train(
        {"data": {"train": DATASET}},
        model=MODEL,
        batch_size=args.batch_size,
        max_steps=steps,
        lr=args.lr,
        precision=args.precision,
        num_processes=processes,
        threads=threads,
        seed=args.seed,
        doctor=False,
        report=False,
        baseline=False,
        early_stopping=None,
        overfit_monitor=False,
        out=str(folder / f"p{processes}"),
    )
    wall = time.perf_counter() - started
    m = run.metrics
    t = m["training"]
    return {
        "processes": processes,
        "threads_per_process": threads,
        "backend": m["distributed"]["backend"],
        "per_process_batch": args.batch_size,
        "global_batch": global_batch,
        "steps": t["steps"],
        "examples": t["examples_seen"],
        "step_seconds": t["step_seconds"],
        "train_samples_per_second": t["train_samples_per_second"],
        "wall_seconds": round(wall, 2),
        "precision": t["precision"],
        "eval_accuracy": m["eval"]["accuracy"],
        "eval_macro_f1": m["eval"]["macro_f1"],
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def machine_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "device": device,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if device == "cuda":
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def print_table(results: list[dict[str, Any]], info: dict[str, Any]) -> None:
    base = next((r for r in results if r["processes"] == 1), None)
    print(
        f"\n{info['device']}: {info.get('gpus') or str(info['cpu_count']) + ' CPU cores'}, 1-min load at start {info['load_average_1min']}"
    )
    print(
        f"{'processes':>9} {'threads':>7} {'global batch':>12} {'steps':>5} {'samples/s':>10} {'x 1 proc':>8} {'wall s':>7} {'eval acc':>8} {'load':>9}"
    )
    for r in results:
        ratio = r["train_samples_per_second"] / base["train_samples_per_second"] if base else float("nan")
        print(
            f"{r['processes']:>9} {r['threads_per_process'] or '-':>7} {r['global_batch']:>12} {r['steps']:>5} "
            f"{r['train_samples_per_second']:>10.1f} {ratio:>8.2f} {r['wall_seconds']:>7.1f} {r['eval_accuracy']:>8.4f} "
            f"{r['load_average_before']:>4}->{r['load_average_after']}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="cpu (gloo, cores split) or cuda (NCCL, one GPU per process)"
    )
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts to compare (default 1,2)")
    parser.add_argument("--threads", type=int, help="CPU threads per process (default: the cores split between the processes)")
    parser.add_argument("--examples", type=int, default=960, help="training examples per arm (default 960)")
    parser.add_argument("--batch-size", type=int, default=16, help="per-process batch size (default 16)")
    parser.add_argument("--lr", type=float, default=5e-5, help="learning rate, not scaled with the processes (default 5e-5)")
    parser.add_argument("--precision", default="auto", help="tunesmith --precision (default auto: bf16 where supported)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", type=Path, help="JSON results (default benchmarks/results/bench_ddp-<device>-<date>-<time>.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the ranks inherit it: gloo on CPU even where GPUs exist
    counts = [int(n) for n in args.processes.split(",")]
    import torch

    if args.device == "cuda" and (not torch.cuda.is_available() or max(counts) > torch.cuda.device_count()):
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        print(f"--device cuda with up to {max(counts)} processes needs as many GPUs; this machine has {have}", file=sys.stderr)
        return 2
    info = machine_info(args.device)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        for n in counts:
            print(f"--- {n} process(es)", file=sys.stderr)
            results.append(run_arm(n, args, Path(tmp)))
    print_table(results, info)
    output = args.output or RESULTS_DIR / f"bench_ddp-{args.device}-{datetime.now():%Y%m%d-%H%M%S}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"info": info, "settings": vars(args) | {"output": str(output)}, "results": results}, indent=2) + "\n")
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
