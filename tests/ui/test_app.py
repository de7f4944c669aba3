"""The UI's HTTP API on real tiny runs: listing, files (no traversal), guards, uploads, the data check, the try
box, and a training worker started, cancelled (checkpoint kept), resumed and followed over server-sent events."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from tunesmith.ui import create_app  # noqa: E402
from tunesmith.ui.rundirs import PROGRESS  # noqa: E402
from ui.conftest import make_chat_run  # noqa: E402

H = {"X-Tunesmith": "1"}


def client(root: Path, **kwargs) -> TestClient:
    return TestClient(create_app(root, allowed_hosts=("testserver",), **kwargs))


def test_runs_table_and_run_detail(finished_runs):
    c = client(finished_runs)
    runs = {r["id"]: r for r in c.get("/api/runs").json()["runs"]}
    assert set(runs) == {"spam-a", "spam-b"}
    a = runs["spam-a"]
    assert (a["task"], a["method"], a["status"], a["metric"]) == ("classify", "full", "finished", "macro_f1")
    assert isinstance(a["metric_value"], float) and a["duration_s"] is not None
    detail = c.get("/api/run", params={"id": "spam-a"}).json()
    assert detail["metrics"]["eval"]["per_language"].keys() == {"en", "fr"}
    assert detail["doctor"]["findings"] is not None and detail["has_report"] and detail["has_model"]
    assert any("eval_macro_f1" in r for r in detail["history"]) and detail["history_offset"] > 0
    assert c.get("/api/run", params={"id": "nope"}).status_code == 404


def test_files_are_served_from_inside_the_run_only(finished_runs, tmp_path):
    c = client(finished_runs)
    report = c.get("/api/run/file", params={"id": "spam-a", "path": "report.html"})
    assert report.status_code == 200 and "tunesmith report" in report.text
    assert "sandbox" in report.headers["content-security-policy"]
    secret = finished_runs.parent / "secret.txt"
    secret.write_text("top secret")
    for run_id, path in [
        ("spam-a", "../spam-b/config.yaml"),
        ("spam-a", "../../secret.txt"),
        ("spam-a", "/etc/passwd"),
        ("spam-a", "model/../../../secret.txt"),
        ("..", "secret.txt"),
        ("spam-a/..", "secret.txt"),
        ("/etc", "passwd"),
    ]:
        r = c.get("/api/run/file", params={"id": run_id, "path": path})
        assert r.status_code == 404, (run_id, path)
        assert "top secret" not in r.text and "root:" not in r.text
    # encoded traversal in the raw URL and in the page path
    for raw in ["/api/run/file?id=spam-a&path=..%2F..%2Fsecret.txt", "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd", "/static/../app.py"]:
        r = c.get(raw)
        assert r.status_code in (400, 404) and "top secret" not in r.text and "root:" not in r.text


def test_guards_refuse_foreign_hosts_and_cross_site_posts(finished_runs):
    c = client(finished_runs)
    assert c.get("/api/runs", headers={"Host": "evil.example"}).status_code == 403
    r = c.post("/api/run/predict", params={"id": "spam-a"}, json={"texts": ["hi"]})
    assert r.status_code == 403 and "X-Tunesmith" in r.json()["error"]
    page = c.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/static/app.js">' in page.text


def test_try_box_predicts_and_limits_requests(finished_runs):
    c = client(finished_runs)
    r = c.post("/api/run/predict", params={"id": "spam-a"}, json={"texts": ["win cash prize now", "", "see you at lunch"]}, headers=H)
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert len(preds) == 2 and {p["label"] for p in preds} <= {"spam", "ham"}
    assert c.post("/api/run/predict", params={"id": "spam-a"}, json={"texts": ["x"] * 100}, headers=H).status_code == 413
    assert c.post("/api/run/predict", params={"id": "spam-a"}, json={"texts": "x"}, headers=H).status_code == 422


def test_compare_api(finished_runs):
    c = client(finished_runs)
    r = c.get("/api/compare", params=[("id", "spam-a"), ("id", "spam-b")]).json()
    assert next(row for row in r["config"] if row["key"] == "training.lr")["differs"]
    f1 = next(m for m in r["metrics"] if m["name"] == "macro_f1")
    assert f1["greater_is_better"] and f1["deltas"][0] == 0 and f1["deltas"][1] == pytest.approx(f1["values"][1] - f1["values"][0])
    assert f1["deltas"][1] > 0, "spam-b separates the classes, spam-a does not"
    assert c.get("/api/compare", params={"id": "spam-a"}).status_code == 422
    assert c.get("/api/compare", params=[("id", "spam-a"), ("id", "../x")]).status_code == 404


def test_uploads_are_limited_and_validated(runs_copy, ui_data):
    c = client(runs_copy, max_upload_bytes=4096)
    big = ui_data.read_bytes()
    assert len(big) > 4096
    r = c.post("/api/uploads", params={"name": "spam.csv"}, content=big, headers=H)
    assert r.status_code == 413 and "the limit is 4.0 KB" in r.json()["error"]
    r = c.post("/api/uploads", params={"name": "sheet.xlsx"}, content=b"PK\x03\x04", headers=H)
    assert r.status_code == 415 and "Export spreadsheets as CSV" in r.json()["error"]
    r = c.post("/api/uploads", params={"name": "empty.csv"}, content=b"", headers=H)
    assert r.status_code == 422 and "empty" in r.json()["error"]
    r = c.post("/api/uploads", params={"name": "binary.csv"}, content=b"\x00\x01\x02PK\x03\x04" * 10, headers=H)
    assert r.status_code == 422 and "binary.csv" in r.json()["error"]
    r = c.post("/api/uploads", params={"name": "../../evil name.csv"}, content=b"text,label\nwin cash,spam\nsee you,ham\n", headers=H)
    assert r.status_code == 200
    info = r.json()
    assert info["columns"] == ["text", "label"] and info["rows"] == 2
    saved = Path(info["path"])
    assert saved.name == "evil-name.csv" and saved.resolve().is_relative_to((runs_copy / ".uploads").resolve())
    leftovers = [p for p in (runs_copy / ".uploads").rglob("*") if p.is_file() and p != saved]
    assert leftovers == [], "refused uploads must not stay on disk"
    assert "spam-a" in {r["id"] for r in c.get("/api/runs").json()["runs"]} and len(c.get("/api/runs").json()["runs"]) == 2


def test_check_reads_the_data_and_runs_the_doctor(runs_copy, ui_data, tiny_model):
    c = client(runs_copy)
    path = c.post("/api/uploads", params={"name": "spam.csv"}, content=ui_data.read_bytes(), headers=H).json()["path"]
    r = c.post("/api/check", json={"train": path, "model": str(tiny_model), "max_length": "32", "name": "checked"}, headers=H)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["data"]["rows_read"] == 120 and body["data"]["train_size"] + body["data"]["eval_size"] == 120
    assert body["doctor"]["summary"]["rows"] == 120 and isinstance(body["doctor"]["findings"], list)
    assert body["name"] == "checked" and not body["exists"] and not (runs_copy / "checked").exists()
    r = c.post("/api/check", json={"train": path, "model": str(tiny_model), "text_col": "body"}, headers=H)
    assert r.status_code == 422 and "no text column named 'body'" in r.json()["error"]
    r = c.post("/api/check", json={"train": path, "model": "/no/such/model"}, headers=H)
    assert r.status_code == 422 and "model directory not found" in r.json()["error"]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def read_events(c: TestClient, run_id: str) -> list[tuple[str, dict]]:
    events, name = [], None
    with c.stream("GET", "/api/run/events", params={"id": run_id}) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return events


def test_start_cancel_keeps_a_checkpoint_and_resume_finishes(runs_copy, ui_data, tiny_model):
    from tunesmith.training.rundir import is_complete_checkpoint

    with client(runs_copy) as c:
        path = c.post("/api/uploads", params={"name": "spam.csv"}, content=ui_data.read_bytes(), headers=H).json()["path"]
        form = {
            "train": path,
            "model": str(tiny_model),
            "max_steps": "120",
            "batch_size": "8",
            "lr": "1e-3",
            "max_length": "32",
            "name": "live",
            "extra": "threads: 1\nprecision: fp32\nearly_stopping: null\nreport: false\ndoctor: false\nbaseline: false\neval_steps: 40",
        }
        assert c.post("/api/runs", json=form, headers=H).json() == {"id": "live"}
        run = runs_copy / "live"
        assert c.post("/api/runs", json={**form, "name": "second"}, headers=H).status_code == 422  # one training at a time

        def training():
            try:
                p = json.loads((run / PROGRESS).read_text())
            except (OSError, ValueError):
                return None
            return p if p.get("state") == "training" and (p.get("step") or 0) >= 1 else None

        wait_for(training, 90, "the worker to start training")
        assert c.get("/api/runs").json()["active"] == ["live"]
        assert c.post("/api/run/cancel", params={"id": "live"}, headers=H).status_code == 200
        events = read_events(c, "live")
        assert events[-1] == ("done", {"status": "cancelled"})
        progress = json.loads((run / PROGRESS).read_text())
        assert progress["exit_code"] == 130 and progress["state"] == "cancelled"
        stopped = progress["cancelled_at_step"]
        assert 1 <= stopped < 120
        assert is_complete_checkpoint(run / "checkpoints" / f"checkpoint-{stopped}"), "cancel must save the step it stopped at"
        summary = next(r for r in c.get("/api/runs").json()["runs"] if r["id"] == "live")
        assert summary["status"] == "cancelled" and summary["resumable"]
        assert not (run / "metrics.json").exists()

        assert c.post("/api/run/resume", params={"id": "live"}, headers=H).status_code == 200
        events = read_events(c, "live")
        kinds = {name for name, _ in events}
        assert {"progress", "history", "status", "done"} <= kinds
        assert events[-1] == ("done", {"status": "finished"}), (run / "train.log").read_text()[-3000:]
        steps = [e["step"] for name, e in events if name == "progress" and e.get("step") is not None]
        assert steps and min(steps) >= stopped, "the resumed run continues from the checkpoint"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["training"]["steps"] == 120
        assert f"checkpoint-{stopped}" in (run / "train.log").read_text()
        assert c.post("/api/run/resume", params={"id": "live"}, headers=H).status_code == 422  # finished: nothing to resume
        assert c.post("/api/run/cancel", params={"id": "live"}, headers=H).status_code == 422
    assert os.environ.get("PYTEST_CURRENT_TEST")  # (the client's shutdown found no worker left to cancel)


@pytest.fixture
def sft_run(tmp_path) -> Path:
    pytest.importorskip("tunesmith.generate")
    make_chat_run(tmp_path / "runs")
    return tmp_path / "runs"


def test_chat_with_a_generative_run_streams_the_reply(sft_run):
    c = client(sft_run)
    detail = c.get("/api/run", params={"id": "chatty"}).json()
    assert detail["generative"] and detail["has_model"]
    conversation = [
        {"role": "user", "content": "hello teacher"},
        {"role": "assistant", "content": "good morning"},
        {"role": "user", "content": "thank you"},
    ]
    body = {"messages": conversation, "temperature": 0, "max_new_tokens": 6}
    with c.stream("POST", "/api/run/chat", params={"id": "chatty"}, json=body, headers=H) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        pieces = list(r.iter_text())
    reply = "".join(pieces)
    assert reply.strip() and "[error" not in reply
    again = c.post("/api/run/chat", params={"id": "chatty"}, json=body, headers=H).text
    assert again == reply, "temperature 0 answers the same conversation the same way"
    bad = [
        ({"messages": []}, 422),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, 422),
        ({"messages": [{"role": "user", "content": "x" * 6000}]}, 413),
        ({"messages": conversation, "max_new_tokens": 0}, 422),
        ({"messages": conversation, "temperature": -1}, 422),
    ]
    for payload, status in bad:
        assert c.post("/api/run/chat", params={"id": "chatty"}, json=payload, headers=H).status_code == status, payload
