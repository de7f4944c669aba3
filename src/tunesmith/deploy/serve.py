"""Serve a finished run over HTTP (``tunesmith serve``): ``POST /predict`` with dynamic micro-batching.

:func:`create_app` builds a FastAPI app around a run directory. Requests put their texts on a bounded
queue; one background worker groups the texts of concurrent requests (up to ``max_batch`` texts or
``max_wait_ms`` after the first one), runs the model in a thread so the event loop keeps answering, and
hands each request its slice. A full queue answers 503 with ``Retry-After`` instead of growing; a request
that waits longer than ``timeout_s`` answers 504. On shutdown the queue is drained before the worker stops.

Endpoints: ``POST /predict`` ``{"texts": [...]}`` -> ``{"predictions": [...]}`` (the rows of
``Run.predict``), ``GET /health`` (never needs the API key), ``GET /info``, ``GET /metrics`` (Prometheus text).
Generative runs (sft/clm) answer the OpenAI-compatible ``/v1/chat/completions`` and ``/v1/completions``
instead of ``/predict`` (:mod:`tunesmith.deploy.openai_api`). The model behind ``/predict`` is chosen by
``backend`` (:mod:`tunesmith.deploy.backends`); ``auto`` measures the candidates at startup.
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request, imported
# inside create_app so that this module imports without the serve extra) at runtime
import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.deploy.backends import BACKENDS, load_backend, summary
from tunesmith.errors import UserError

API_KEY_ENV = "TUNESMITH_API_KEY"
SETTINGS_ENV = "TUNESMITH_SERVE_SETTINGS"  # how `--workers N` hands the settings to each worker process
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RETRY_AFTER_S = 1
ENDPOINTS = ("/predict", "/health", "/info", "/metrics", "/v1/chat/completions", "/v1/completions", "/v1/models")
log = logging.getLogger("uvicorn.error")  # the server's own log: the backend choice shows among its startup lines

Predict = Callable[[list[str]], list[dict[str, Any]]]


@dataclass
class ServeSettings:
    """Limits and options of a served run (the ``tunesmith serve`` flags)."""

    backend: str = "auto"
    """auto: the fastest of torch-fp32/torch-bf16/onnx/onnx-int8 that reproduces the run, measured at startup;
    torch: the run's model (bf16 autocast where native); onnx, onnx-int8: RUN/export/onnx[-int8] (classify)"""
    api_key: str | None = None
    """when set, /predict, /info and /metrics need ``Authorization: Bearer KEY``"""
    max_batch: int = 32
    """texts per model call; requests arriving together are grouped up to this many texts"""
    max_wait_ms: float = 5.0
    """how long the first text of a batch waits for others"""
    max_texts: int = 64
    """texts per request (more: 413)"""
    max_chars: int = 5000
    """characters per text (more: 422)"""
    queue: int = 256
    """requests waiting for the model (more: 503 with Retry-After)"""
    timeout_s: float = 30.0
    """seconds a request may wait for its predictions (more: 504)"""
    max_tokens: int = 1024
    """generative runs: tokens a completion may generate (a request asking more: 422)"""
    threads: int | None = None
    """CPU threads for the model (torch and ONNX Runtime); None: all cores, fewer when the machine is busy"""

    def validate(self) -> None:
        problems = []
        if self.backend not in BACKENDS:
            problems.append(f"`backend` must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        for name in ("max_batch", "max_texts", "max_chars", "queue", "max_tokens", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                problems.append(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            problems.append(f"`max_wait_ms` must be >= 0, got {self.max_wait_ms}")
        if self.timeout_s <= 0:
            problems.append(f"`timeout_s` must be > 0, got {self.timeout_s}")
        if problems:
            raise UserError("serve settings: " + "; ".join(problems))

    def limits(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("backend", "api_key")}


class Metrics:
    """Counters and histograms, written in the Prometheus text exposition format (version 0.0.4)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)
        self.latency: dict[str, list[float]] = {}
        self.batch_sizes: list[float] = []
        self.tokens: dict[str, int] = defaultdict(int)  # generative runs: prompt and completion tokens

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests[(endpoint, status)] += 1
        self.latency.setdefault(endpoint, []).append(seconds)
        if status >= 400:
            self.errors[_error_kind(status)] += 1

    def render(self) -> str:
        lines = ["# HELP tunesmith_requests_total HTTP requests by endpoint and status.", "# TYPE tunesmith_requests_total counter"]
        for (endpoint, status), n in sorted(self.requests.items()):
            lines.append(f'tunesmith_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')
        lines += ["# HELP tunesmith_errors_total Failed requests by kind.", "# TYPE tunesmith_errors_total counter"]
        for kind, n in sorted(self.errors.items()):
            lines.append(f'tunesmith_errors_total{{kind="{kind}"}} {n}')
        lines += ["# HELP tunesmith_request_duration_seconds Request latency.", "# TYPE tunesmith_request_duration_seconds histogram"]
        for endpoint, values in sorted(self.latency.items()):
            lines += _histogram("tunesmith_request_duration_seconds", values, LATENCY_BUCKETS, f'endpoint="{endpoint}"')
        lines += ["# HELP tunesmith_batch_size Texts per model call.", "# TYPE tunesmith_batch_size histogram"]
        lines += _histogram("tunesmith_batch_size", self.batch_sizes, BATCH_BUCKETS, "")
        if self.tokens:
            lines += ["# HELP tunesmith_tokens_total Tokens of generative requests.", "# TYPE tunesmith_tokens_total counter"]
            lines += [f'tunesmith_tokens_total{{kind="{kind}"}} {n}' for kind, n in sorted(self.tokens.items())]
        return "\n".join(lines) + "\n"


def _error_kind(status: int) -> str:
    return {401: "unauthorized", 404: "not_found", 413: "too_many_texts", 422: "invalid_request", 503: "overloaded", 504: "timeout"}.get(
        status, "server_error" if status >= 500 else "client_error"
    )


def _histogram(name: str, values: Sequence[float], buckets: Sequence[float], labels: str) -> list[str]:
    sep = "," if labels else ""
    lines = [f'{name}_bucket{{{labels}{sep}le="{b:g}"}} {sum(v <= b for v in values)}' for b in buckets]
    lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {len(values)}')
    suffix = f"{{{labels}}}" if labels else ""
    lines += [f"{name}_sum{suffix} {float(sum(values)):.6f}", f"{name}_count{suffix} {len(values)}"]
    return lines


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Groups the texts of concurrent requests into model calls; one asyncio worker, the model in one thread."""

    def __init__(self, predict: Predict, settings: ServeSettings, metrics: Metrics):
        self.predict = predict
        self.settings = settings
        self.metrics = metrics
        self.queue: asyncio.Queue[_Pending] | None = None
        self.closing = False
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunesmith-model")

    def start(self) -> None:
        """Start the worker on the running event loop (idempotent)."""
        if self._worker is None:
            self.queue = asyncio.Queue(maxsize=self.settings.queue)
            self._worker = asyncio.get_running_loop().create_task(self._work())

    def submit(self, texts: list[str]) -> asyncio.Future:
        """Queue a request's texts; raises asyncio.QueueFull when the queue is full or the server is stopping."""
        self.start()
        if self.closing:
            raise asyncio.QueueFull
        item = _Pending(texts, asyncio.get_running_loop().create_future())
        self.queue.put_nowait(item)
        return item.future

    async def stop(self, timeout_s: float) -> None:
        """Refuse new requests, let the queued ones finish (at most ``timeout_s``), then stop the worker."""
        self.closing = True
        if self._worker is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.join(), timeout_s)
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=False)

    async def run_in_model_thread(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _next_batch(self) -> list[_Pending]:
        first = await self.queue.get()
        batch, n = [first], len(first.texts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.max_wait_ms / 1000
        while n < self.settings.max_batch:
            if self.queue.empty():
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), left)
                except TimeoutError:
                    break
            else:
                item = self.queue.get_nowait()
            batch.append(item)
            n += len(item.texts)
        return batch

    async def _work(self) -> None:
        while True:
            batch = await self._next_batch()
            try:
                live = [p for p in batch if not p.future.done()]  # requests that timed out are skipped
                texts = [t for p in live for t in p.texts]
                if not texts:
                    for p in live:
                        p.future.set_result([])
                    continue
                self.metrics.batch_sizes.append(len(texts))
                try:
                    rows = await self.run_in_model_thread(lambda texts=texts: self.predict(texts))
                except Exception as exc:  # the requests of this batch answer 500; the worker carries on
                    for p in live:
                        if not p.future.done():
                            p.future.set_exception(exc)
                    continue
                start = 0
                for p in live:
                    if not p.future.done():
                        p.future.set_result(rows[start : start + len(p.texts)])
                    start += len(p.texts)
            finally:
                for _ in batch:
                    self.queue.task_done()


