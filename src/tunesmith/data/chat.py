"""Instruction-tuning data: conversations read from JSON Lines (or a packaged dataset), validated and split.

Each line of a ``.jsonl`` file holds one example in one of three shapes (they may be mixed):

* ``{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}``
  (``system`` turns allowed; several user/assistant turns allowed);
* ``{"prompt": "...", "response": "..."}`` (``completion`` is accepted for ``response``, an optional ``system``);
* ``{"instruction": "...", "input": "...", "output": "..."}`` (Alpaca; ``input`` may be empty or absent).

Every example becomes a list of chat messages. Validation collects every bad line before raising, so
one message names all the lines to fix. A packaged dataset with a ``prompt`` (``hsk_zh_en``) turns
each record's text into the user turn and its label into the assistant's reply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.data.unlabelled import random_holdout
from tunesmith.errors import UserError

ROLES = ("system", "user", "assistant")
_SHOWN = 5
_EXAMPLE = '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}'
FORMATS = (
    '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}',
    '{"prompt": "...", "response": "..."}',
    '{"instruction": "...", "input": "...", "output": "..."}',
)

Message = dict[str, str]


@dataclass
class ChatData:
    """Conversations with the line (or packaged record) each came from."""

    source: str
    conversations: list[list[Message]]
    rows: list[int]

    def __len__(self) -> int:
        """Number of conversations."""
        return len(self.conversations)

    def subset(self, idx: list[int]) -> ChatData:
        """The conversations at positions ``idx``, in that order."""
        return ChatData(self.source, [self.conversations[i] for i in idx], [self.rows[i] for i in idx])


@dataclass
class PreparedChat:
    """Train and eval conversations of an sft run, and how they were made (``report``, JSON-ready)."""

    train: ChatData
    eval: ChatData
    report: dict[str, Any]


def load_chat(source: str, *, encoding: str = "utf-8") -> ChatData:
    """Read conversations from a ``.jsonl`` file or a packaged sft dataset (``hsk_zh_en``).

    Raises:
        UserError: a missing or unreadable file, or bad examples (each named by its line, with the fix).
    """
    from tunesmith.data.packaged import PACKAGED

    source = str(source)
    if source in PACKAGED and not Path(source).exists():
        return _packaged_chat(source)
    path = Path(source)
    if path.suffix.lower() not in (".jsonl", ".ndjson", ".json-lines"):
        if not path.exists():
            sft = sorted(name for name, ds in PACKAGED.items() if ds.task == "sft")
            raise UserError(f"file not found: {source}; pass a .jsonl file or a packaged sft dataset ({', '.join(sft)})")
        raise UserError(f"{source}: instruction data must be JSON Lines (.jsonl), one example per line, e.g.\n  " + "\n  ".join(FORMATS))
    from tunesmith.data.loading import _decode, json_objects

    if not path.is_file():
        raise UserError(f"file not found: {source}; check the path (a .jsonl file with one example per line)")
    text = _decode(path.read_bytes(), source, encoding)
    objects, bad = json_objects(text, source, _EXAMPLE)
    problems = [(line, what) for line, what in bad]
    conversations, rows = [], []
    for line, obj in objects:
        messages, problem = to_messages(obj)
        if problem:
            problems.append((line, problem))
        else:
            conversations.append(messages)
            rows.append(line)
    if problems:
        raise _bad_lines(source, sorted(problems))
    if not conversations:
        raise UserError(f"{source} holds no examples; write one JSON object per line, e.g.\n  " + "\n  ".join(FORMATS))
    return ChatData(source, conversations, rows)


def _bad_lines(source: str, problems: list[tuple[int, str]]) -> UserError:
    shown = "\n".join(f"  line {line}: {what}" for line, what in problems[:_SHOWN])
    more = f"\n  ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    n = len(problems)
    return UserError(
        f"{source}: {n} bad example{'s' if n > 1 else ''}:\n{shown}{more}\nEach line must hold one example in one of these shapes:\n  "
        + "\n  ".join(FORMATS)
    )


def to_messages(obj: dict[str, Any]) -> tuple[list[Message], str | None]:
    """One example (any of the three shapes) as chat messages, or the reason it is not usable."""
    if "messages" in obj:
        return _checked_messages(obj["messages"])
    if "prompt" in obj or "response" in obj or "completion" in obj:
        response_key = "completion" if "completion" in obj and "response" not in obj else "response"
        return _pair(obj, "prompt", response_key, obj.get("prompt"), obj.get(response_key))
    if "instruction" in obj or "output" in obj:
        extra = obj.get("input")
        if extra is not None and not isinstance(extra, str):
            return [], f"`input` must be a string, got {type(extra).__name__}"
        instruction = obj.get("instruction")
        prompt = f"{instruction}\n\n{extra}" if isinstance(instruction, str) and extra and extra.strip() else instruction
        return _pair(obj, "instruction", "output", prompt, obj.get("output"))
    keys = ", ".join(f"`{k}`" for k in list(obj)[:6]) or "no keys"
    return [], f"found {keys}; expected `messages`, `prompt`/`response` or `instruction`/`output`"


def _pair(obj: dict[str, Any], prompt_key: str, response_key: str, prompt: Any, response: Any) -> tuple[list[Message], str | None]:
    for key, value in ((prompt_key, prompt), (response_key, response)):
        if value is None:
            return [], f"`{key}` is missing"
        if not isinstance(value, str):
            return [], f"`{key}` must be a string, got {type(value).__name__}"
        if not value.strip():
            what = "the response" if key == response_key else "the prompt"
            return [], f"{what} (`{key}`) is empty; there is nothing to learn from it"
    messages: list[Message] = []
    system = obj.get("system")
    if system is not None:
        if not isinstance(system, str):
            return [], f"`system` must be a string, got {type(system).__name__}"
        if system.strip():
            messages.append({"role": "system", "content": system})
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    return messages, None


def _checked_messages(value: Any) -> tuple[list[Message], str | None]:
    if not isinstance(value, list) or not value:
        return [], '`messages` must be a non-empty list of {"role": ..., "content": ...} objects'
    messages: list[Message] = []
    for i, msg in enumerate(value, start=1):
        if not isinstance(msg, dict):
            return [], f"message {i} must be an object with `role` and `content`, got {type(msg).__name__}"
        role, content = msg.get("role"), msg.get("content")
        if role is None:
            return [], f"message {i} has no `role`; give each message a role ({', '.join(ROLES)}) and a content"
        if role not in ROLES:
            return [], f"message {i} has role {role!r}; allowed roles: {', '.join(ROLES)}"
        if not isinstance(content, str):
            what = "no `content`" if content is None else f"a {type(content).__name__} as `content`"
            return [], f"message {i} ({role}) has {what}; the content must be a string"
        if role == "assistant" and not content.strip():
            return [], f"message {i} is an empty assistant response; there is nothing to learn from it"
        messages.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in messages):
        return [], "the conversation has no assistant message, so there is no response to learn"
    return messages, None


def _packaged_chat(name: str) -> ChatData:
    """A packaged sft dataset: a JSON array of records, ``text_col`` in the prompt, ``label_col`` (dotted path) as the reply."""
    from tunesmith.data.packaged import PACKAGED, packaged_path

    ds = PACKAGED[name]
    if ds.task != "sft" or ds.prompt is None:
        raise UserError(f"packaged dataset {name!r} is {ds.task} data, not instruction data; sft reads a .jsonl file or: " + _sft_names())
    path = packaged_path(name)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(
            f"packaged dataset {name!r}: cannot read {path} ({exc}); reinstall it with: {ds.install} --force-reinstall"
        ) from None
    conversations, rows = [], []
    for i, record in enumerate(records, start=1):
        text, reply = _dotted(record, ds.text_col), _dotted(record, ds.label_col or "")
        if isinstance(text, str) and isinstance(reply, str) and text.strip() and reply.strip():
            conversations.append([{"role": "user", "content": ds.prompt.format(text=text)}, {"role": "assistant", "content": reply}])
            rows.append(i)
    if not conversations:
        raise UserError(f"packaged dataset {name!r} ({path}) holds no usable records; reinstall it with: {ds.install} --force-reinstall")
    return ChatData(name, conversations, rows)


def _sft_names() -> str:
    from tunesmith.data.packaged import PACKAGED

    return ", ".join(sorted(name for name, ds in PACKAGED.items() if ds.task == "sft"))


def _dotted(record: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def prompt_and_reference(messages: list[Message]) -> tuple[list[Message], str]:
    """The conversation up to its last assistant turn (the prompt) and that turn's content (the reference)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def dedupe_chat(data: ChatData) -> tuple[ChatData, int]:
    """Drop exact-duplicate conversations, keeping the first; returns the kept ones and how many were dropped."""
    first: dict[str, int] = {}
    for i, conv in enumerate(data.conversations):
        first.setdefault(json.dumps(conv, ensure_ascii=False, sort_keys=True), i)
    keep = sorted(first.values())
    return data.subset(keep), len(data) - len(keep)


