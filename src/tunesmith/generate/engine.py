"""Text generation with a run's model or any causal LM: one prompt streamed as it is written, or a batch decoded greedily.

A *reference* is a run directory (its ``model/``), a registry name (``smollm2-135m``) or a local
Hugging Face directory. A chat model (its tokenizer has a chat template) gets each prompt wrapped
as a user turn; a ``clm`` run or a model without a template continues the text as written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunesmith.errors import UserError
from tunesmith.tasks.inference import autocast_context

Message = dict[str, str]


@dataclass
class Sampling:
    """How tokens are chosen. ``temperature`` 0 decodes greedily (deterministic); ``seed`` makes sampling repeatable."""

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            problems.append(f"--temperature must be >= 0 (0 decodes greedily), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            problems.append(f"--top-k must be >= 0 (0 disables it), got {self.top_k}")
        if self.repetition_penalty <= 0:
            problems.append(f"--repetition-penalty must be > 0 (1 disables it), got {self.repetition_penalty}")
        if problems:
            raise UserError("; ".join(problems))

    def generate_kwargs(self) -> dict[str, Any]:
        """Arguments for ``model.generate``."""
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty}
        if self.temperature == 0:
            return {**kwargs, "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {**kwargs, "do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}


class _StopFlag:
    """A stopping criterion that ends generation when the caller sets the event (Ctrl-C while streaming)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class Generator:
    """A language model and its tokenizer, ready to answer prompts.

    Example:
        >>> gen = Generator.load("runs/sft-hsk")
        >>> gen.generate("Translate to English: 你好", Sampling(temperature=0))
        'Hello.'
    """

    def __init__(self, model, tokenizer, *, name: str, precision: str = "fp32", chat: bool | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.precision = precision
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if chat and not has_template:
            raise UserError(
                f"{name} has no chat template, so prompts cannot be wrapped as chat turns; pass --template plain (or a Jinja file), "
                "or --raw to continue the text as written"
            )
        self.chat = has_template if chat is None else chat
        self.is_seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
        if self.is_seq2seq:
            self.chat = False

    @classmethod
    def load(cls, ref: str | Path, *, template: str | None = None, chat: bool | None = None, precision: str = "auto") -> Generator:
        """Load a run's model (``RUN/model``) or a model reference for generation.

        Args:
            ref: a run directory, a registry name or a local Hugging Face model directory.
            template: a chat template (``plain``, a Jinja file or string) for a model that lacks one.
            chat: True wraps prompts in the chat template, False continues them as raw text; None
                decides by the model (chat when it has a template, except for ``clm`` runs).
            precision: ``auto`` (bf16 autocast where supported), ``bf16`` or ``fp32``.

        Raises:
            UserError: the reference is neither a finished run nor a loadable language model.
        """
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        from tunesmith.models import load_failure, resolve_model
        from tunesmith.models.decoder import check_causal, ensure_pad_token
        from tunesmith.training.hardware import resolve_precision
        from tunesmith.training.runner import quiet_transformers

        quiet_transformers()
        path = Path(ref).expanduser()
        task = None
        if (path / "config.yaml").is_file():
            from tunesmith.run import Run
            from tunesmith.training.rundir import MODEL

            run = Run.load(path)
            model_dir, task = str(run.dir / MODEL), run.config.task
        else:
            model_dir = resolve_model(str(ref))
        try:
            config = AutoConfig.from_pretrained(model_dir)
        except (OSError, ValueError, KeyError) as exc:
            raise load_failure(str(ref), exc) from None
        heads = [
            a for a in (getattr(config, "architectures", None) or []) if a.endswith(("ForSequenceClassification", "ForTokenClassification"))
        ]
        if heads:
            what = f"a {task} run" if task else "a model"
            raise UserError(
                f"{ref} is {what} with a {heads[0]} head, not a language model; generate and chat need an sft/clm/dpo run, "
                "a seq2seq run, or a causal LM such as smollm2-135m"
            )
        if not config.is_encoder_decoder:
            check_causal(config, str(ref), "generate")
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            model = auto.from_pretrained(model_dir)
        except (OSError, ValueError, KeyError) as exc:
            raise load_failure(str(ref), exc) from None
        ensure_pad_token(tokenizer, model)
        if template:
            from tunesmith.data.chat import resolve_template

            tokenizer.chat_template = resolve_template(template)
            chat = True if chat is None else chat
        if chat is None and task == "clm":
            chat = False  # continued pre-training teaches text continuation, not turns
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), tokenizer, name=str(ref), precision=resolve_precision(precision), chat=chat)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def context_length(self) -> int:
        """The most tokens (prompt and reply) the model was built for."""
        cfg = self.model.config
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(cfg, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return 2048

    def prompt_ids(self, prompt: str | Sequence[Message], *, system: str | None = None) -> list[int]:
        """Token ids of a prompt: a chat turn (or a whole conversation) through the chat template, else the text as written."""
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if system and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": system}, *messages]
        if self.chat:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.tokenizer("\n".join(m["content"] for m in messages))["input_ids"]

    def _special_ids(self) -> dict[str, Any]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return {"pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": eos}

    def generate(
        self,
        prompt: str | Sequence[Message] | list[int],
        sampling: Sampling | None = None,
        *,
        on_text: Callable[[str], None] | None = None,
        system: str | None = None,
        stop: threading.Event | None = None,
    ) -> str:
        """The model's reply to one prompt, streamed to ``on_text`` piece by piece as it is generated.

        Args:
            prompt: a text, a list of chat messages, or token ids already built by :meth:`prompt_ids`.
            sampling: decoding settings (default :class:`Sampling`).
            on_text: called with each new piece of text (``TextIteratorStreamer``), e.g. ``print(..., end="")``.
            system: a system message put before the prompt (chat models).
            stop: an event that ends generation early when set (the reply so far is returned).
        """
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        sampling = sampling or Sampling()
        ids = prompt if isinstance(prompt, list) and (not prompt or isinstance(prompt[0], int)) else self.prompt_ids(prompt, system=system)
        inputs = torch.tensor([ids], device=self.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop = stop or threading.Event()
        kwargs = {
            "input_ids": inputs,
            "attention_mask": torch.ones_like(inputs),
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_StopFlag(stop)]),
            **self._special_ids(),
            **sampling.generate_kwargs(),
        }
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        failure: list[BaseException] = []

        def work() -> None:
            try:
                with torch.inference_mode(), autocast_context(self.precision, self.device):
                    self.model.generate(**kwargs)
            except BaseException as exc:  # re-raised in the caller's thread below
                failure.append(exc)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        pieces = []
        try:
            for piece in streamer:
                pieces.append(piece)
                if on_text is not None and piece:
                    on_text(piece)
        except KeyboardInterrupt:
            stop.set()
            thread.join()
            raise
        thread.join()
        if failure:
            raise failure[0]
        return "".join(pieces).strip()

    @torch.inference_mode()
    def complete_batch(self, prompts: Sequence[list[int]], *, max_new_tokens: int, batch_size: int = 16) -> list[str]:
        """Greedy replies to many prompts (token ids), batched with left padding; returned in input order."""
        return greedy_batch(
            self.model, self.tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, precision=self.precision
        )


