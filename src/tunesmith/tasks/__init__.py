"""One module per task; each ends with a ``TASK`` record of its particular pieces.

:data:`TASKS` is the registry from ``--task`` name to that record.
"""

from __future__ import annotations

from tunesmith.tasks import classify, ner, regress
from tunesmith.tasks.base import Task

TASKS: dict[str, Task] = {}


def register_task(task: Task) -> None:
    """Add a task; a second one with the same name is a programming error."""
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    TASKS[task.name] = task


register_task(classify.TASK)
register_task(regress.TASK)
register_task(ner.TASK)

__all__ = ["TASKS", "Task", "register_task"]
