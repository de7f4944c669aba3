import json

import pytest

from tunesmith.training.rundir import (
    CHECKPOINT_MANIFEST,
    atomic_write_json,
    atomic_write_text,
    checkpoint_problem,
    commit_checkpoint,
    is_complete_checkpoint,
    last_checkpoint,
    replace_dir,
)


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"a": 1})

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, "half")
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"], "no temporary file is left behind"


def test_replace_dir(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "old").write_text("x")
    new = tmp_path / ".model.tmp"
    new.mkdir()
    (new / "new").write_text("y")
    replace_dir(new, final)
    assert [p.name for p in final.iterdir()] == ["new"] and not new.exists()


def test_last_checkpoint_skips_incomplete(tmp_path):
    root = tmp_path / "checkpoints"
    for step, committed in ((10, True), (20, True), (30, False)):
        d = root / f"checkpoint-{step}"
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(b"w")
        (d / "trainer_state.json").write_text("{}")
        if committed:
            commit_checkpoint(d, step)
    best, skipped = last_checkpoint(tmp_path)
    assert best == root / "checkpoint-20" and skipped == [root / "checkpoint-30"]
    assert not is_complete_checkpoint(root / "checkpoint-30")
    assert last_checkpoint(tmp_path / "none") == (None, [])


def test_checkpoint_problems_name_what_is_wrong(tmp_path):
    d = tmp_path / "checkpoint-5"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"weights")
    (d / "optimizer.pt").write_bytes(b"moments")
    assert "still being written" in checkpoint_problem(d)
    (d / "trainer_state.json").write_text("{}")
    manifest = commit_checkpoint(d, 5)
    assert set(manifest["files"]) == {"model.safetensors", "optimizer.pt", "trainer_state.json"}
    assert checkpoint_problem(d) is None
    (d / "optimizer.pt").write_bytes(b"moment")
    assert "optimizer.pt is 6 bytes, the manifest says 7" in checkpoint_problem(d, verify_hashes=False)
    (d / "optimizer.pt").write_bytes(b"moMents")
    assert checkpoint_problem(d, verify_hashes=False) is None, "same size: only the hash tells"
    assert "optimizer.pt does not match its sha256" in checkpoint_problem(d)
    (d / "optimizer.pt").unlink()
    assert checkpoint_problem(d) == "optimizer.pt is missing"
    (d / CHECKPOINT_MANIFEST).write_text("{not json")
    assert "unreadable" in checkpoint_problem(d)