@torch.inference_mode()
def greedy_batch(model, tokenizer, prompts: Sequence[list[int]], *, max_new_tokens: int, batch_size: int, precision: str) -> list[str]:
    """Greedy decoding of token-id prompts in length-sorted, left-padded batches; the texts come back in input order."""
    from tunesmith.tasks.inference import length_sorted_batches

    model.eval()
    device = next(model.parameters()).device
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    pad = tokenizer.pad_token_id
    eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None else tokenizer.eos_token_id
    out: list[str] = [""] * len(prompts)
    for idx in length_sorted_batches([len(p) for p in prompts], batch_size):
        longest = max(len(prompts[i]) for i in idx)
        if seq2seq:  # the encoder reads right-padded input; only decoder-only models continue from the right edge
            ids = [prompts[i] + [pad] * (longest - len(prompts[i])) for i in idx]
            mask = [[1] * len(prompts[i]) + [0] * (longest - len(prompts[i])) for i in idx]
        else:
            ids = [[pad] * (longest - len(prompts[i])) + prompts[i] for i in idx]
            mask = [[0] * (longest - len(prompts[i])) + [1] * len(prompts[i]) for i in idx]
        input_ids = torch.tensor(ids, device=device)
        with autocast_context(precision, device):
            generated = model.generate(
                input_ids=input_ids,
                attention_mask=torch.tensor(mask, device=device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=pad,
                eos_token_id=eos,
            )
        new = generated if seq2seq else generated[:, input_ids.shape[1] :]
        for row, i in enumerate(idx):
            out[i] = tokenizer.decode(new[row], skip_special_tokens=True).strip()
    return out


def generate(model_or_run: str | Path | Generator, prompt: str, *, on_text: Callable[[str], None] | None = None, **sampling: Any) -> str:
    """One reply from a run or a model: ``generate("runs/sft", "Translate to English: 你好", temperature=0)``.

    ``sampling`` takes the :class:`Sampling` fields (``max_new_tokens``, ``temperature``, ``top_p``,
    ``top_k``, ``repetition_penalty``, ``seed``).
    """
    generator = model_or_run if isinstance(model_or_run, Generator) else Generator.load(model_or_run)
    return generator.generate(prompt, Sampling(**sampling), on_text=on_text)
