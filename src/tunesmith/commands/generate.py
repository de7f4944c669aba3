"""Verbs that talk to a language model: generate (one streamed reply) and chat (a conversation in the terminal)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.table import Table

from tunesmith.commands.output import err, out


def _sampling(args: argparse.Namespace):
    from tunesmith.generate import Sampling

    return Sampling(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )


def _load(args: argparse.Namespace):
    from tunesmith.generate import Generator

    chat = False if args.raw else None
    return Generator.load(args.run_or_model, template=args.template, chat=chat, precision=args.precision)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def cmd_generate(args: argparse.Namespace) -> int:
    sampling = _sampling(args)  # bad flags are reported before the model loads
    generator = _load(args)
    stream = len(args.prompt) == 1 and not args.json and not args.no_stream
    for prompt in args.prompt:
        if stream:
            generator.generate(prompt, sampling, on_text=_write, system=args.system)
            _write("\n")
            continue
        reply = generator.generate(prompt, sampling, system=args.system)
        if args.json:
            _write(json.dumps({"prompt": prompt, "generated": reply}, ensure_ascii=False) + "\n")
        else:
            out.print(f"[bold]> {prompt}[/]", highlight=False)
            out.print(reply, markup=False, highlight=False)
    return 0


def add_sampling_flags(p: argparse.ArgumentParser, max_new_tokens: int = 256) -> None:
    p.add_argument(
        "run_or_model",
        metavar="RUN_OR_MODEL",
        help="a run directory (sft, clm, dpo, seq2seq), a registry name or a local HF model directory",
    )
    g = p.add_argument_group("sampling")
    g.add_argument(
        "--max-new-tokens", type=int, default=max_new_tokens, metavar="N", help=f"most tokens per reply [default: {max_new_tokens}]"
    )
    g.add_argument(
        "--temperature", type=float, default=0.7, help="randomness of sampling; 0 decodes greedily (deterministic) [default: 0.7]"
    )
    g.add_argument(
        "--top-p",
        type=float,
        default=0.9,
        help="nucleus sampling: keep the smallest set of tokens with this probability mass [default: 0.9]",
    )
    g.add_argument("--top-k", type=int, default=50, help="sample among the K most likely tokens (0: all) [default: 50]")
    g.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeating tokens [default: 1.0]")
    g.add_argument("--seed", type=int, help="seed for sampling, for repeatable replies")
    m = p.add_argument_group("model")
    m.add_argument("--system", help="a system message before the conversation (chat models)")
    m.add_argument("--template", help="chat template for a model without one: plain, a Jinja file or an inline Jinja string")
    m.add_argument("--raw", action="store_true", help="continue the prompt as raw text, without the chat template")
    m.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="auto: bf16 autocast where the CPU/GPU supports it [default: auto]",
    )


def args_generate(p: argparse.ArgumentParser) -> None:
    add_sampling_flags(p)
    p.add_argument("--prompt", action="append", required=True, help="the prompt (repeat for several; one prompt streams its reply)")
    p.add_argument("--json", action="store_true", help="print one JSON line per prompt: {prompt, generated}")
    p.add_argument("--no-stream", action="store_true", help="print the reply when it is complete instead of as it is written")


def cmd_chat(args: argparse.Namespace) -> int:
    from tunesmith.generate import ChatSession, run_chat

    sampling = _sampling(args)
    session = ChatSession(_load(args), sampling=sampling, system=args.system)
    interactive = sys.stdin.isatty()
    answered = run_chat(session, sys.stdin, _write, prompt="> " if interactive else "")
    if not interactive:
        err.print(f"{answered} message(s) answered")
    return 0


def args_chat(p: argparse.ArgumentParser) -> None:
    add_sampling_flags(p)


def print_generation_table(metrics: dict[str, Any], title: str) -> None:
    """Perplexity/loss on the replies and BLEU/chrF of generated replies; before and after training when the run measured both."""
    keys = [k for k in ("perplexity", "eval_loss", "token_accuracy", "bleu", "chrf") if k in metrics]
    before = any(f"{k}_before" in metrics for k in keys)
    table = Table("metric", *(["before training", "after training"] if before else ["model"]), title=title)
    for key in keys:
        cells = [f"{metrics[f'{key}_before']:.4f}" if f"{key}_before" in metrics else ""] if before else []
        table.add_row(key, *cells, f"{metrics[key]:.4f}")
    out.print(table)
    notes = [f"eval n={metrics.get('n', 0):,}"]
    if "tokens" in metrics:
        notes.append(f"{metrics['tokens']:,} scored tokens")
    if "generated" in metrics:
        notes.append(
            f"BLEU/chrF (sacrebleu, 0-100) on {metrics['generated']} greedy replies of at most {metrics.get('max_new_tokens', '?')} tokens"
        )
    out.print("; ".join(notes) + "; lower perplexity/loss and higher BLEU/chrF are better")
