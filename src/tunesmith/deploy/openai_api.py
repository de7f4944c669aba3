"""OpenAI-compatible text generation for generative runs (``tunesmith serve`` on an sft/clm run).

``POST /v1/chat/completions`` (the tokenizer's chat template), ``POST /v1/completions`` (a raw prompt) and
``GET /v1/models``, answered in the OpenAI wire format, with ``"stream": true`` as server-sent events
(``data: {chunk}`` lines, then ``data: [DONE]``). One generation runs at a time, in the server's model
thread; requests beyond the queue limit answer 503 with Retry-After, a generation past ``timeout_s`` is
stopped (504, or an error event when streaming), and a client that disconnects stops its generation.
Auth, limits and metrics are the server's own (:mod:`tunesmith.deploy.serve`); errors here use OpenAI's
``{"error": {"message", "type", "param", "code"}}`` shape so that OpenAI client libraries read them.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request  # at module level: FastAPI resolves the handlers' (string) annotations here

from tunesmith.errors import UserError

GENERATIVE_TASKS = ("sft", "clm", "dpo")  # tasks whose run/model is a causal LM
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/models")
ROLES = ("system", "user", "assistant", "tool", "developer")
MAX_STOP = 4  # as OpenAI
DEFAULT_MAX_TOKENS = 256  # when a request sets neither max_tokens nor max_completion_tokens (capped by --max-tokens)


def generative_run(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's raw config when its model generates text (task sft/clm/dpo, or a ``*ForCausalLM`` model), else None.

    Read without validating against :class:`tunesmith.config.RunConfig`, so that serving does not depend on
    which tasks this installation registers.
    """
    import yaml

    run = Path(run_dir)
    try:
        config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        model_config = json.loads((run / "model" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None  # Run.load explains what is missing
    if not isinstance(config, dict) or not isinstance(model_config, dict):
        return None
    architectures = model_config.get("architectures") or []
    causal = bool(architectures) and all(str(a).endswith("ForCausalLM") for a in architectures)
    return config if config.get("task") in GENERATIVE_TASKS or causal else None


def openai_error(status: int, message: str, *, param: str | None = None, code: str | None = None, **extra: Any):
    """An OpenAI-shaped JSON error (``type`` from the status); 503 carries Retry-After."""
    from fastapi.responses import JSONResponse

    from tunesmith.deploy.serve import RETRY_AFTER_S

    kind = {401: "authentication_error", 503: "overloaded_error", 504: "timeout_error"}.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}, **extra}
    return JSONResponse(body, status_code=status, headers=headers)


