"""The `ui` verb: a local web page to launch, watch, compare and inspect runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from tunesmith.commands.output import err
from tunesmith.errors import UserError


def cmd_ui(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError("tunesmith ui needs FastAPI and uvicorn: pip install 'tunesmith[serve]'") from None
    from tunesmith.deploy.serve import is_loopback
    from tunesmith.ui import run_ui

    if args.port < 1 or args.port > 65535:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise UserError(f"--max-upload-mb must be > 0, got {args.max_upload_mb:g}")
    runs = Path(args.runs_dir)
    if runs.exists() and not runs.is_dir():
        raise UserError(f"--runs-dir {runs} is a file, not a directory; pass the directory that holds (or will hold) your runs")
    if not is_loopback(args.host):
        err.print(
            f"[bold yellow]warning:[/] serving the UI on {args.host}: anyone who can reach it can read your runs, upload data and start "
            "trainings; keep it on 127.0.0.1 or behind an authenticating proxy"
        )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    err.print(f"tunesmith ui: http://{shown}:{args.port}  (runs in {runs.resolve()}; Ctrl-C to stop)")
    run_ui(runs, host=args.host, port=args.port, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024))
    return 0


def args_ui(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runs-dir", default="runs", metavar="DIR", help="directory of the runs to show; new runs and uploads go there [default: runs]"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback warns [default: 127.0.0.1]")
    p.add_argument("--port", type=int, default=7860, help="[default: 7860]")
    p.add_argument("--max-upload-mb", type=float, default=100.0, metavar="MB", help="largest data file the page accepts [default: 100]")
