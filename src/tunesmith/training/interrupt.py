"""Ctrl-C (SIGINT) and SIGTERM during training: finish the step, save a checkpoint, stop, say how to resume.

The first signal only sets a flag; the Trainer stops at the end of the current optimizer step and
saves a checkpoint there (committed like any other). A second Ctrl-C more than
:data:`REPEAT_GRACE_S` seconds later aborts at once without one. Signals that arrive together (the
terminal signals every process of the group, and a launcher forwards the same signal again) count
as one. With several processes, the ranks agree on the step to stop at (an all-reduce of the flag),
so none waits forever for another.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

import torch
from transformers import TrainerCallback

REPEAT_GRACE_S = 2.0
HANDLED = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after saving a checkpoint; the CLI exits with code 130."""

    def __init__(self, message: str, checkpoint: str | None = None):
        super().__init__(message)
        self.message = message
        self.checkpoint = checkpoint


class GracefulStop(TrainerCallback):
    """Turns a SIGINT/SIGTERM into "save a checkpoint at the end of this step and stop".

    Use :meth:`handling_signals` around ``trainer.train()``; afterwards :attr:`stopped_at` is the
    step at which training stopped on a signal (None when it ran to the end).
    """

    def __init__(self, on_first_signal=None):
        self.requested_at: float | None = None
        self.signal_name: str | None = None
        self.stopped_at: int | None = None
        self._on_first_signal = on_first_signal

    def _handle(self, signum, frame) -> None:
        now = time.monotonic()
        if self.requested_at is None:
            self.requested_at = now
            self.signal_name = signal.Signals(signum).name
            if self._on_first_signal is not None:
                self._on_first_signal(self.signal_name)
            return
        if now - self.requested_at > REPEAT_GRACE_S:
            raise KeyboardInterrupt  # asked twice: stop now, without a checkpoint

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[GracefulStop]:
        """Install the handlers for SIGINT and SIGTERM (main thread only) and restore the previous ones after."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.getsignal(sig) for sig in HANDLED}
        for sig in HANDLED:
            signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _agreed(self, args) -> bool:
        local = self.requested_at is not None
        if args.world_size <= 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return local
        flag = torch.tensor([1 if local else 0], device=args.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def on_step_end(self, args, state, control, **kwargs):
        if self._agreed(args):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control