class RequestError(Exception):
    """A request the server refuses; becomes :func:`openai_error`."""

    def __init__(self, status: int, message: str, param: str | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.param, self.extra = status, message, param, extra

    def response(self):
        return openai_error(self.status, self.message, param=self.param, code=self.extra.get("limit"), **self.extra)


# ---------------------------------------------------------------- the model


class Generator:
    """A run's causal LM and tokenizer, generating one request at a time."""

    def __init__(self, run_dir: Path, config: dict[str, Any], precision: str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from tunesmith.training.runner import quiet_transformers

        quiet_transformers()
        model_dir = run_dir / "model"
        self.name = run_dir.name
        self.task = str(config.get("task") or "causal-lm")
        self.base_model = str((config.get("model") or {}).get("model") or model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.precision = precision
        self.context = int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or None
        eos = self.model.generation_config.eos_token_id
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else next(iter(self.eos_ids), 0)
        self.has_chat_template = bool(getattr(self.tokenizer, "chat_template", None))

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of the conversation through the chat template, ending with the assistant's turn."""
        if not self.has_chat_template:
            raise RequestError(422, f"run {self.name}'s tokenizer has no chat template; send a plain prompt to /v1/completions", "messages")
        # control tokens inside messages are encoded as text: a user cannot forge a turn of another role
        enc = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, sanitize_control_tokens=True)
        return list(enc["input_ids"])

    def text_prompt(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt)["input_ids"])

    def generate(self, ids: list[int], params: GenerationParams, stream: TokenStream) -> None:
        """Run ``model.generate`` in this thread, pushing the new token ids to ``stream``; stops when it is cancelled."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        from tunesmith.tasks.inference import autocast_context

        if stream.cancelled.is_set():  # timed out or disconnected while waiting for the model
            stream.end()
            return

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), stream.cancelled.is_set(), dtype=torch.bool)

        sampling = {"do_sample": False}
        if params.temperature > 0:
            sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
            if params.seed is not None:
                torch.manual_seed(params.seed)
        input_ids = torch.tensor([ids])
        try:
            with torch.inference_mode(), autocast_context(self.precision, input_ids.device):
                self.model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=params.max_tokens,
                    min_new_tokens=0,
                    pad_token_id=self.pad_id,
                    eos_token_id=sorted(self.eos_ids) or None,
                    streamer=stream,
                    stopping_criteria=StoppingCriteriaList([Cancelled()]),
                    **sampling,
                )
        except Exception as exc:
            stream.fail(exc)
            raise


class TokenStream:
    """A ``generate`` streamer that hands token ids from the model thread to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue[list[int] | BaseException | None] = asyncio.Queue()
        self.cancelled = threading.Event()
        self._prompt_seen = False

    def _send(self, item) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate() first pushes the prompt
            self._prompt_seen = True
            return
        self._send([int(t) for t in value.reshape(-1).tolist()])

    def end(self) -> None:
        self._send(None)

    def fail(self, exc: BaseException) -> None:
        self._send(exc)


# ---------------------------------------------------------------- requests


@dataclass
class GenerationParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False


def _number(body: dict, key: str, default: float, low: float, high: float, *, integer: bool = False, low_open: bool = False):
    value = body.get(key)
    if value is None:
        return default
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value < low or value > high or (low_open and value == low):
        lower = f"> {low:g}" if low_open else f">= {low:g}"
        raise RequestError(422, f"`{key}` must be {'an integer' if integer else 'a number'} {lower} and <= {high:g}, got {value!r}", key)
    return value


def parse_params(body: dict[str, Any], max_tokens_limit: int) -> GenerationParams:
    """Sampling parameters of an OpenAI request, checked against the server's limits."""
    for key, allowed in (("n", 1), ("best_of", 1)):
        if body.get(key) not in (None, allowed):
            raise RequestError(422, f"`{key}` must be 1: this server generates one choice per request; send several requests", key)
    if body.get("logprobs") not in (None, False) or body.get("echo"):
        key = "logprobs" if body.get("logprobs") not in (None, False) else "echo"
        raise RequestError(422, f"`{key}` is not supported by this server; leave it out", key)
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    requested = body.get(key)
    if requested is not None and isinstance(requested, int) and not isinstance(requested, bool) and requested > max_tokens_limit:
        raise RequestError(
            422, f"`{key}` is {requested}, at most {max_tokens_limit} on this server", key, limit="max_tokens", max_tokens=max_tokens_limit
        )
    max_tokens = _number(body, key, min(DEFAULT_MAX_TOKENS, max_tokens_limit), 1, max_tokens_limit, integer=True)
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else stop
    if stop is not None and (not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop)):
        raise RequestError(
            422, f"`stop` must be a non-empty string or a list of at most {MAX_STOP} of them, got {body.get('stop')!r}", "stop"
        )
    options = body.get("stream_options") or {}
    if not isinstance(body.get("stream", False), bool) or not isinstance(options, dict):
        raise RequestError(422, "`stream` must be true or false and `stream_options` an object", "stream")
    return GenerationParams(
        max_tokens=int(max_tokens),
        temperature=float(_number(body, "temperature", 1.0, 0.0, 2.0)),
        top_p=float(_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True)),
        stop=list(stop or []),
        seed=_number(body, "seed", None, -(2**63), 2**63 - 1, integer=True),
        stream=bool(body.get("stream", False)),
        include_usage=bool(options.get("include_usage", False)),
    )


