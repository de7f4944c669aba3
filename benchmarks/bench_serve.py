"""`tunesmith serve` against a naive server under load: throughput, p50/p99 latency and errors, and the 503 path.

One command: ``python benchmarks/bench_serve.py --run /tmp/serve-run`` (about 3 minutes on 2 cores).

Two servers on 127.0.0.1, each in its own process, up at the same time and measured in turns:

- **naive**: FastAPI with one ``def /predict`` handler calling a transformers ``pipeline("text-classification")``
  on the run's model for each request (fp32, no batching; FastAPI runs the handler in its thread pool).
  The script starts it by calling itself with ``--naive-server``.
- **tunesmith**: ``tunesmith serve RUN`` with its defaults (``--backend auto``: the fastest backend that
  reproduces the run, measured at startup; micro-batching up to 32 texts or 5 ms; a queue of 256).

A bounded load generator (closed loop: C clients on C keep-alive connections, each sending its next one-text
request when the previous one is answered, for ``--seconds``) drives each at concurrency 1, 16 and 64, after a
warm-up. It speaks HTTP/1.1 over asyncio streams itself: httpx could not send more than ~60 requests/s here.
Texts are the run's eval texts (real SMS messages). Every response that is not a 200 is an error.

Then the overload check: ``tunesmith serve`` with ``--queue 4`` at concurrency 64, where the clients honour
Retry-After. Above the limit the server must answer 503 quickly (no timeouts, no crash) and stay healthy.

The load generator shares the CPU with the server, and so does anything else running on the machine:
the script records the load average before and after each measurement. Compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from pydantic import BaseModel

CONCURRENCY = (1, 16, 64)
OVERLOAD_QUEUE = 4
OVERLOAD_CLIENTS = 64
CLIENT_TIMEOUT_S = 60.0


# ---------------------------------------------------------------- the naive server (a subprocess)


class Texts(BaseModel):
    """The naive server's request body (module level: FastAPI resolves the handler's annotation here)."""

    texts: list[str]


def naive_app(run: str):
    """FastAPI calling a transformers pipeline per request: what a first deployment usually looks like."""
    import yaml
    from fastapi import FastAPI
    from transformers import pipeline

    max_length = (yaml.safe_load(Path(run, "config.yaml").read_text(encoding="utf-8")).get("data") or {}).get("max_length", 128)
    classifier = pipeline("text-classification", model=str(Path(run, "model")), device="cpu")
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok", "model_loaded": True}

    @app.post("/predict")
    def predict(body: Texts):
        return {"predictions": classifier(body.texts, truncation=True, max_length=max_length)}

    return app


def serve_naive(run: str, port: int) -> None:
    import uvicorn

    uvicorn.run(naive_app(run), host="127.0.0.1", port=port, log_level="warning")


# ---------------------------------------------------------------- driving a server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, timeout_s: float = 300) -> tuple[subprocess.Popen, float]:
    """Start a server process and wait until /health says the model is loaded; returns it and its startup seconds."""
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-serve-{port}.log", "w", encoding="utf-8")  # noqa: SIM115
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    while time.monotonic() - started < timeout_s:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see {log.name}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json().get("model_loaded"):
                return proc, time.monotonic() - started
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.25)
    proc.kill()
    raise SystemExit(f"server did not start within {timeout_s:.0f} s; see {log.name}")


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)  # graceful: uvicorn finishes accepted requests
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


class Connection:
    """One keep-alive HTTP/1.1 connection, written by hand: httpx's own overhead capped this machine at about
    60 requests/s at 64 clients, even on /health, so it measured the client rather than the servers."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        try:
            status = int((await self.reader.readline()).split()[1])
            headers = {}
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                key, _, value = line.decode("latin-1").partition(":")
                headers[key.strip().lower()] = value.strip()
            data = await self.reader.readexactly(int(headers.get("content-length", "0")))
        except (IndexError, ValueError, asyncio.IncompleteReadError, ConnectionError):
            self.close()
            raise ConnectionError("the server closed the connection or answered garbage") from None
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def drive(port: int, texts: list[str], clients: int, seconds: float, honour_retry_after: bool = False) -> dict:
    """C closed-loop clients for ``seconds``: statuses, latencies of the 200s, and failures (timeouts, dropped connections)."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    failures: dict[str, int] = {}
    reject_latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    bodies = [json.dumps({"texts": [t]}).encode() for t in texts]

    async def one_client(i: int) -> None:
        conn, k = Connection(port), i
        try:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    status, headers, _ = await asyncio.wait_for(conn.post("/predict", bodies[k % len(bodies)]), CLIENT_TIMEOUT_S)
                except (TimeoutError, ConnectionError, OSError) as exc:
                    failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                    conn.close()
                    continue
                elapsed = time.perf_counter() - started
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status == 200:
                    latencies.append(elapsed)
                elif status == 503:
                    reject_latencies.append(elapsed)
                    if honour_retry_after:
                        await asyncio.sleep(float(headers.get("retry-after", "1")))
                k += clients
        finally:
            conn.close()

    began = time.perf_counter()
    await asyncio.gather(*(one_client(i) for i in range(clients)))
    elapsed = time.perf_counter() - began
    ok = len(latencies)
    q = statistics.quantiles(latencies, n=100, method="inclusive") if ok >= 2 else [latencies[0] if ok else float("nan")] * 99
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "ok": ok,
        "requests_per_s": round(ok / elapsed, 2),
        "p50_ms": round(q[49] * 1e3, 1),
        "p99_ms": round(q[98] * 1e3, 1),
        "statuses": statuses,
        "failures": failures,
        "errors": sum(n for s, n in statuses.items() if s != "200") + sum(failures.values()),
        "p50_ms_503": round(statistics.median(reject_latencies) * 1e3, 1) if reject_latencies else None,
        "p99_ms_503": round(statistics.quantiles(reject_latencies, n=100, method="inclusive")[98] * 1e3, 1)
        if len(reject_latencies) >= 2
        else None,
    }


def measure(name: str, port: int, texts: list[str], clients: int, args) -> dict:
    load_before = os.getloadavg()[0]
    row = asyncio.run(drive(port, texts, clients, args.seconds))
    row |= {"server": name, "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}
    print(f"  {name:9s} c={clients:<3d} {row['requests_per_s']:7.1f} req/s  p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  "
          f"errors {row['errors']}  load {row['load_before']:.1f}->{row['load_after']:.1f}", flush=True)  # fmt: skip
    return row


def eval_texts(run: str, n: int = 512) -> list[str]:
    path = Path(run, "eval_predictions.jsonl")
    texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()[:n]] if path.is_file() else []
    if not texts:
        rng = random.Random(0)
        words = [
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
        texts = [" ".join(rng.choices(words, k=rng.randint(5, 30))) for _ in range(n)]
    return texts


def metrics_of(port: int) -> dict[str, float]:
    values = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="/tmp/serve-run", help="a finished classify run [default: /tmp/serve-run]")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY), help="concurrent clients [default: 1 16 64]")
    parser.add_argument("--seconds", type=float, default=12, help="load time per measurement [default: 12]")
    parser.add_argument("--warmup", type=float, default=3, help="warm-up load time per server [default: 3]")
    parser.add_argument("--serve-args", default="", help="extra `tunesmith serve` flags, e.g. '--backend onnx-int8'")
    parser.add_argument("--output", help="JSON results [default: benchmarks/results/bench_serve-<date>-<time>.json]")
    parser.add_argument("--naive-server", type=int, metavar="PORT", help=argparse.SUPPRESS)  # internal: run the naive server
    args = parser.parse_args()
    if args.naive_server:
        serve_naive(args.run, args.naive_server)
        return 0

    texts = eval_texts(args.run)
    results: dict = {"run": args.run, "texts": len(texts), "one_text_per_request": True, "cpu_count": os.cpu_count()}
    results |= {"platform": platform.platform(), "started": datetime.now(UTC).isoformat(timespec="seconds")}
    rows: list[dict] = []

    def serve(port: int, *extra: str) -> list[str]:
        return [sys.executable, "-m", "tunesmith", "serve", args.run, "--port", str(port), *args.serve_args.split(), *extra]

    # both servers stay up (an idle one costs no CPU) and take turns at each concurrency, so that whatever
    # else runs on the machine weighs on both alike
    ports = {"naive": free_port(), "tunesmith": free_port()}
    print(f"tunesmith serve on :{ports['tunesmith']} ({' '.join(serve(ports['tunesmith'])[3:])})", flush=True)
    procs = {}
    procs["tunesmith"], results["tunesmith_startup_s"] = start(serve(ports["tunesmith"]), ports["tunesmith"])
    try:
        print(f"naive server (transformers pipeline per request) on :{ports['naive']}", flush=True)
        naive_cmd = [sys.executable, __file__, "--run", args.run, "--naive-server", str(ports["naive"])]
        procs["naive"], results["naive_startup_s"] = start(naive_cmd, ports["naive"])
        info = httpx.get(f"http://127.0.0.1:{ports['tunesmith']}/info", timeout=10).json()
        results["tunesmith_backend"], results["backend_choice"], results["limits"] = info["backend"], info["backend_choice"], info["limits"]
        print(f"  tunesmith backend {info['backend']} ({(info['backend_choice'] or {}).get('how', '')})", flush=True)
        for port in ports.values():
            asyncio.run(drive(port, texts, 4, args.warmup))
        for clients in args.concurrency:
            for name, port in ports.items():
                rows.append(measure(name, port, texts, clients, args))
        m = metrics_of(ports["tunesmith"])
        results["tunesmith_mean_batch_texts"] = round(m["tunesmith_batch_size_sum"] / max(m["tunesmith_batch_size_count"], 1), 2)
    finally:
        exits = {name: stop(proc) for name, proc in procs.items()}
    results["tunesmith_exit_code"] = exits.get("tunesmith")
    results["rows"] = rows

    port = free_port()
    print(f"overload: tunesmith serve --queue {OVERLOAD_QUEUE} at {OVERLOAD_CLIENTS} clients (honouring Retry-After)", flush=True)
    proc, _ = start(serve(port, "--queue", str(OVERLOAD_QUEUE), "--backend", results["tunesmith_backend"]), port)  # measured already
    try:
        asyncio.run(drive(port, texts, 4, args.warmup))
        overload = asyncio.run(drive(port, texts, OVERLOAD_CLIENTS, args.seconds, honour_retry_after=True))
        overload["healthy_after"] = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["status"] == "ok"
        overload["alive_after"] = proc.poll() is None
    finally:
        overload["exit_code"] = stop(proc)
    results["overload"] = overload

    by = {(r["server"], r["clients"]): r for r in rows}
    print()
    print("| server | clients | req/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['server']} | {r['clients']} | {r['requests_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |")
    if ("naive", 16) in by and ("tunesmith", 16) in by:
        naive, ours = by[("naive", 16)], by[("tunesmith", 16)]
        ratio = ours["requests_per_s"] / max(naive["requests_per_s"], 1e-9)
        met = ratio >= 3 and ours["p99_ms"] < naive["p99_ms"] and all(r["errors"] == 0 for r in rows if r["server"] == "tunesmith")
        results["target"] = {"throughput_ratio_c16": round(ratio, 2), "met": met}
        print(f"\nconcurrency 16: tunesmith {ratio:.2f}x the naive server's throughput, p99 {ours['p99_ms']:.0f} vs {naive['p99_ms']:.0f} ms; "
              f"target (>= 3x, lower p99, no errors) {'met' if met else 'NOT met'}")  # fmt: skip
    print(
        f"overload (queue {OVERLOAD_QUEUE}, {OVERLOAD_CLIENTS} clients): statuses {overload['statuses']}, failures {overload['failures'] or 'none'}, "
        f"503s answered in {overload['p50_ms_503']} ms (p50) / {overload['p99_ms_503']} ms (p99), healthy after: {overload['healthy_after']}, exit code {overload['exit_code']}"
    )
    print(f"backend: {results['tunesmith_backend']}; mean texts per model call {results['tunesmith_mean_batch_texts']}; "
          f"{os.cpu_count()} CPUs shared with the load generator; load average now {os.getloadavg()[0]:.1f}")  # fmt: skip
    output = Path(args.output or Path(__file__).parent / "results" / f"bench_serve-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