def prepare_chat(data, seed: int) -> PreparedChat:
    """Load, dedupe and split (seeded random holdout unless ``data.eval`` is given) the conversations of an sft run.

    Args:
        data: the run config's ``data`` section (``train``, ``eval``, ``eval_fraction``, ``dedupe``, ``encoding``).
        seed: seed of the holdout; the same seed gives the same split.

    Raises:
        UserError: any load or validation problem, or too few examples to hold some out.
    """
    train = load_chat(data.train, encoding=data.encoding)
    rows_read = len(train)
    deduped, removed = dedupe_chat(train)
    if data.dedupe:
        train = deduped
    report: dict[str, Any] = {
        "source": train.source,
        "eval_source": data.eval,
        "rows_read": rows_read,
        "duplicates_removed": removed if data.dedupe else 0,
    }
    if data.eval is None:
        train, evaluation = random_holdout(train, data.eval_fraction, seed, noun="example")
        report["split"] = f"random holdout {data.eval_fraction * 100:g}%, seed {seed}"
    else:
        evaluation = load_chat(data.eval, encoding=data.encoding)
        known = {json.dumps(c, ensure_ascii=False, sort_keys=True) for c in train.conversations}
        report.update(
            split="eval file",
            eval_rows_read=len(evaluation),
            eval_examples_in_train=sum(1 for c in evaluation.conversations if json.dumps(c, ensure_ascii=False, sort_keys=True) in known),
        )
    report.update(train_size=len(train), eval_size=len(evaluation))
    return PreparedChat(train, evaluation, report)


