"""Training runs started from the UI: one worker subprocess per run, cancel by SIGINT, resume.

Each run trains in ``python -m tunesmith.ui.worker`` (see :mod:`tunesmith.ui.worker`), in a session of its
own so that Ctrl-C in the UI's terminal does not reach it twice. Its console output goes to ``RUN/train.log``;
its progress to ``RUN/progress.json``, whose final state this manager writes once the process has exited
(the exit code is the truth: a worker killed by the kernel cannot write its own ending).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError
from tunesmith.training.rundir import atomic_write_json
from tunesmith.ui.rundirs import PROGRESS, TRAIN_LOG, read_json, run_id_of, run_status

CANCELLED_CODES = (130, -signal.SIGINT)


@dataclass
class Job:
    """A worker process and the run it writes."""

    run_id: str
    run_dir: Path
    process: subprocess.Popen
    started: float = field(default_factory=time.time)
    cancel_requested: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    """Set once the process has exited and its final state is in progress.json."""

    @property
    def alive(self) -> bool:
        """Training, or exited a moment ago with its ending not yet written (the run still reads as running)."""
        return not self.done.is_set()


def _finished(job: Job) -> bool:
    """The worker wrote that training finished (it is only exiting)."""
    return (read_json(job.run_dir / PROGRESS) or {}).get("state") == "finished"


class JobManager:
    """Starts, cancels and resumes training workers, at most ``max_jobs`` at a time.

    Args:
        root: the runs directory.
        max_jobs: trainings allowed at once (on a laptop CPU two runs slow each other 3-10x).
        python: interpreter of the workers [default: this one].
    """

    def __init__(self, root: Path, *, max_jobs: int = 1, python: str | None = None):
        self.root = root
        self.max_jobs = max_jobs
        self.python = python or sys.executable
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ queries

    def live(self) -> dict[str, bool]:
        """Run id -> whether its worker is alive, for every run this manager started."""
        with self._lock:
            return {rid: job.alive for rid, job in self.jobs.items()}

    def is_live(self, run_id: str) -> bool | None:
        job = self.jobs.get(run_id)
        return None if job is None else job.alive

    def active(self) -> list[str]:
        with self._lock:
            return [rid for rid, job in self.jobs.items() if job.alive]

    # ------------------------------------------------------------ actions

    def start(self, config: dict[str, Any], run_dir: Path) -> Job:
        """Train a new run into ``run_dir`` (which must not exist yet) with a validated config dict.

        Raises:
            UserError: the directory exists, or ``max_jobs`` trainings are already running.
        """
        if run_dir.exists():
            raise UserError(f"{run_dir.name} already exists in {self.root}; choose another run name")
        self._check_capacity()
        run_dir.mkdir(parents=True)
        args = ["--config-json", json.dumps(config)]
        return self._spawn(run_dir, args, config)

    def resume(self, run_dir: Path) -> Job:
        """Continue a cancelled or interrupted run from its last complete checkpoint.

        Raises:
            UserError: the run is training, finished, has no config.yaml, or too many trainings are running.
        """
        run_id = run_id_of(self.root, run_dir)
        status = run_status(run_dir, live=self.is_live(run_id))
        if status == "running":
            raise UserError(f"run {run_id} is still training; cancel it first or wait for it")
        if status == "finished":
            raise UserError(f"run {run_id} has finished; there is nothing to resume (start a new run to train more)")
        if not (run_dir / "config.yaml").is_file():
            raise UserError(
                f"run {run_id} stopped before it wrote config.yaml, so it cannot be resumed; start it again from the new-run page"
            )
        self._check_capacity()
        previous = read_json(run_dir / PROGRESS) or {}
        return self._spawn(run_dir, ["--resume"], previous.get("config"))

    def cancel(self, run_id: str) -> Job:
        """Ask a run's worker to stop: it saves a checkpoint at the end of the current step and exits 130.

        Raises:
            UserError: no worker of this UI is training the run.
        """
        job = self.jobs.get(run_id)
        if job is None or job.process.poll() is not None:
            raise UserError(f"run {run_id} is not training in this UI; only runs started here can be cancelled here")
        job.cancel_requested = True
        job.process.send_signal(signal.SIGINT)
        return job

    def shutdown(self, timeout: float = 60.0) -> list[str]:
        """Cancel every live worker (each keeps a checkpoint) and wait up to ``timeout`` s; then kill what is left."""
        live = [job for job in self.jobs.values() if job.process.poll() is None and not _finished(job)]
        for job in live:
            job.cancel_requested = True
            job.process.send_signal(signal.SIGINT)
        deadline = time.time() + timeout
        for job in live:
            try:
                job.process.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                job.process.kill()
                job.process.wait()
        for job in self.jobs.values():
            job.done.wait(timeout=5)
        return [job.run_id for job in live]

    # ------------------------------------------------------------ internals

    def _check_capacity(self) -> None:
        active = self.active()
        if len(active) >= self.max_jobs:
            raise UserError(
                f"{len(active)} run(s) already training ({', '.join(active)}); wait for it to finish or cancel it "
                "(one training at a time keeps the machine's cores for it)"
            )

    def _spawn(self, run_dir: Path, worker_args: list[str], config: Any) -> Job:
        run_id = run_id_of(self.root, run_dir)
        atomic_write_json(
            run_dir / PROGRESS, {"state": "starting", "started": time.time(), "updated": time.time(), "config": config, "pid": None}
        )
        log = (run_dir / TRAIN_LOG).open("ab")
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} tunesmith ui: {' '.join(worker_args[:1])}\n".encode())
        log.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120", "TERM": "dumb"}
        cmd = [self.python, "-m", "tunesmith.ui.worker", "--out", str(run_dir), *worker_args]
        try:
            process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True, cwd=os.getcwd()
            )
        finally:
            log.close()
        job = Job(run_id=run_id, run_dir=run_dir, process=process)
        with self._lock:
            self.jobs[run_id] = job
        threading.Thread(target=self._watch, args=(job,), name=f"tunesmith-ui-job-{run_id}", daemon=True).start()
        return job

    def _watch(self, job: Job) -> None:
        code = job.process.wait()
        try:
            self._write_ending(job, code)
        finally:
            job.done.set()

    @staticmethod
    def _write_ending(job: Job, code: int) -> None:
        progress = read_json(job.run_dir / PROGRESS) or {}
        if code == 0 or progress.get("state") == "finished":  # (a signal that came while a finished worker exited changes nothing)
            state = "finished"
        elif code in CANCELLED_CODES:
            state = "cancelled"
        else:
            state = "failed"
        error = progress.get("error")
        if state == "failed" and not error:
            error = f"the training process exited with code {code}" + (
                f" (killed by signal {-code})" if code < 0 else "; see the log below"
            )
        progress.update(state=state, exit_code=code, error=error if state == "failed" else None, eta_s=None)
        progress["ended"] = progress.get("ended") or time.time()
        progress["updated"] = time.time()
        atomic_write_json(job.run_dir / PROGRESS, progress)