def _json_error(status: int, message: str, **extra: Any):
    from fastapi.responses import JSONResponse

    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def create_app(run_dir: str | Path, *, predict: Predict | None = None, **settings: Any):
    """A FastAPI app serving a finished run.

    Args:
        run_dir: run directory written by ``tunesmith train``.
        predict: replaces the model (texts -> prediction rows); for tests and custom backends.
        **settings: the fields of :class:`ServeSettings` (``backend``, ``api_key``, ``max_batch``,
            ``max_wait_ms``, ``max_texts``, ``max_chars``, ``queue``, ``timeout_s``, ``max_tokens``, ``threads``).
            ``api_key`` defaults to the ``TUNESMITH_API_KEY`` environment variable.

    Raises:
        UserError: not a finished run, an unknown setting, or an onnx backend without its export.
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import PlainTextResponse

    import tunesmith
    from tunesmith.deploy import openai_api
    from tunesmith.run import Run

    unknown = sorted(set(settings) - set(ServeSettings.__dataclass_fields__))
    if unknown:
        raise UserError(f"create_app got unknown setting(s) {', '.join(unknown)}; known: {', '.join(ServeSettings.__dataclass_fields__)}")
    cfg = ServeSettings(**settings)
    cfg.api_key = cfg.api_key or os.environ.get(API_KEY_ENV) or None
    cfg.validate()
    generative = openai_api.generative_run(run_dir)
    run = None if generative is not None else Run.load(run_dir)
    if generative is not None and predict is not None:
        raise UserError(f"{run_dir} is a generative run: it has no /predict to replace with predict=")
    if generative is not None:
        openai_api.check_backend(run_dir, cfg.backend)
    state: dict[str, Any] = {"loaded": predict is not None, "backend": None, "generator": None}
    if predict is None:
        _configure_threads(cfg)
    if predict is not None:
        state["backend"] = {"chosen": "custom", "how": "create_app(predict=...)"}
    elif cfg.backend in ("onnx", "onnx-int8") and generative is None:
        chosen = load_backend(run, cfg.backend, cfg.max_batch)  # fails here, before serving, on a missing export
        predict, state["labels"], state["backend"], state["loaded"] = chosen.predict, chosen.labels, chosen.choice, True
    elif generative is None:
        resolved: dict[str, Any] = {}

        def predict(texts: list[str]) -> list[dict[str, Any]]:
            load_model()  # also when no lifespan ran (an app mounted without startup events)
            return resolved["predict"](texts)

    metrics = Metrics()
    batcher = MicroBatcher(predict, cfg, metrics)

    def load_model() -> None:
        """Load the model (and, for ``auto``, measure the candidates) once, in the model thread."""
        if state["loaded"]:
            return
        if generative is not None:
            state["generator"], state["backend"] = openai_api.load_generator(Path(run_dir), generative, cfg.backend)
        else:
            chosen = load_backend(run, cfg.backend, cfg.max_batch)
            resolved["predict"], state["labels"], state["backend"] = chosen.predict, chosen.labels, chosen.choice
        log.info("tunesmith serve %s: %s", Path(run_dir).name, summary(state["backend"]))
        state["loaded"] = True

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        await batcher.run_in_model_thread(load_model)
        yield
        await batcher.stop(cfg.timeout_s)

    app = FastAPI(title=f"tunesmith {Path(run_dir).name}", version=tunesmith.__version__, lifespan=lifespan)
    app.state.settings, app.state.metrics, app.state.batcher, app.state.run = cfg, metrics, batcher, run
    app.state.started = time.time()
    if generative is not None:

        async def generator():
            if not state["loaded"]:
                await batcher.run_in_model_thread(load_model)
            return state["generator"]

        openai_api.add_routes(app, Path(run_dir).name, generator, cfg, metrics, batcher)

    @app.middleware("http")
    async def guard_and_measure(request: Request, call_next):
        started = time.perf_counter()
        path = request.url.path
        if cfg.api_key and path != "/health" and not _authorized(request.headers.get("authorization", ""), cfg.api_key):
            message = "missing or wrong API key: send the header `Authorization: Bearer KEY`"
            response = openai_api.openai_error(401, message) if path.startswith("/v1/") else _json_error(401, message)
        else:
            response = await call_next(request)
        metrics.observe_request(path if path in ENDPOINTS else "other", response.status_code, time.perf_counter() - started)
        return response

    @app.post("/predict")
    async def predict_endpoint(request: Request):
        if generative is not None:
            return _json_error(404, f"{Path(run_dir).name} is a generative run: use POST /v1/chat/completions or /v1/completions")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _json_error(422, 'the body is not valid JSON; send {"texts": ["..."]}')
        if not isinstance(body, dict) or not isinstance(body.get("texts"), list):
            got = type(body.get("texts")).__name__ if isinstance(body, dict) and "texts" in body else "no `texts` key"
            return _json_error(422, f'expected a JSON object {{"texts": ["...", ...]}} with a list of strings, got {got}')
        texts = body["texts"]
        if len(texts) > cfg.max_texts:
            msg = f"{len(texts)} texts in one request, at most {cfg.max_texts}: split the request"
            return _json_error(413, msg, limit="max_texts", max_texts=cfg.max_texts, received=len(texts))
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                return _json_error(422, f"texts[{i}] is a {type(text).__name__}, expected a string", index=i)
            if len(text) > cfg.max_chars:
                msg = f"texts[{i}] has {len(text)} characters, at most {cfg.max_chars}: shorten or split it"
                return _json_error(422, msg, limit="max_chars", index=i, max_chars=cfg.max_chars)
        if not texts:
            return {"predictions": []}
        try:
            future = batcher.submit(texts)
        except asyncio.QueueFull:
            why = "the server is shutting down" if batcher.closing else f"{cfg.queue} requests are already waiting"
            return _json_error(503, f"overloaded: {why}; retry after {RETRY_AFTER_S}s", limit="queue")
        try:
            rows = await asyncio.wait_for(asyncio.shield(future), cfg.timeout_s)
        except TimeoutError:
            future.cancel()  # the worker skips it if it has not run yet
            return _json_error(504, f"no prediction within {cfg.timeout_s:g}s", limit="timeout_s")
        except Exception as exc:
            return _json_error(500, f"prediction failed: {type(exc).__name__}: {exc}")
        return {"predictions": rows}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model_loaded": state["loaded"]}

    @app.get("/info")
    async def info():
        if generative is not None:
            gen = state["generator"]
            task, model = str(generative.get("task") or "causal-lm"), str((generative.get("model") or {}).get("model") or "")
            labels, extra = None, {"endpoints": list(openai_api.ENDPOINTS), "chat_template": bool(gen and gen.has_chat_template)}
        else:
            task, model = run.config.task, run.config.model.model
            labels = state.get("labels") or (
                getattr(run.predictor, "labels", None) if state["loaded"] and state["backend"] is None else None
            )
            extra = {}
        choice = state["backend"] or {}
        return {
            "run": Path(run_dir).name,
            "task": task,
            "labels": list(labels) if labels is not None else None,
            "model": model,
            "tunesmith_version": tunesmith.__version__,
            "backend": choice.get("chosen", cfg.backend),
            "backend_choice": choice or None,
            "limits": cfg.limits(),
            **extra,
        }

    @app.get("/metrics")
    async def metrics_endpoint():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    return app


def _configure_threads(cfg: ServeSettings) -> None:
    """The training rule for threads: on a busy machine a multi-threaded torch call waits for descheduled threads
    (MiniLM batch 1 at load 6 on 2 cores: 295-920 ms with 2 threads, 35 ms with 1), so leave busy cores alone."""
    from tunesmith.training.hardware import configure_threads

    threads, busy = configure_threads(cfg.threads)
    cfg.threads = threads
    if busy:
        load = os.getloadavg()[0]
        log.warning("the machine is busy (1-minute load %.1f); serving with %d thread(s); pass --threads N to override", load, threads)


def _authorized(header: str, api_key: str) -> bool:
    scheme, _, token = header.partition(" ")
    return hmac.compare_digest(token.strip().encode(), api_key.encode()) and scheme.lower() == "bearer"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def app_from_env():
    """App factory for ``uvicorn --factory`` worker processes (``tunesmith serve --workers N``)."""
    spec = json.loads(os.environ[SETTINGS_ENV])
    return create_app(spec.pop("run_dir"), **spec)


def serve(run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, **settings: Any) -> None:
    """Serve a run with uvicorn until interrupted (``tunesmith serve``); accepted requests finish before exit."""
    import uvicorn

    if workers < 1:
        raise UserError(f"`workers` must be >= 1, got {workers}")
    if workers == 1:
        app = create_app(run_dir, **settings)
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=settings.get("timeout_s", 30))
        return
    create_app(run_dir, **settings)  # fail here, once, on a bad run or setting rather than in every worker
    if settings.get("backend", "auto") == "auto":
        from tunesmith.deploy import openai_api
        from tunesmith.run import Run

        if openai_api.generative_run(run_dir) is None:  # measure once here, not in every worker at the same time
            chosen = load_backend(Run.load(run_dir), "auto", settings.get("max_batch", ServeSettings.max_batch))
            print(f"tunesmith serve: {summary(chosen.choice)}", flush=True)
            settings = {**settings, "backend": chosen.name}
    os.environ[SETTINGS_ENV] = json.dumps({"run_dir": str(run_dir), **settings})
    uvicorn.run("tunesmith.deploy.serve:app_from_env", factory=True, host=host, port=port, workers=workers, log_level="info")
