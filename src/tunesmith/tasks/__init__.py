"""One module per task; each ends with a ``TASK`` record of its particular pieces.

:data:`TASKS` is the registry from ``--task`` name to that record.
"""

from __future__ import annotations

from tunesmith.tasks import classify, clm, dpo, mlm, multilabel, multitask, ner, regress, reward, seq2seq, sft
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
register_task(mlm.TASK)
register_task(multilabel.TASK)
register_task(multitask.TASK)
register_task(reward.TASK)
register_task(dpo.TASK)
register_task(seq2seq.TASK)
register_task(sft.TASK)
register_task(clm.TASK)


def task_for(config) -> Task:
    """The task record a config asks for (``classify`` with ``data.multi_label`` is its own task)."""
    if config.task == "classify" and config.data.multi_label:
        if "multilabel" not in TASKS:
            raise RuntimeError("the multi-label task is not registered")
        return TASKS["multilabel"]
    return TASKS[config.task]


__all__ = ["TASKS", "Task", "register_task", "task_for"]
