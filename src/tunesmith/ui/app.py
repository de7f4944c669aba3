"""The web UI's HTTP side (``tunesmith ui``): a FastAPI app serving the pages and a small JSON API.

Pages are static files shipped in the package (``tunesmith/ui/static``: HTML, CSS and JavaScript modules, no
build step, nothing fetched from the network). The API reads the runs directory (:mod:`tunesmith.ui.rundirs`),
checks and starts runs (:mod:`tunesmith.ui.newrun`, :mod:`tunesmith.ui.jobs`), pushes live progress as
server-sent events, and answers the try box and the chat with generative runs (:mod:`tunesmith.ui.tryout`).

Safety: loopback by default; requests must name an allowed Host (no DNS rebinding); requests that change
something need the ``X-Tunesmith: 1`` header, which a cross-site form or image cannot send; files are served
from inside the runs directory only.
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations at runtime
import asyncio
import contextlib
import json
import time
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

from tunesmith.errors import UserError
from tunesmith.ui import newrun, rundirs, tryout
from tunesmith.ui.jobs import JobManager

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
CSRF_HEADER = "x-tunesmith"
EVENT_POLL_S = 0.5
HEARTBEAT_S = 15.0
LOG_TAIL_BYTES = 6000
_TEXT_TYPES = {".json": "application/json", ".jsonl": "text/plain", ".yaml": "text/plain", ".log": "text/plain", ".txt": "text/plain"}
# the report is tunesmith's own HTML, but it quotes the user's texts: no scripts, no requests, ever
REPORT_CSP = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-src 'self'; object-src 'none'; base-uri 'none'"
)


class Guard:
    """ASGI middleware: refuse foreign Host headers and state-changing requests without the UI's header."""

    def __init__(self, app, allowed_hosts: tuple[str, ...] | None):
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.responses import JSONResponse

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        hostname = host[1:].split("]")[0] if host.startswith("[") else host.rsplit(":", 1)[0]
        problem = None
        if self.allowed_hosts is not None and hostname not in self.allowed_hosts:
            problem = (403, f"host {host!r} is not allowed; open the UI as http://127.0.0.1:PORT (or start it with --host)")
        elif scope["method"] not in ("GET", "HEAD", "OPTIONS") and headers.get(CSRF_HEADER) != "1":
            problem = (403, "requests that change something need the header `X-Tunesmith: 1` (the UI's pages send it)")
        if problem:
            await JSONResponse({"error": problem[1]}, status_code=problem[0])(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                names = {k.lower() for k, _ in message.get("headers", [])}
                if b"content-security-policy" not in names:
                    extra.append((b"content-security-policy", PAGE_CSP.encode()))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    runs_dir: str | Path = "runs",
    *,
    max_upload_bytes: int = newrun.DEFAULT_MAX_UPLOAD_BYTES,
    allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS,
    max_jobs: int = 1,
    python: str | None = None,
    shutdown_timeout_s: float = 60.0,
):
    """The UI's FastAPI app over ``runs_dir`` (created if missing).

    Args:
        runs_dir: the directory whose runs the UI lists, and where it writes new runs and uploads.
        max_upload_bytes: largest data file an upload may be.
        allowed_hosts: Host header names accepted (None: any, for a UI served behind a proxy).
        max_jobs: trainings at once.
        python: interpreter for the training workers [default: this one].
        shutdown_timeout_s: on shutdown, how long cancelled trainings get to write their checkpoint.
    """
    from fastapi import Body, FastAPI, Query, Request
    from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool

    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    jobs = JobManager(root, max_jobs=max_jobs, python=python)
    predictors = tryout.Predictors()
    generators = tryout.Generators()
    static = Path(str(files("tunesmith.ui") / "static"))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        stopped = await run_in_threadpool(jobs.shutdown, shutdown_timeout_s)
        if stopped:
            print(f"tunesmith ui: cancelled {', '.join(stopped)} (checkpoint kept; resume from the run page)", flush=True)

    app = FastAPI(title="tunesmith ui", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, allowed_hosts=allowed_hosts)
    app.state.jobs = jobs
    app.state.root = root

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        status = getattr(exc, "status", None) or (413 if isinstance(exc, tryout.TooMuch) else 422)
        return JSONResponse({"error": str(exc)}, status_code=status)

    def run_dir(run_id: str) -> Path:
        try:
            return rundirs.resolve_run(root, run_id)
        except UserError as exc:
            raise NotFound(str(exc)) from None

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        return JSONResponse({"error": str(exc)}, status_code=404)

    # ------------------------------------------------------------ pages

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(static / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=static), name="static")

    # ------------------------------------------------------------ reading runs

    info_cache: dict[str, Any] = {}

    @app.get("/api/info")
    async def info():
        # the packaged datasets are counted by reading them: once per server is enough
        if not info_cache:
            info_cache.update(await run_in_threadpool(_info, root, max_upload_bytes))
        return info_cache

    @app.get("/api/runs")
    async def runs():
        return {"runs": await run_in_threadpool(rundirs.list_runs, root, jobs.live()), "active": jobs.active()}

    @app.get("/api/run")
    async def run(id: str):
        path = run_dir(id)
        detail = await run_in_threadpool(rundirs.run_detail, root, rundirs.run_id_of(root, path), live=jobs.is_live(id))
        return {**detail, "cancellable": bool(jobs.is_live(id))}  # only this UI's workers take a cancel

    @app.get("/api/run/file")
    async def run_file(id: str, path: str):
        try:
            file = rundirs.resolve_run_file(root, id, path)
        except UserError as exc:
            raise NotFound(str(exc)) from None
        suffix = file.suffix.lower()
        if suffix == ".html":
            return FileResponse(file, media_type="text/html", headers={"Content-Security-Policy": REPORT_CSP, "Cache-Control": "no-cache"})
        if suffix in _TEXT_TYPES:
            return FileResponse(file, media_type=_TEXT_TYPES[suffix], headers={"Cache-Control": "no-cache"})
        return FileResponse(file, media_type="application/octet-stream", filename=file.name)

    @app.get("/api/run/events")
    async def events(request: Request, id: str, offset: int = 0):
        path = run_dir(id)
        return StreamingResponse(
            _event_stream(request, path, id, max(0, offset), jobs),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/api/compare")
    async def compare(id: Annotated[list[str], Query()] = []):  # noqa: B006 (FastAPI copies defaults)
        for rid in id:
            run_dir(rid)
        return await run_in_threadpool(rundirs.compare_runs, root, id)

    # ------------------------------------------------------------ acting on runs

    @app.post("/api/run/predict")
    async def predict(id: str, body: Annotated[dict[str, Any], Body()]):
        path = run_dir(id)
        texts = tryout.check_texts(body.get("texts"))
        return await run_in_threadpool(predictors.predict, path, texts)

    @app.post("/api/run/chat")
    async def chat(id: str, body: Annotated[dict[str, Any], Body()]):
        path = run_dir(id)
        messages = tryout.check_messages(body.get("messages"))
        sampling = tryout.sampling_from(body)
        generator, lock = await run_in_threadpool(generators.get, path)
        return StreamingResponse(
            tryout.reply_stream(generator, lock, messages, sampling),
            media_type="text/plain; charset=utf-8",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/api/run/cancel")
    async def cancel(id: str):
        run_dir(id)
        jobs.cancel(id)
        return {"id": id, "cancelling": True}

    @app.post("/api/run/resume")
    async def resume(id: str):
        path = run_dir(id)
        jobs.resume(path)
        return {"id": id, "started": True}

    @app.post("/api/uploads")
    async def upload(request: Request, name: str):
        declared = request.headers.get("content-length")
        saved = await newrun.save_upload(
            request.stream(), name, root, max_upload_bytes, int(declared) if declared and declared.isdigit() else None
        )
        return await run_in_threadpool(newrun.inspect_upload, saved, name)

    @app.post("/api/check")
    async def check(form: Annotated[dict[str, Any], Body()]):
        config, target = newrun.form_config(form, root)
        result = await run_in_threadpool(newrun.check_data, config)
        return {"name": target.name, "exists": target.exists(), "config": config.model_dump(mode="json"), **result}

    @app.post("/api/runs")
    async def start(form: Annotated[dict[str, Any], Body()]):
        config, target = newrun.form_config(form, root)
        job = jobs.start(config.model_dump(mode="json"), target)
        return {"id": job.run_id}

    return app


class NotFound(Exception):
    """A run or file the UI does not have (HTTP 404)."""


def _info(root: Path, max_upload_bytes: int) -> dict[str, Any]:
    import typing

    from tunesmith import __version__
    from tunesmith.config import RunConfig, flat_fields
    from tunesmith.data.packaged import list_datasets
    from tunesmith.models.registry import list_models

    fields = flat_fields()
    defaults = {k: info.get_default(call_default_factory=True) for k, (_, info) in fields.items() if k in newrun.FORM_KEYS}
    return {
        "version": __version__,
        "runs_dir": str(root),
        "max_upload_bytes": max_upload_bytes,
        "extensions": list(newrun.DATA_EXTENSIONS),
        "tasks": list(typing.get_args(RunConfig.model_fields["task"].annotation)),
        "methods": list(typing.get_args(fields["method"][1].annotation)),
        "defaults": defaults,
        "help": {k: info.description for k, (_, info) in fields.items()},
        "datasets": list_datasets(),
        "models": list_models(),
        "limits": {"texts": tryout.MAX_TEXTS, "chars": tryout.MAX_CHARS},
    }


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


async def _event_stream(request, path: Path, run_id: str, offset: int, jobs: JobManager):
    """Server-sent events for one run: ``history`` (new history.jsonl lines), ``progress`` (progress.json when it
    changes), ``log`` (the end of train.log when it grows), ``status``; then ``done`` once the run is no longer training."""
    last_progress = None
    last_status = None
    last_log_size = -1
    last_beat = time.monotonic()
    while True:
        if await request.is_disconnected():
            return
        records, offset = rundirs.read_jsonl(path / "history.jsonl", offset)
        if records:
            yield _sse("history", {"records": records, "offset": offset})
        progress = rundirs.read_json(path / rundirs.PROGRESS)
        if progress is not None and progress != last_progress:
            last_progress = progress
            yield _sse("progress", progress)
        log = path / rundirs.TRAIN_LOG
        log_size = log.stat().st_size if log.is_file() else 0
        if log_size != last_log_size:
            last_log_size = log_size
            yield _sse("log", {"text": rundirs.tail(log, LOG_TAIL_BYTES)})
        status = rundirs.run_status(path, progress, jobs.is_live(run_id))
        if status != last_status:
            last_status = status
            yield _sse("status", {"status": status})
        if status != "running":
            yield _sse("done", {"status": status})
            return
        if time.monotonic() - last_beat > HEARTBEAT_S:
            last_beat = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(EVENT_POLL_S)


def run_ui(
    runs_dir: str | Path = "runs",
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_upload_bytes: int = newrun.DEFAULT_MAX_UPLOAD_BYTES,
) -> None:
    """Serve the UI with uvicorn until interrupted; trainings still running are cancelled (checkpoint kept)."""
    import uvicorn

    from tunesmith.deploy.serve import is_loopback

    allowed = LOOPBACK_HOSTS if is_loopback(host) else None
    app = create_app(runs_dir, max_upload_bytes=max_upload_bytes, allowed_hosts=allowed)
    uvicorn.run(app, host=host, port=port, log_level="warning")
