"""The ``data preferences`` verb: a demo preference set (prompt/chosen/rejected) from packaged translation data."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from tunesmith.commands.output import err, out


def cmd_data_preferences(args: argparse.Namespace) -> int:
    from tunesmith.preference.recipes import translation_preferences, write_preferences

    pairs = translation_preferences(args.source, seed=args.seed, limit=args.limit)
    path = write_preferences(pairs, args.out)
    err.print(
        f"wrote {len(pairs):,} preference pairs to {path} (chosen: the reference answer; rejected: another example's, of similar length)"
    )
    first = pairs[0]
    out.print(f"first pair:\n  prompt:   {first['prompt']}\n  chosen:   {first['chosen']}\n  rejected: {first['rejected']}")
    out.print(
        f"\ntrain with:\n  tunesmith train --task reward --model smollm2-135m --method lora --train {path} --max-steps 60\n"
        f"  tunesmith train --task dpo --model smollm2-135m --method lora --train {path} --max-steps 60"
    )
    return 0


def args_data_preferences(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source",
        nargs="?",
        default="hsk_zh_en",
        help="single-turn instruction data: a packaged sft dataset (default hsk_zh_en) or a .jsonl file that `--task sft` reads",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="JSON Lines file to write (prompt, chosen, rejected, source_row)")
    p.add_argument("--seed", type=int, default=0, help="seed of the wrong-answer choice and of the --limit sample (default 0)")
    p.add_argument("--limit", type=int, metavar="N", help="keep a seeded random sample of N pairs (default: all)")


def print_preference_table(metrics: dict[str, Any], title: str) -> None:
    """Reward runs: pairwise accuracy and margin; DPO runs: reward accuracy and margin, and the log-probability preference."""
    before = "before training"
    if "pairwise_accuracy" in metrics:
        table = Table("metric", before, "after training", title=title)
        for key in ("pairwise_accuracy", "reward_margin"):
            table.add_row(key, f"{metrics[key + '_before']:.4f}" if key + "_before" in metrics else "", f"{metrics[key]:.4f}")
        out.print(table)
        out.print(f"eval n={metrics['n']:,} pairs; pairwise accuracy: share of pairs whose chosen answer gets the higher reward")
        return
    table = Table("metric", before, "after training", title=title)
    table.add_row("reward_accuracy", "0 (by definition)", f"{metrics['reward_accuracy']:.4f}")
    table.add_row("reward_margin", "0 (by definition)", f"{metrics['reward_margin']:.4f}")
    table.add_row("logp_accuracy", f"{metrics['logp_accuracy_before']:.4f}", f"{metrics['logp_accuracy_after']:.4f}")
    table.add_row("logp_margin", f"{metrics['logp_margin_before']:.4f}", f"{metrics['logp_margin_after']:.4f}")
    out.print(table)
    out.print(
        f"eval n={metrics['n']:,} pairs, beta {metrics['beta']:g}; reward = beta x (log p - log p_reference) of an answer; "
        "logp: which answer the model itself finds likelier"
    )
