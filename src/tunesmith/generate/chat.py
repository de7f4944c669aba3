"""A multi-turn chat with a model: the history, trimmed to the model's context, and a terminal loop over it.

The loop reads lines from any text stream (a terminal, or a pipe: ``printf 'hi\\n/exit\\n' | tunesmith chat RUN``),
so it is testable without a terminal. ``/reset`` forgets the conversation, ``/exit`` (or end of input) quits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tunesmith.errors import UserError
from tunesmith.generate.engine import Generator, Message, Sampling

HELP = "commands: /reset forgets the conversation, /exit quits (so does end of input), /help shows this"


@dataclass
class ChatSession:
    """A conversation with ``generator``'s model; each :meth:`send` adds the user turn and the model's reply.

    Example:
        >>> session = ChatSession(Generator.load("smollm2-135m"), sampling=Sampling(temperature=0))
        >>> session.send("What is the capital of France?")
        'The capital of France is Paris.'
    """

    generator: Generator
    sampling: Sampling = field(default_factory=Sampling)
    system: str | None = None
    history: list[Message] = field(default_factory=list)
    dropped_turns: int = 0

    def __post_init__(self) -> None:
        if not self.generator.chat:
            raise UserError(
                f"{self.generator.name} has no chat template (or was loaded with --raw), so it cannot hold a conversation; "
                "pass --template plain (or a Jinja file) to chat with it, or use `tunesmith generate` for text continuation"
            )

    def reset(self) -> None:
        """Forget the conversation (the system message stays)."""
        self.history.clear()
        self.dropped_turns = 0

    def _fitted_prompt(self) -> list[int]:
        """The conversation's prompt ids, dropping the oldest exchanges until it and the reply fit the model's context."""
        budget = self.generator.context_length - self.sampling.max_new_tokens
        while True:
            ids = self.generator.prompt_ids(self.history, system=self.system)
            if len(ids) <= budget:
                return ids
            if len(self.history) <= 1:
                raise UserError(
                    f"the message is {len(ids)} tokens; with --max-new-tokens {self.sampling.max_new_tokens} it does not fit the model's "
                    f"context of {self.generator.context_length} tokens; send a shorter message or lower --max-new-tokens"
                )
            # the oldest user turn and the reply to it; the conversation still starts with a user turn
            del self.history[0]
            while len(self.history) > 1 and self.history[0]["role"] != "user":
                del self.history[0]
            self.dropped_turns += 1

    def send(self, text: str, *, on_text: Callable[[str], None] | None = None) -> str:
        """Add a user turn and return (and stream to ``on_text``) the model's reply, which joins the history.

        Raises:
            UserError: the message alone does not fit the model's context (the history is left as it was).
        """
        saved = list(self.history)
        self.history.append({"role": "user", "content": text})
        try:
            ids = self._fitted_prompt()
        except UserError:
            self.history = saved
            raise
        reply = self.generator.generate(ids, self.sampling, on_text=on_text)
        self.history.append({"role": "assistant", "content": reply})
        return reply


def run_chat(session: ChatSession, lines: Iterable[str], write: Callable[[str], None], *, prompt: str = "> ") -> int:
    """The terminal loop: each input line is a user turn, replies stream to ``write``; returns the number of turns answered."""
    answered = 0
    write(f"chatting with {session.generator.name}; {HELP}\n")
    write(prompt)
    for raw in lines:
        line = raw.rstrip("\n").rstrip("\r")
        command = line.strip()
        if command in ("/exit", "/quit"):
            break
        if command == "/reset":
            session.reset()
            write("(conversation reset)\n")
        elif command == "/help":
            write(HELP + "\n")
        elif command.startswith("/"):
            write(f"unknown command {command!r}; {HELP}\n")
        elif command:
            dropped = session.dropped_turns
            try:
                session.send(line, on_text=write)
                answered += 1
                write("\n")
            except UserError as exc:
                write(f"error: {exc}\n")
            if session.dropped_turns > dropped:
                write(f"(the oldest {session.dropped_turns - dropped} exchange(s) no longer fit the context and were dropped)\n")
        write(prompt)
    write("\n")
    return answered
