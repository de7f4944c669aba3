"""Does EDA augmentation help when data is scarce? MiniLM on 10% of SMS spam, with and without EDA, over seeds.

One command: ``python benchmarks/bench_augment.py`` (about 10 minutes on 2 idle cores).
The eval split is the standard one (the same 905 texts for every run); the 10% training subset is
stratified and drawn per seed; EDA writes ``--factor`` augmented copies of each training text.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

import tunesmith
from tunesmith.config import DataConfig
from tunesmith.data import prepare_classification
from tunesmith.data.augment import augment_file
from tunesmith.data.dedup import write_rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--share", type=float, default=0.1, help="share of the training split used")
    parser.add_argument("--factor", type=int, default=4, help="augmented copies per training text")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--output", default=None, help="JSON results file")
    args = parser.parse_args()
    console = Console()
    data = prepare_classification(DataConfig(), seed=42)
    work = Path(tempfile.mkdtemp(prefix="bench-augment-"))
    write_rows(work / "eval.csv", ["text", "label"], [{"text": t, "label": lab} for t, lab in zip(data.eval.texts, data.eval.labels)])
    results: dict[str, list[float]] = defaultdict(list)
    for seed in [int(s) for s in args.seeds.split(",")]:
        rng = random.Random(seed)
        by_label = defaultdict(list)
        for t, lab in zip(data.train.texts, data.train.labels):
            by_label[lab].append(t)
        rows = [
            {"text": t, "label": lab} for lab, texts in by_label.items() for t in rng.sample(texts, max(2, round(args.share * len(texts))))
        ]
        write_rows(work / f"train-{seed}.csv", ["text", "label"], rows)
        augment_file(str(work / f"train-{seed}.csv"), work / f"train-{seed}-eda.csv", factor=args.factor, seed=seed)
        for arm, train in (("none", f"train-{seed}.csv"), ("eda", f"train-{seed}-eda.csv")):
            run = tunesmith.train(
                {"data": {"train": str(work / train), "eval": str(work / "eval.csv")}},
                epochs=args.epochs, seed=seed, early_stopping=None, doctor=False, baseline=False, out=str(work / f"run-{arm}-{seed}"),
            )  # fmt: skip
            results[arm].append(run.metrics["eval"]["macro_f1"])
            console.print(f"seed {seed} {arm}: {run.metrics['training']['examples_seen']:,} examples seen, macro-F1 {results[arm][-1]:.4f}")
    table = Table(
        "arm",
        *[f"seed {s}" for s in args.seeds.split(",")],
        "mean",
        title=f"macro-F1 on the 905 eval texts, {args.share:.0%} of the training split",
    )
    for arm, values in results.items():
        table.add_row(arm, *[f"{v:.4f}" for v in values], f"{statistics.mean(values):.4f}")
    console.print(table)
    out = Path(args.output or f"benchmarks/results/bench_augment-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "macro_f1": results}, indent=2) + "\n")
    console.print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
