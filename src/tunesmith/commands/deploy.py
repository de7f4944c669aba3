"""Verbs that ship a run or explain it: export, serve, explain, report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.table import Table

from tunesmith.commands.output import (
    err,
    out,
)
from tunesmith.errors import UserError


def cmd_export(args: argparse.Namespace) -> int:
    from tunesmith.deploy import export

    result = export(args.run, format=args.format, quantize=args.quantize, output=args.output)
    speed, torch_fp32, exported = result.speed, result.speed["pytorch_fp32"], result.speed["export"]
    title = f"speed on {speed['texts']} eval texts, {speed['threads']} thread(s), 1-minute load {speed['load_average_1min']:.1f}"
    table = Table("", "PyTorch fp32", f"{result.format} {result.precision}", title=title)
    table.add_row(f"texts/s (batch {speed['batch_size']})", f"{torch_fp32['texts_per_second']:.1f}", f"{exported['texts_per_second']:.1f}")
    table.add_row("latency ms (batch 1, median)", f"{torch_fp32['latency_ms_batch1']:.2f}", f"{exported['latency_ms_batch1']:.2f}")
    out.print(table)
    out.print(result.parity_summary(), highlight=False)
    out.print(f"wrote {result.dir} ({result.model_file.name}, tokenizer, export.json with the post-processing to apply)")
    if not result.parity_passed:
        err.print("[bold red]error:[/] the export does not reproduce the run:", end=" ")
        err.print(f"{result.parity_summary()}; files kept, marked parity_passed false in export.json", markup=False, highlight=False)
        return 1
    return 0


def args_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `tunesmith train` (classify, multi-label, regress or ner)")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="model format [default: onnx]")
    p.add_argument("--quantize", choices=("int8",), help="dynamic int8 quantization of the weights [default: none, fp32]")
    p.add_argument("--output", metavar="DIR", help="export directory, replaced as a whole [default: RUN/export/<format>[-int8]]")


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from tunesmith.deploy.serve import API_KEY_ENV, is_loopback, serve

    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if not is_loopback(args.host) and not api_key:
        err.print(
            f"[bold yellow]warning:[/] serving on {args.host} without an API key: anyone who can reach it can use the model; pass --api-key or set {API_KEY_ENV}"
        )
    keys = ("backend", "max_batch", "max_wait_ms", "max_texts", "max_chars", "queue", "timeout_s", "max_tokens", "threads")
    settings = {k: getattr(args, k) for k in keys}
    serve(args.run, host=args.host, port=args.port, workers=args.workers, api_key=api_key, **settings)
    return 0


def args_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `tunesmith train`")
    from tunesmith.deploy.backends import BACKENDS

    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto: measure torch-fp32, torch-bf16 (native bf16 only) and the run's passed ONNX exports on its eval texts at "
        "startup and serve the fastest that reproduces torch fp32 (shown in /info and the log); torch: the run's model, bf16 "
        "where native; onnx, onnx-int8: RUN/export/onnx[-int8] (classify runs; `tunesmith export RUN [--quantize int8]` first) "
        "[default: auto]",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind; non-loopback without --api-key warns [default: 127.0.0.1]")
    p.add_argument("--port", type=int, default=8000, help="[default: 8000]")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="server processes, each with its own model [default: 1]")
    p.add_argument("--api-key", metavar="KEY", help="require `Authorization: Bearer KEY` (not on /health) [default: env TUNESMITH_API_KEY]")
    p.add_argument(
        "--max-batch", type=int, default=32, metavar="N", help="texts per model call; concurrent requests are grouped [default: 32]"
    )
    p.add_argument("--max-wait-ms", type=float, default=5.0, metavar="MS", help="how long a batch waits for more texts [default: 5]")
    p.add_argument("--max-texts", type=int, default=64, metavar="N", help="texts per request, more answers 413 [default: 64]")
    p.add_argument("--max-chars", type=int, default=5000, metavar="N", help="characters per text, more answers 422 [default: 5000]")
    p.add_argument("--queue", type=int, default=256, metavar="N", help="requests waiting for the model, more answers 503 [default: 256]")
    p.add_argument("--timeout-s", type=float, default=30.0, metavar="S", help="seconds a request may wait, more answers 504 [default: 30]")
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads for the model [default: all cores, one less per core another job keeps busy (1-minute load)]",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=1024,
        metavar="N",
        help="generative runs (/v1/completions, /v1/chat/completions): most tokens a completion may ask for, more answers 422 [default: 1024]",
    )


def cmd_explain(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from tunesmith.explain import explain, headline, render_html, rich_text

    if not args.text:
        raise UserError('explain needs texts: pass --text "..." (repeatable)')
    explanations = explain(args.run, args.text, target=args.target, steps=args.steps, method=args.method)
    if args.html:
        from tunesmith.training.rundir import atomic_write_text

        atomic_write_text(Path(args.html), render_html(explanations, title=f"tunesmith explain: {Path(args.run).name}"))
    if args.json:
        sys.stdout.write(json.dumps([e.to_dict() for e in explanations], ensure_ascii=False, indent=2) + "\n")
    else:
        for e in explanations:
            out.print(escape(headline(e)), highlight=False)
            out.print(rich_text(e))
            if e.logit is None:  # an ner text without entities
                continue
            ig = e.method == "ig"
            source = "entity attention" if e.entity else "[CLS] attention"
            title = "top words (green: for the label, red: against)" if ig else "top words by attention"
            table = Table("word", *(["attribution"] if ig else []), source, title=title)
            for w in e.top_words(5):
                value = [f"[{'green' if w.attribution >= 0 else 'red'}]{w.attribution:+.4f}[/]"] if ig and w.attribution is not None else []
                table.add_row(escape(w.word), *value, f"{w.attention:.3f}")
            out.print(table)
    if args.html:
        err.print(f"wrote {args.html}")
    return 0


def args_explain(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `tunesmith train` (classify, single- or multi-label, or ner)")
    p.add_argument("--text", action="append", help="a text to explain (repeat for several)")
    p.add_argument(
        "--method",
        choices=("ig", "attention"),
        default="ig",
        help="ig: integrated gradients (captum) with attention alongside; attention: the last layer's attention and the "
        "word-by-word map (in --html) [default: ig]",
    )
    p.add_argument(
        "--target", metavar="LABEL", help="classify: the label to explain [default: the predicted one]; ner: only entities of this type"
    )
    p.add_argument("--steps", type=int, default=32, metavar="N", help="integrated-gradient steps (more: smaller gap) [default: 32]")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page with the coloured texts")
    p.add_argument("--json", action="store_true", help="print the explanations as JSON")


def cmd_report(args: argparse.Namespace) -> int:
    from tunesmith.report import write_report

    path = write_report(args.run, args.output)
    out.print(f"wrote {path}")
    return 0


def args_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `tunesmith train`")
    p.add_argument("--output", metavar="FILE", help="where to write the HTML report [default: RUN/report.html]")