def parse_messages(body: dict[str, Any], max_chars: int) -> list[dict[str, str]]:
    """The chat messages, contents flattened to text (OpenAI's list-of-parts form is accepted for text parts)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(422, 'expected `messages`: a non-empty list of {"role": "user", "content": "..."} objects', "messages")
    out, total = [], 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            got = m.get("role") if isinstance(m, dict) else type(m).__name__
            raise RequestError(422, f"messages[{i}] needs a `role` among {', '.join(ROLES)}, got {got!r}", f"messages[{i}].role")
        content = m.get("content")
        if isinstance(content, list):
            parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            if len(parts) != len(content) or not all(isinstance(p, str) for p in parts):
                raise RequestError(422, f"messages[{i}].content: only text parts are supported", f"messages[{i}].content")
            content = "".join(parts)
        if not isinstance(content, str):
            raise RequestError(422, f"messages[{i}].content must be a string, got {type(content).__name__}", f"messages[{i}].content")
        total += len(content)
        out.append({"role": "system" if m["role"] == "developer" else m["role"], "content": content})
    if total > max_chars:
        raise RequestError(
            422,
            f"the messages hold {total} characters, at most {max_chars}: shorten them",
            "messages",
            limit="max_chars",
            max_chars=max_chars,
        )
    return out


def parse_prompt(body: dict[str, Any], max_chars: int) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise RequestError(422, "expected `prompt`: one string (this server completes one prompt per request)", "prompt")
    if len(prompt) > max_chars:
        raise RequestError(
            422, f"`prompt` has {len(prompt)} characters, at most {max_chars}: shorten it", "prompt", limit="max_chars", max_chars=max_chars
        )
    return prompt


# ---------------------------------------------------------------- decoding the stream


class _Detokenizer:
    """Turns token ids into text deltas, holding back what might still become a stop string or a split character."""

    def __init__(self, tokenizer, stop: Sequence[str]):
        self.tokenizer, self.stop = tokenizer, list(stop)
        self.ids: list[int] = []
        self.sent = 0  # characters of the decoded text already handed out
        self.stopped = False

    def feed(self, ids: list[int]) -> str:
        self.ids += ids
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        hits = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            return self._take(text, min(hits))
        safe = len(text)
        if text.endswith("\ufffd"):  # a multi-byte character is split across tokens: wait for the rest
            safe = len(text.rstrip("\ufffd"))
        for s in self.stop:  # a suffix that begins a stop string may still grow into it
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    safe = min(safe, len(text) - k)
                    break
        return self._take(text, safe)

    def flush(self) -> str:
        return "" if self.stopped else self._take(self.tokenizer.decode(self.ids, skip_special_tokens=True), None)

    def _take(self, text: str, end: int | None) -> str:
        end = len(text) if end is None else end
        delta = text[self.sent : end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return delta


async def _generate(
    gen: Generator, ids, params: GenerationParams, run_in_model_thread, timeout_s: float
) -> AsyncIterator[tuple[str, dict]]:
    """Text deltas as they come, then ``("", {"finish_reason", "completion_tokens"})``; raises TimeoutError past ``timeout_s``."""
    loop = asyncio.get_running_loop()
    stream = TokenStream(loop)
    detok = _Detokenizer(gen.tokenizer, params.stop)
    job = asyncio.ensure_future(run_in_model_thread(lambda: gen.generate(ids, params, stream)))
    job.add_done_callback(lambda j: j.cancelled() or j.exception())  # its error, if any, also arrives through the stream
    deadline = loop.time() + timeout_s
    finish = "length"
    try:
        while True:
            item = await asyncio.wait_for(stream.queue.get(), max(deadline - loop.time(), 0.0))
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            if any(t in gen.eos_ids for t in item):
                finish = "stop"
            delta = detok.feed([t for t in item if t not in gen.eos_ids])
            if detok.stopped:
                finish = "stop"
                stream.cancelled.set()
            if delta:
                yield delta, {}
            if detok.stopped:
                break
        tail = detok.flush()
        if tail:
            yield tail, {}
        yield "", {"finish_reason": finish, "completion_tokens": len(detok.ids)}
    finally:
        stream.cancelled.set()  # a timeout, a disconnected client or a stop string: the model stops at the next token


# ---------------------------------------------------------------- routes


class _Admitted:
    """How many generation requests hold a place (running or waiting); each place is released exactly once."""

    def __init__(self) -> None:
        self.count = 0

    def take(self) -> Callable[[], None]:
        self.count += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.count -= 1

        return release


def add_routes(app, name: str, generator: Callable[[], Awaitable[Generator]], cfg, metrics, batcher) -> None:
    """Register the OpenAI endpoints on a :func:`tunesmith.deploy.serve.create_app` app.

    ``generator`` returns the loaded :class:`Generator` (loading it in the model thread on first use when the
    app was started without its lifespan); ``name`` is the model id the endpoints answer with.
    """
    from fastapi.responses import StreamingResponse

    admitted = _Admitted()  # requests waiting for the model thread or running in it

    async def read_body(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise RequestError(422, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise RequestError(422, f"expected a JSON object, got {type(body).__name__}")
        return body

    async def complete(request: Request, chat: bool):
        gen = await generator()
        try:
            body = await read_body(request)
            params = parse_params(body, cfg.max_tokens)
            ids = gen.chat_prompt(parse_messages(body, cfg.max_chars)) if chat else gen.text_prompt(parse_prompt(body, cfg.max_chars))
            if gen.context and len(ids) + params.max_tokens > gen.context:
                raise RequestError(
                    422,
                    f"the prompt has {len(ids)} tokens and max_tokens is {params.max_tokens}: more than the model's context of {gen.context}",
                    "max_tokens",
                    limit="context",
                )
            if batcher.closing or admitted.count > cfg.queue:  # one running, `queue` waiting
                why = "the server is shutting down" if batcher.closing else f"{cfg.queue} requests are already waiting"
                raise RequestError(503, f"overloaded: {why}; retry later", limit="queue")
        except RequestError as exc:
            return exc.response()
        release = admitted.take()
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        tokens = _generate(gen, ids, params, batcher.run_in_model_thread, cfg.timeout_s)

        def usage(done: dict) -> dict[str, int]:
            metrics.tokens["prompt"] += len(ids)
            metrics.tokens["completion"] += done["completion_tokens"]
            return {
                "prompt_tokens": len(ids),
                "completion_tokens": done["completion_tokens"],
                "total_tokens": len(ids) + done["completion_tokens"],
            }

        if not params.stream:
            text, done = [], {}
            try:
                async for delta, last in tokens:
                    text.append(delta)
                    done = last or done
            except TimeoutError:
                return openai_error(504, f"no completion within {cfg.timeout_s:g}s", code="timeout_s", limit="timeout_s")
            except Exception as exc:
                return openai_error(500, f"generation failed: {type(exc).__name__}: {exc}")
            finally:
                release()
            content = "".join(text)
            choice = {"index": 0, "finish_reason": done["finish_reason"]}
            choice |= {"message": {"role": "assistant", "content": content}} if chat else {"text": content, "logprobs": None}
            return {"id": ident, "object": kind, "created": created, "model": gen.name, "choices": [choice], "usage": usage(done)}

        def chunk(delta: str | None, finish: str | None, *, first: bool = False) -> str:
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
            if chat:
                choice["delta"] = {"role": "assistant", "content": ""} if first else {} if delta is None else {"content": delta}
            else:
                choice |= {"text": delta or "", "logprobs": None}
            payload = {"id": ident, "object": kind + (".chunk" if chat else ""), "created": created, "model": gen.name, "choices": [choice]}
            if params.include_usage:
                payload["usage"] = None
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        async def events() -> AsyncIterator[str]:
            try:
                if chat:
                    yield chunk(None, None, first=True)
                async for delta, done in tokens:
                    if done:
                        counted = usage(done)  # counted in the metrics whether or not the client asked for it
                        yield chunk(None, done["finish_reason"])
                        if params.include_usage:
                            tail = {"id": ident, "object": kind + (".chunk" if chat else ""), "created": created, "model": gen.name}
                            yield f"data: {json.dumps({**tail, 'choices': [], 'usage': counted})}\n\n"
                    else:
                        yield chunk(delta, None)
            except TimeoutError:
                metrics.errors["timeout"] += 1
                yield f"data: {json.dumps({'error': {'message': f'no completion within {cfg.timeout_s:g}s', 'type': 'timeout_error', 'param': None, 'code': 'timeout_s'}})}\n\n"
            except Exception as exc:
                metrics.errors["server_error"] += 1
                yield f"data: {json.dumps({'error': {'message': f'generation failed: {type(exc).__name__}: {exc}', 'type': 'server_error', 'param': None, 'code': None}})}\n\n"
            finally:
                release()
                await tokens.aclose()
            yield "data: [DONE]\n\n"

        body = events()
        weakref.finalize(body, release)  # a client gone before the first byte: the stream never starts, its slot is freed
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(body, media_type="text/event-stream", headers=headers)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await complete(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, chat=False)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": int(app.state.started), "owned_by": "tunesmith"}]}


def load_generator(run_dir: Path, config: dict[str, Any], backend: str) -> tuple[Generator, dict[str, Any]]:
    """The generator for ``--backend`` (auto/torch: bf16 autocast where the hardware has it; torch-fp32/torch-bf16 forced)."""
    from tunesmith.training.hardware import resolve_precision

    check_backend(run_dir, backend)
    precision = backend.removeprefix("torch-") if backend in ("torch-fp32", "torch-bf16") else resolve_precision("auto")
    how = (
        f"--backend {backend}"
        if backend in ("torch-fp32", "torch-bf16")
        else f"--backend {backend}: generative runs are served by PyTorch, bf16 autocast where the hardware has native bf16"
    )
    return Generator(Path(run_dir), config, precision), {"chosen": f"torch-{precision}", "how": how}


def check_backend(run_dir: str | Path, backend: str) -> None:
    """Generative runs are served by PyTorch: refuse an ONNX backend before the server starts."""
    if backend.startswith("onnx"):
        raise UserError(f"--backend {backend} serves exported classify runs; {run_dir} is a generative run: use --backend auto or torch")
