"""The one exception type that means "the user can fix this"."""

from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix: the CLI prints the message and exits with code 2.

    The message says what was received, what was expected and how to fix it.
    """

    exit_code = 2
