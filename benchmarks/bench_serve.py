"""How much does micro-batching buy `tunesmith serve`? Requests/s and latency for N concurrent clients.

One command: ``python benchmarks/bench_serve.py --run /tmp/demo2`` (about a minute on 2 cores).
Each setting starts ``tunesmith serve`` on 127.0.0.1 with a free port, warms it up, then N clients
each send one-text requests back to back; batching on (``--max-batch 32 --max-wait-ms 5``) against
off (``--max-batch 1 --max-wait-ms 0``). The texts are SMS-like messages of 5 to 30 words.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time

import httpx
from rich.console import Console
from rich.table import Table

WORDS = [
    "free",
    "prize",
    "win",
    "cash",
    "claim",
    "urgent",
    "call",
    "now",
    "lunch",
    "meeting",
    "tomorrow",
    "home",
    "dinner",
    "later",
    "love",
    "see",
    "you",
    "at",
    "the",
    "cafe",
]
SETTINGS = {"batching on": ["--max-batch", "32", "--max-wait-ms", "5"], "batching off": ["--max-batch", "1", "--max-wait-ms", "0"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: str, flags: list[str], port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tunesmith", "serve", run, "--port", str(port), "--queue", "4096", *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()["model_loaded"]:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start within 120 s")


async def load(port: int, clients: int, seconds: float, rng: random.Random) -> tuple[list[float], float]:
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(5, 30))) for _ in range(512)]
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60, limits=limits) as client:

        async def one_client(i: int) -> None:
            k = i
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                r = await client.post("/predict", json={"texts": [texts[k % len(texts)]]})
                r.raise_for_status()
                latencies.append(time.perf_counter() - started)
                k += clients

        started = time.perf_counter()
        await asyncio.gather(*(one_client(i) for i in range(clients)))
        return latencies, time.perf_counter() - started


def mean_batch(port: int) -> float:
    values = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith("tunesmith_batch_size_"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values["tunesmith_batch_size_sum"] / max(values["tunesmith_batch_size_count"], 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="/tmp/demo2", help="a finished classify run [default: /tmp/demo2]")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16], help="concurrent clients [default: 1 16]")
    parser.add_argument("--seconds", type=float, default=8, help="load time per measurement [default: 8]")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    results = []
    for setting, flags in SETTINGS.items():
        port = free_port()
        proc = start_server(args.run, flags, port)
        try:
            asyncio.run(load(port, 4, 1.0, random.Random(1)))  # warm-up
            for clients in args.clients:
                latencies, elapsed = asyncio.run(load(port, clients, args.seconds, random.Random(0)))
                q = statistics.quantiles(latencies, n=100)
                results.append(
                    {
                        "setting": setting,
                        "clients": clients,
                        "requests": len(latencies),
                        "requests_per_s": len(latencies) / elapsed,
                        "p50_ms": q[49] * 1000,
                        "p95_ms": q[94] * 1000,
                    }
                )
            results_mean = mean_batch(port)
            for r in results:
                r.setdefault("mean_batch_texts", results_mean)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)

    table = Table(
        "setting", "clients", "requests", "req/s", "p50 ms", "p95 ms", "mean texts/model call", title=f"tunesmith serve {args.run}"
    )
    for r in results:
        table.add_row(
            r["setting"],
            str(r["clients"]),
            str(r["requests"]),
            f"{r['requests_per_s']:.1f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            f"{r['mean_batch_texts']:.2f}",
        )
    Console().print(table)
    print(f"cpu threads: {os.cpu_count()}; one text per request; mean batch over the whole setting incl. warm-up")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
