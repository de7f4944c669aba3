"""The run page's try box: ``Run.predict`` of a finished run (every task), and for a generative run (sft, dpo,
clm, seq2seq) a chat whose reply streams as it is generated, through :mod:`tunesmith.generate` when that package
is installed.

Loaded runs are kept (the last :data:`KEEP` of them) so a second question does not reload the model; a run
whose model directory changed since (resumed and finished again) is reloaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import queue
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError

KEEP = 2
KEEP_GENERATORS = 1
MAX_TEXTS = 32
MAX_CHARS = 5000
MAX_TURNS = 20
MAX_NEW_TOKENS = 128
MAX_NEW_TOKENS_LIMIT = 1024


class TooMuch(UserError):
    """More texts, or longer ones, than the try box takes (HTTP 413)."""


def check_texts(texts: Any) -> list[str]:
    """The non-empty texts of a request.

    Raises:
        UserError: not a list of strings, or nothing to predict; :class:`TooMuch` past the limits.
    """
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise UserError('send {"texts": ["a text", ...]}: a list of strings')
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise UserError("type a text to try (one per line)")
    if len(texts) > MAX_TEXTS:
        raise TooMuch(f"{len(texts)} texts at once; the try box takes at most {MAX_TEXTS} (use `tunesmith predict --input FILE` for more)")
    long = [i + 1 for i, t in enumerate(texts) if len(t) > MAX_CHARS]
    if long:
        raise TooMuch(f"text {long[0]} has more than {MAX_CHARS} characters; shorten it")
    return texts


class Predictors:
    """Loads runs on first use and keeps the last few; one prediction at a time per run."""

    def __init__(self, keep: int = KEEP):
        self.keep = keep
        self._runs: OrderedDict[Path, tuple[float, Any, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()

    def _run(self, run_dir: Path):
        from tunesmith.run import Run

        stamp = (run_dir / "model" / "config.json").stat().st_mtime if (run_dir / "model" / "config.json").is_file() else 0.0
        with self._lock:
            cached = self._runs.get(run_dir)
            if cached is not None and cached[0] == stamp:
                self._runs.move_to_end(run_dir)
                return cached[1], cached[2]
            run = Run.load(run_dir)
            self._runs[run_dir] = (stamp, run, threading.Lock())
            while len(self._runs) > self.keep:
                self._runs.popitem(last=False)
            return run, self._runs[run_dir][2]

    def predict(self, run_dir: Path, texts: list[str]) -> dict[str, Any]:
        """``{"predictions": [...]}``: the rows of ``Run.predict`` (a generative run's rows hold ``generated``).

        Raises:
            UserError: the run has no model yet.
        """
        run, lock = self._run(run_dir)
        with lock:
            return {"predictions": run.predict(texts)}


# ---------------------------------------------------------------- chat with a generative run


def check_messages(messages: Any) -> list[dict[str, str]]:
    """A conversation ending with the user's turn, its last :data:`MAX_TURNS` messages kept.

    Raises:
        UserError: not a list of ``{"role": "user"|"assistant", "content": str}`` ending with a user turn;
            :class:`TooMuch` for a message past :data:`MAX_CHARS`.
    """
    shape = 'send {"messages": [{"role": "user", "content": "..."}, ...]} ending with the user\'s turn'
    if not isinstance(messages, list) or not messages:
        raise UserError(shape)
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant") or not isinstance(m.get("content"), str):
            raise UserError(shape)
        if len(m["content"]) > MAX_CHARS:
            raise TooMuch(f"a message has more than {MAX_CHARS} characters; shorten it")
    if messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
        raise UserError("type a message first")
    kept = messages[-MAX_TURNS:]
    while kept and kept[0]["role"] != "user":
        kept = kept[1:]
    return [{"role": m["role"], "content": m["content"]} for m in kept]


def sampling_from(body: dict[str, Any]):
    """Decoding settings from the chat box: ``max_new_tokens`` (1..:data:`MAX_NEW_TOKENS_LIMIT`) and ``temperature`` (0 greedy).

    Raises:
        UserError: a value out of range or not a number, or no tunesmith.generate package.
    """
    engine = _engine()
    try:
        given = {k: body.get(k) for k in ("max_new_tokens", "temperature") if body.get(k) not in (None, "")}
        max_new = int(given.get("max_new_tokens", MAX_NEW_TOKENS))
        temperature = float(given.get("temperature", 0.7))
    except (TypeError, ValueError):
        raise UserError("max new tokens must be a whole number and temperature a number (0 answers greedily)") from None
    if not 1 <= max_new <= MAX_NEW_TOKENS_LIMIT:
        raise UserError(f"max new tokens must be between 1 and {MAX_NEW_TOKENS_LIMIT}, got {max_new}")
    return engine.Sampling(max_new_tokens=max_new, temperature=temperature)


def _engine():
    if importlib.util.find_spec("tunesmith.generate") is None:
        raise UserError("this tunesmith has no tunesmith.generate package, so it cannot chat with a generative run; update tunesmith")
    return importlib.import_module("tunesmith.generate.engine")


class Generators:
    """Generative runs loaded for the chat box (the last :data:`KEEP_GENERATORS`), one reply at a time each."""

    def __init__(self, keep: int = KEEP_GENERATORS):
        self.keep = keep
        self._loaded: OrderedDict[Path, tuple[float, Any, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_dir: Path) -> tuple[Any, threading.Lock]:
        """The run's Generator (loaded on first use).

        Raises:
            UserError: no tunesmith.generate package, or the run is not a finished generative run.
        """
        engine = _engine()
        stamp = (run_dir / "model" / "config.json").stat().st_mtime if (run_dir / "model" / "config.json").is_file() else 0.0
        with self._lock:
            cached = self._loaded.get(run_dir)
            if cached is not None and cached[0] == stamp:
                self._loaded.move_to_end(run_dir)
                return cached[1], cached[2]
            generator = engine.Generator.load(run_dir)
            self._loaded[run_dir] = (stamp, generator, threading.Lock())
            while len(self._loaded) > self.keep:
                self._loaded.popitem(last=False)
            return generator, self._loaded[run_dir][2]


def _fit(generator, messages: list[dict[str, str]], max_new_tokens: int) -> list[dict[str, str]]:
    """Drop the oldest exchanges until the conversation and the reply fit the model's context."""
    budget = generator.context_length - max_new_tokens
    while len(messages) > 1 and len(generator.prompt_ids(messages)) > budget:
        messages = messages[1:]
        while len(messages) > 1 and messages[0]["role"] != "user":
            messages = messages[1:]
    if len(generator.prompt_ids(messages)) > budget:
        raise UserError(
            f"the message does not fit the model's context of {generator.context_length} tokens with {max_new_tokens} new ones; "
            "send a shorter message or lower max new tokens"
        )
    return messages


def reply_stream(generator, lock: threading.Lock, messages: list[dict[str, str]], sampling) -> Iterator[str]:
    """The model's reply, piece by piece as it is generated; a chat model gets the whole conversation, another model
    continues the last message. Generation stops when the consumer goes away (the page closed the request)."""
    pieces: queue.Queue = queue.Queue()
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            with lock:
                if generator.chat:
                    prompt: Any = _fit(generator, messages, sampling.max_new_tokens)
                else:
                    prompt = generator.prompt_ids(messages[-1]["content"])
                generator.generate(prompt, sampling, on_text=pieces.put, stop=stop)
        except UserError as exc:
            pieces.put(_Failure(str(exc)))
        except Exception as exc:  # shown in the chat box rather than a broken stream
            pieces.put(_Failure(f"{type(exc).__name__}: {exc}"))
        finally:
            pieces.put(done)

    threading.Thread(target=work, name="tunesmith-ui-generate", daemon=True).start()
    try:
        while True:
            item = pieces.get()
            if item is done:
                return
            yield f"\n[error: {item.message}]" if isinstance(item, _Failure) else item
    finally:
        stop.set()


class _Failure:
    def __init__(self, message: str):
        self.message = message
