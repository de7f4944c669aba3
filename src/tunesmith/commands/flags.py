"""Config flags for the CLI, generated from the config schema (one flag per key)."""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any

# ---------------------------------------------------------------- config flags from the schema


def _field_type(annotation: Any) -> tuple[Any, bool]:
    """The scalar type of a field and whether it accepts None."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(annotation))
    return annotation, False


def none_or_text(text: str) -> str | None:
    return None if text.lower() in ("none", "null", "off") else text


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config key (``training.lr`` -> ``--lr``), with the field's description as help."""
    from tunesmith.config import flat_fields

    parser.add_argument("--config", metavar="FILE", help="YAML config to start from (flags override its keys); see examples/")
    groups: dict[str | None, argparse._ArgumentGroup] = {}
    for name, (section, info) in flat_fields().items():
        group = groups.setdefault(section, parser.add_argument_group(f"{section or 'run'} settings ({section or 'top-level'} keys)"))
        flag = "--" + name.replace("_", "-")
        kind, optional = _field_type(info.annotation)
        default = info.get_default(call_default_factory=False)
        help_text = f"{info.description} [default: {default}]"
        if kind is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
            continue
        # values stay strings here: the config schema converts and validates them, so every
        # problem is reported together with the YAML's, each naming its key
        metavar = "{" + ",".join(map(str, typing.get_args(kind))) + "}" if typing.get_origin(kind) is typing.Literal else name.upper()
        group.add_argument(
            flag, dest=name, type=none_or_text if optional else str, default=argparse.SUPPRESS, metavar=metavar, help=help_text
        )


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    from tunesmith.config import flat_fields

    return {k: v for k, v in vars(args).items() if k in flat_fields()}