# ---------------------------------------------------------------- chat templates

PLAIN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### User:\n{{ message['content'] }}\n\n"
    "{% else %}### Assistant:\n{{ message['content'] }}{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)
"""``--template plain``: ``### User:``/``### Assistant:`` turns, each reply closed by the model's EOS token (so generation stops)."""

BUILTIN_TEMPLATES = {"plain": PLAIN_TEMPLATE}


def resolve_template(value: str) -> str:
    """A chat template from ``--template``: a built-in name (``plain``), a Jinja file, or an inline Jinja string.

    Raises:
        UserError: when the value is none of these.
    """
    if value in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[value]
    path = Path(value).expanduser()
    if path.is_file():
        return path.read_text(encoding="utf-8")
    if "{{" in value or "{%" in value:
        return value
    raise UserError(
        f"`data.template` {value!r} is not a built-in template ({', '.join(BUILTIN_TEMPLATES)}), an existing Jinja file, "
        "nor an inline Jinja template (it holds no {{ or {%); e.g. --template plain"
    )


def ensure_chat_template(tokenizer, template: str | None, model_name: str) -> None:
    """Give ``tokenizer`` the ``--template`` (which wins over its own), or check it has a chat template.

    Raises:
        UserError: the tokenizer has no chat template and none was given.
    """
    if template:
        tokenizer.chat_template = resolve_template(template)
        return
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"model {model_name!r} has no chat template (its tokenizer_config.json/chat_template.jinja defines none), so tunesmith "
            "cannot tell prompts from responses; pass --template plain (### User:/### Assistant: turns closed by the EOS token), "
            "--template FILE.jinja, or an inline Jinja template"
        )
