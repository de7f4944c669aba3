"""Generation with a trained run or any causal LM: one streamed reply (:func:`generate`) or a chat (:class:`ChatSession`)."""

from tunesmith.generate.chat import ChatSession, run_chat
from tunesmith.generate.engine import Generator, Sampling, generate, greedy_batch

__all__ = ["ChatSession", "Generator", "Sampling", "generate", "greedy_batch", "run_chat"]
