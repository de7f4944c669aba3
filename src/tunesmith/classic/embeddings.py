"""Mean-pooled, L2-normalised sentence embeddings from any encoder: a registry name, an HF directory or a run.

Mean pooling over the non-padding tokens is what sentence-transformers models such as MiniLM are
trained with, so their cosine similarities are meaningful without any head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunesmith.errors import UserError

DEFAULT_ENCODER = "minilm"


def resolve_encoder(ref: str | None = None, *, run: str | None = None) -> str:
    """Turn ``--run RUN`` or ``--model NAME`` into a directory or hub id ``from_pretrained`` accepts.

    A run directory (it holds ``config.yaml`` and ``model/``) may also be passed as the model.

    Raises:
        UserError: both given, a run without a trained model, or an unknown model.
    """
    from tunesmith.models.registry import resolve_model
    from tunesmith.training.rundir import MODEL

    if run is not None and ref is not None:
        raise UserError(f"got both --run {run} and --model {ref}; give one of them")
    if run is not None:
        from tunesmith.run import Run

        return str(Run.load(run).dir / MODEL)
    ref = ref or DEFAULT_ENCODER
    path = Path(ref)
    if (path / "config.yaml").is_file() and (path / MODEL / "config.json").is_file():
        return str(path / MODEL)
    return resolve_model(ref)


class SentenceEncoder:
    """An encoder and its tokenizer, embedding texts by masked mean pooling.

    Example:
        >>> encoder = SentenceEncoder.load("minilm")
        >>> encoder.encode(["hello", "WIN a prize"]).shape
        (2, 384)
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, max_length: int = 128, precision: str = "fp32"):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.precision = precision

    @classmethod
    def load(cls, ref: str | None = None, *, run: str | None = None, max_length: int = 128, precision: str = "auto") -> SentenceEncoder:
        """Load the encoder body of a registry model, HF directory, hub id or run (task heads are dropped)."""
        from transformers import AutoModel, AutoTokenizer

        from tunesmith.models.registry import load_failure
        from tunesmith.training.hardware import resolve_precision
        from tunesmith.training.runner import quiet_transformers

        quiet_transformers()
        path = resolve_encoder(ref, run=run)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModel.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise load_failure(ref or path, exc) from None
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device).eval()
        return cls(model, tokenizer, max_length=max_length, precision=resolve_precision(precision))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def pooled(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean of the token states where ``attention_mask`` is 1 (differentiable; not normalised)."""
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """A padded batch on the encoder's device."""
        batch = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items()}

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        on_batch: Callable[[int], None] | None = None,
        console: Any = None,
        description: str = "embedding",
    ) -> np.ndarray:
        """``[n, hidden]`` float32 unit-length embeddings in the order of ``texts``.

        Texts are tokenized once and batched by length, so short texts are not padded to long ones.
        A rich ``console`` shows a progress bar (on stderr in the CLI).
        """
        from tunesmith.tasks.inference import autocast_context, length_sorted_batches

        texts = list(texts)
        if not texts:
            return np.zeros((0, self.model.config.hidden_size), dtype=np.float32)
        self.model.eval()
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        progress = None
        if console is not None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            progress = Progress(
                TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True
            )
            task = progress.add_task(description, total=len(texts))
            progress.start()
        try:
            for idx in length_sorted_batches(lengths, batch_size):
                features = [{k: encoded[k][i] for k in encoded} for i in idx]
                batch = {k: v.to(self.device) for k, v in self.tokenizer.pad(features, return_tensors="pt").items()}
                with autocast_context(self.precision, self.device):
                    vectors = self.pooled(batch)
                out[idx] = vectors.float().cpu().numpy()
                if on_batch is not None:
                    on_batch(len(idx))
                if progress is not None:
                    progress.advance(task, len(idx))
        finally:
            if progress is not None:
                progress.stop()
        return normalise(out)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def embed_texts(
    texts: Sequence[str], model: str | None = None, *, run: str | None = None, batch_size: int = 64, max_length: int = 128
) -> np.ndarray:
    """Unit-length mean-pooled embeddings of ``texts`` with a registry model, HF directory or run."""
    return SentenceEncoder.load(model, run=run, max_length=max_length).encode(texts, batch_size=batch_size)
