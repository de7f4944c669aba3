"""The job manager with stand-in workers (shell scripts in place of Python): endings, cancel, capacity, resume rules."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunesmith.errors import UserError
from tunesmith.ui.jobs import JobManager
from tunesmith.ui.rundirs import PROGRESS, TRAIN_LOG, run_status


def fake_python(tmp_path: Path, body: str) -> str:
    """An executable that stands in for the interpreter: `python -m tunesmith.ui.worker ...` runs ``body``."""
    path = tmp_path / "fake-python"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def wait_done(manager: JobManager, run_id: str, timeout: float = 20) -> dict:
    job = manager.jobs[run_id]
    assert job.done.wait(timeout), "the job's ending was not written"
    return json.loads((job.run_dir / PROGRESS).read_text())


def test_a_crashed_worker_is_failed_with_its_exit_code_and_log(tmp_path):
    root = tmp_path / "runs"
    manager = JobManager(root, python=fake_python(tmp_path, 'echo "worker args: $@"; exit 3'))
    manager.start({"task": "classify"}, root / "crash")
    progress = wait_done(manager, "crash")
    assert progress["state"] == "failed" and progress["exit_code"] == 3 and "exited with code 3" in progress["error"]
    log = (root / "crash" / TRAIN_LOG).read_text()
    assert "worker args: -m tunesmith.ui.worker --out" in log and "--config-json" in log
    assert run_status(root / "crash", live=manager.is_live("crash")) == "failed"
    with pytest.raises(UserError, match="already exists"):
        manager.start({}, root / "crash")
    with pytest.raises(UserError, match="before it wrote config.yaml"):
        manager.resume(root / "crash")


def test_cancel_sends_sigint_and_one_training_runs_at_a_time(tmp_path):
    root = tmp_path / "runs"
    manager = JobManager(root, python=fake_python(tmp_path, "trap 'exit 130' INT\nsleep 30 & wait"))
    manager.start({}, root / "slow")
    assert manager.active() == ["slow"] and run_status(root / "slow", live=manager.is_live("slow")) == "running"
    with pytest.raises(UserError, match="already training"):
        manager.start({}, root / "other")
    time.sleep(0.3)  # let the shell install its trap
    manager.cancel("slow")
    assert wait_done(manager, "slow")["state"] == "cancelled"
    assert manager.active() == []
    with pytest.raises(UserError, match="not training in this UI"):
        manager.cancel("slow")


def test_a_worker_that_wrote_finished_stays_finished_whatever_its_exit(tmp_path):
    root = tmp_path / "runs"
    body = 'printf \'{"state": "finished"}\' > "$4/progress.json"; kill -INT $$'  # $4 is the --out directory
    manager = JobManager(root, python=fake_python(tmp_path, body))
    manager.start({}, root / "done")
    assert wait_done(manager, "done")["state"] == "finished"


def test_resume_refuses_running_and_finished_runs_and_continues_interrupted_ones(tmp_path):
    root = tmp_path / "runs"
    run = root / "finished"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    (run / "metrics.json").write_text("{}")
    (run / "config.yaml").write_text("task: classify\n")
    manager = JobManager(root, python=fake_python(tmp_path, 'echo "resumed with: $@"'))
    with pytest.raises(UserError, match="has finished"):
        manager.resume(run)
    other = root / "other"
    other.mkdir()
    (other / "config.yaml").write_text("task: classify\n")
    # a worker of another UI process, still alive (its command line names tunesmith)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "tunesmith.ui.worker"])
    cmdline = Path(f"/proc/{worker.pid}/cmdline")
    deadline = time.monotonic() + 10
    while b"tunesmith" not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)  # until the child has exec'd: before that it still shows pytest's command line
    try:
        (other / PROGRESS).write_text(json.dumps({"state": "training", "pid": worker.pid, "host": socket.gethostname()}))
        with pytest.raises(UserError, match="still training"):
            manager.resume(other)
    finally:
        worker.kill()
        worker.wait()
    assert run_status(other) == "interrupted"
    manager.resume(other)
    assert wait_done(manager, "other")["state"] == "finished"
    assert "resumed with: -m tunesmith.ui.worker --out" in (other / TRAIN_LOG).read_text() and "--resume" in (other / TRAIN_LOG).read_text()
