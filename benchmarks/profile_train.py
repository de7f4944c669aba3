"""Where does a MiniLM training step spend its time on the CPU? An operator breakdown, before and after tunesmith's levers.

One command: ``python benchmarks/profile_train.py`` (about two minutes on 2 cores).

Each configuration trains ``minilm`` on length-grouped batches of 16 SMS spam texts (the tuned
Trainer's batches: dynamic padding, bf16 autocast, fused AdamW, gradient clipping at 1.0) for a few
warm-up steps, then ``torch.profiler`` records ``--steps`` steps. Operators are grouped by what they
are for, so the table says which lever can remove which share:

- ``tuned``: the tuned Trainer's step (SDPA attention, every weight trained);
- ``tunesmith``: tunesmith's defaults (eager attention, frozen embedding block, the last layer computed for the
  pooled token only, the cheaper dropout mask; ``--freeze-layers`` lowest layers fixed: 1 by default, as classify
  fixes MiniLM's lowest layer).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict

GROUPS = {
    "matmul (forward and backward)": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"),
    "optimizer (fused AdamW)": ("aten::_fused_adamw_",),
    "dropout random numbers": ("aten::bernoulli_", "aten::bernoulli", "aten::native_dropout", "aten::random_"),
    "bf16 casts (autocast)": ("aten::copy_", "aten::_to_copy"),
    "gradient clipping norms": ("aten::linalg_vector_norm", "aten::_foreach_norm", "aten::_foreach_mul_"),
    "layer norm": ("aten::native_layer_norm", "aten::native_layer_norm_backward"),
    "softmax / attention": (
        "aten::_softmax",
        "aten::_softmax_backward_data",
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
    ),
    "GELU": ("aten::gelu", "aten::gelu_backward"),
    "embedding backward": ("aten::embedding_dense_backward", "aten::embedding_backward"),
    "elementwise (mul/add/fill/sum)": (
        "aten::mul",
        "aten::mul_",
        "aten::add",
        "aten::add_",
        "aten::fill_",
        "aten::sum",
        "aten::div_",
        "aten::where",
        "aten::zero_",
    ),
}


def batches(lengths: list[int], batch_size: int, seed: int = 0) -> list[list[int]]:
    """Length-grouped batches as the Trainer's ``group_by_length`` makes them (mega-batches of 50, sorted)."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    grouped: list[int] = []
    for i in range(0, len(order), 50 * batch_size):
        grouped += sorted(order[i : i + 50 * batch_size], key=lambda k: -lengths[k])
    out = [grouped[i : i + batch_size] for i in range(0, len(grouped), batch_size)]
    rng.shuffle(out)
    return out


def profile(name: str, *, attention: str, freeze_layers: int | None, steps: int, threads: int) -> dict[str, float]:
    import contextlib

    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunesmith.config import DataConfig, ModelConfig
    from tunesmith.data import prepare_classification
    from tunesmith.models import resolve_model
    from tunesmith.training.dropout import fast_dropout
    from tunesmith.training.methods import freeze_lower
    from tunesmith.training.pooled import pooled_last_layer

    torch.set_num_threads(threads)
    ref = resolve_model("minilm")
    tokenizer = AutoTokenizer.from_pretrained(ref)
    data = prepare_classification(DataConfig(), seed=42)
    encoded = tokenizer(list(data.train.texts), truncation=True, max_length=128)["input_ids"]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(ref, num_labels=2, attn_implementation=attention)
    if freeze_layers is not None:
        freeze_lower(model, ModelConfig(freeze_embeddings=True, freeze_layers=freeze_layers))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-5, fused=True)
    model.train()
    plan = batches([len(ids) for ids in encoded], 16)

    def step(batch: list[int]) -> None:
        width = max(len(encoded[i]) for i in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
            mask[row, : len(encoded[i])] = 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=mask, labels=torch.zeros(len(batch), dtype=torch.long)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    levers = contextlib.ExitStack()
    if freeze_layers is not None:  # tunesmith's configuration
        levers.enter_context(pooled_last_layer(model))
        levers.enter_context(fast_dropout(model))
    with levers:
        for batch in plan[:5]:
            step(batch)
        started = time.perf_counter()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for batch in plan[5 : 5 + steps]:
                step(batch)
        wall = time.perf_counter() - started
    shares: dict[str, float] = defaultdict(float)
    total = 0.0
    for event in prof.key_averages():
        total += event.self_cpu_time_total
        group = next((g for g, ops in GROUPS.items() if event.key in ops), "other")
        shares[group] += event.self_cpu_time_total
    result = {group: shares[group] / total for group in [*GROUPS, "other"]}
    result["ms per step"] = 1000 * wall / steps
    print(f"{name}: {result['ms per step']:.0f} ms/step (profiled)", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="profiled steps per configuration (default 30)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument(
        "--freeze-layers", type=int, default=1, help="tunesmith configuration: lowest layers kept fixed (default 1, classify's default)"
    )
    args = parser.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    from tunesmith.training.runner import quiet_transformers

    quiet_transformers()
    tuned = profile("tuned", attention="sdpa", freeze_layers=None, steps=args.steps, threads=args.threads)
    ours = profile("tunesmith", attention="eager", freeze_layers=args.freeze_layers, steps=args.steps, threads=args.threads)
    table = Table(title=f"Share of operator time per training step (MiniLM, SMS spam, batch 16, {args.threads} threads)")
    for col in ("operators", "tuned Trainer", "ms", f"tunesmith (L{args.freeze_layers})", "ms"):
        table.add_column(col, justify="left" if col == "operators" else "right")
    for group in [*GROUPS, "other"]:
        table.add_row(
            group,
            f"{tuned[group]:.1%}",
            f"{tuned[group] * tuned['ms per step']:.0f}",
            f"{ours[group]:.1%}",
            f"{ours[group] * ours['ms per step']:.0f}",
        )
    table.add_row("[bold]step (wall, under the profiler)[/]", "", f"{tuned['ms per step']:.0f}", "", f"{ours['ms per step']:.0f}")
    Console(width=150).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
