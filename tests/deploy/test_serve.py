"""`tunesmith serve`: the HTTP app around a tiny run (endpoints, limits, micro-batching, metrics) and one real uvicorn server."""

from __future__ import annotations

import asyncio
import random
import re
import socket
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

import tunesmith
from conftest import make_texts, write_csv
from tunesmith.cli import build_parser, main
from tunesmith.deploy.serve import create_app, is_loopback

METRIC_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*\})? -?[0-9.e+-]+$|^[a-zA-Z_:]+\S* \+?Inf$')


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("serve-classify")
    data = write_csv(tmp / "spam.csv", make_texts(60))
    args = {"model": str(tiny_model), "epochs": 1, "batch_size": 8, "lr": 1e-3, "max_length": 32, "precision": "fp32", "threads": 1}
    return tunesmith.train({"data": {"train": str(data)}}, **args, doctor=False, baseline=False, out=str(tmp / "run"))


def fake_predict(delay: float = 0.0):
    def predict(texts):
        time.sleep(delay)
        return [{"label": "spam" if "free" in t else "ham", "score": 1.0} for t in texts]

    return predict


def metric_values(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        assert METRIC_LINE.match(line), f"not Prometheus text: {line!r}"
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    return values


def test_endpoints_serve_the_runs_predictions(classify_run):
    with TestClient(create_app(classify_run.dir, backend="torch")) as client:  # the precision Run.predict uses
        assert client.get("/health").json() == {"status": "ok", "model_loaded": True}
        texts = ["free prize win cash now", "see you at dinner later mum"]
        r = client.post("/predict", json={"texts": texts})
        assert r.status_code == 200
        got = r.json()["predictions"]
        expected = classify_run.predict(texts)
        assert [p["label"] for p in got] == [p["label"] for p in expected]
        assert got[0]["probabilities"].keys() == {"ham", "spam"} and got[0]["score"] == pytest.approx(expected[0]["score"], abs=1e-5)
        assert client.post("/predict", json={"texts": []}).json() == {"predictions": []}
        info = client.get("/info").json()
        assert (
            info["task"] == "classify"
            and info["labels"] == ["ham", "spam"]
            and info["backend"] == f"torch-{classify_run.predictor.precision}"
        )
        assert info["run"] == "run" and info["tunesmith_version"] == tunesmith.__version__ and info["model"]
        assert info["limits"]["max_texts"] == 64 and "api_key" not in info["limits"]
        m = client.get("/metrics")
        assert m.headers["content-type"].startswith("text/plain")
        values = metric_values(m.text)
        assert values['tunesmith_requests_total{endpoint="/predict",status="200"}'] == 2
        assert values['tunesmith_request_duration_seconds_count{endpoint="/predict"}'] == 2
        assert values["tunesmith_batch_size_count"] == 1, "the empty request never reaches the model"


def test_limits_answer_413_and_422(classify_run):
    with TestClient(create_app(classify_run.dir, predict=fake_predict(), max_texts=3, max_chars=10)) as client:
        r = client.post("/predict", json={"texts": ["a"] * 4})
        assert r.status_code == 413 and r.json()["limit"] == "max_texts" and r.json()["max_texts"] == 3
        r = client.post("/predict", json={"texts": ["ok", "x" * 11]})
        assert r.status_code == 422 and r.json()["limit"] == "max_chars" and r.json()["index"] == 1 and "texts[1]" in r.json()["error"]
        for body in ('{"texts": "one string"}', "[1, 2]", "{not json", '{"text": ["a"]}'):
            r = client.post("/predict", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 422 and "texts" in r.json()["error"], body
        r = client.post("/predict", json={"texts": ["ok", 3]})
        assert r.status_code == 422 and r.json()["error"] == "texts[1] is a int, expected a string"
        values = metric_values(client.get("/metrics").text)
        assert (
            values['tunesmith_errors_total{kind="invalid_request"}'] == 6 and values['tunesmith_errors_total{kind="too_many_texts"}'] == 1
        )


def test_api_key_guards_all_but_health(classify_run, monkeypatch):
    monkeypatch.setenv("TUNESMITH_API_KEY", "s3cret")
    with TestClient(create_app(classify_run.dir, predict=fake_predict())) as client:
        assert client.get("/health").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            assert client.post("/predict", json={"texts": ["a"]}, headers=headers).status_code == 401
            assert client.get("/info", headers=headers).status_code == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert client.post("/predict", json={"texts": ["free"]}, headers=ok).json() == {"predictions": [{"label": "spam", "score": 1.0}]}
        assert client.get("/metrics", headers=ok).status_code == 200


async def _fire(app, bodies, delays=None):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:

        async def one(i, body):
            await asyncio.sleep(delays[i] if delays else 0)
            return await client.post("/predict", json=body)

        responses = await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
        metrics = (await client.get("/metrics")).text
    await app.state.batcher.stop(1.0)
    return responses, metrics


def test_concurrent_requests_are_batched_together(classify_run):
    app = create_app(classify_run.dir, predict=fake_predict(0.01), max_wait_ms=50, max_batch=32)
    bodies = [{"texts": [f"free {i}", f"lunch {i}"]} for i in range(8)]
    responses, metrics = asyncio.run(_fire(app, bodies))
    for i, r in enumerate(responses):  # each request gets its own slice back, in order
        assert r.status_code == 200 and [p["label"] for p in r.json()["predictions"]] == ["spam", "ham"], i
    values = metric_values(metrics)
    calls = values["tunesmith_batch_size_count"]
    assert values["tunesmith_batch_size_sum"] == 16 and calls < 8, f"{calls} model calls for 8 concurrent requests"
    assert values['tunesmith_batch_size_bucket{le="1"}'] == 0


def test_full_queue_answers_503_with_retry_after(classify_run):
    app = create_app(classify_run.dir, predict=fake_predict(0.6), queue=1, max_wait_ms=0)
    # the first request is in the model, the second waits in the queue, the third finds it full
    responses, metrics = asyncio.run(_fire(app, [{"texts": ["a"]}] * 3, delays=[0, 0.1, 0.2]))
    assert [r.status_code for r in responses] == [200, 200, 503]
    assert responses[2].headers["Retry-After"] == "1" and responses[2].json()["limit"] == "queue"
    assert metric_values(metrics)['tunesmith_errors_total{kind="overloaded"}'] == 1


def test_slow_prediction_answers_504(classify_run):
    app = create_app(classify_run.dir, predict=fake_predict(0.5), timeout_s=0.1)
    responses, metrics = asyncio.run(_fire(app, [{"texts": ["a"]}]))
    assert responses[0].status_code == 504 and responses[0].json()["limit"] == "timeout_s"
    assert metric_values(metrics)['tunesmith_requests_total{endpoint="/predict",status="504"}'] == 1


def test_a_failing_model_answers_500_and_keeps_serving(classify_run):
    calls = []

    def flaky(texts):
        calls.append(texts)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return fake_predict()(texts)

    with TestClient(create_app(classify_run.dir, predict=flaky)) as client:
        r = client.post("/predict", json={"texts": ["a"]})
        assert r.status_code == 500 and "boom" in r.json()["error"]
        assert client.post("/predict", json={"texts": ["a"]}).status_code == 200


def test_shutdown_drains_accepted_requests(classify_run):
    app = create_app(classify_run.dir, predict=fake_predict(0.2), max_wait_ms=0)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            pending = [asyncio.create_task(client.post("/predict", json={"texts": [f"t{i}"]})) for i in range(3)]
            await asyncio.sleep(0.05)  # all three are accepted, one in the model, two queued
            await app.state.batcher.stop(5.0)
            late = await client.post("/predict", json={"texts": ["late"]})
            return await asyncio.gather(*pending), late

    done, late = asyncio.run(scenario())
    assert [r.status_code for r in done] == [200, 200, 200]
    assert late.status_code == 503 and "shutting down" in late.json()["error"]


def test_ner_run_returns_entity_spans(tmp_path, tiny_args):
    rng = random.Random(0)
    lines = []
    for _ in range(40):
        filler = rng.sample(["we", "met", "saw", "at", "the", "cafe", "today"], 2)
        person, place = rng.choice(["alice", "bob", "carol"]), rng.choice(["paris", "rome"])
        lines += [f"{t}\t{g}" for t, g in zip([*filler, person, "in", place], ["O", "O", "B-PER", "O", "B-LOC"])] + [""]
    (tmp_path / "train.conll").write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = {**tiny_args, "epochs": 1}
    run = tunesmith.train(
        {"task": "ner", "data": {"train": str(tmp_path / "train.conll")}}, **args, baseline=False, out=str(tmp_path / "run")
    )
    with TestClient(create_app(run.dir, backend="torch")) as client:
        r = client.post("/predict", json={"texts": ["we met alice in paris"]})
        assert r.status_code == 200
        (row,) = r.json()["predictions"]
        assert row == run.predict(["we met alice in paris"])[0]
        assert isinstance(row["entities"], list), row
        assert client.get("/info").json()["task"] == "ner"
    with TestClient(create_app(run.dir)) as client:  # auto: torch candidates compared on the decoded tags of the eval sentences
        choice = client.get("/info").json()["backend_choice"]
        assert choice["candidates"][0]["name"] == "torch-fp32" and "decoded tag" in choice["candidates"][0]["agreement_of"]
        assert "single-label classify" in choice["unavailable"]["onnx"]
        assert client.post("/predict", json={"texts": ["we met alice in paris"]}).json()["predictions"][0]["tokens"][-1] == "paris"


def test_onnx_backend_needs_the_export(classify_run):
    with pytest.raises(tunesmith.errors.UserError, match="tunesmith export"):
        create_app(classify_run.dir, backend="onnx")


def test_onnx_backend_serves_the_export(classify_run):
    pytest.importorskip("onnxruntime")
    assert main(["export", str(classify_run.dir)]) == 0
    texts = ["free prize win cash now", "see you at dinner later mum"]
    with TestClient(create_app(classify_run.dir, backend="onnx")) as client:
        got = client.post("/predict", json={"texts": texts}).json()["predictions"]
        assert client.get("/info").json()["backend"] == "onnx"
    assert [p["label"] for p in got] == [p["label"] for p in classify_run.predict(texts)]


def test_bad_settings_and_runs_are_user_errors(tmp_path, classify_run, capsys):
    with pytest.raises(tunesmith.errors.UserError, match="`max_batch` must be >= 1"):
        create_app(classify_run.dir, max_batch=0)
    with pytest.raises(tunesmith.errors.UserError, match="unknown setting"):
        create_app(classify_run.dir, max_batchh=2)
    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    args = build_parser().parse_args(["serve", "r", "--max-batch", "1", "--timeout-s", "2"])
    assert args.max_batch == 1 and args.timeout_s == 2 and args.host == "127.0.0.1" and args.backend == "auto"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")


def test_cli_warns_on_a_public_host_without_api_key(classify_run, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr("tunesmith.deploy.serve.serve", lambda run, **kw: calls.append((run, kw)))
    monkeypatch.delenv("TUNESMITH_API_KEY", raising=False)
    assert main(["serve", str(classify_run.dir), "--host", "0.0.0.0", "--max-batch", "4"]) == 0
    assert "without an API key" in capsys.readouterr().err
    assert calls[0][1]["host"] == "0.0.0.0" and calls[0][1]["max_batch"] == 4 and calls[0][1]["api_key"] is None
    assert main(["serve", str(classify_run.dir), "--host", "0.0.0.0", "--api-key", "k"]) == 0
    assert main(["serve", str(classify_run.dir)]) == 0
    assert "warning" not in capsys.readouterr().err and calls[1][1]["api_key"] == "k"


def test_real_uvicorn_server_on_loopback(classify_run):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(classify_run.dir, predict=fake_predict())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health", timeout=5).json()["model_loaded"] is True
        r = httpx.post(f"{base}/predict", json={"texts": ["free cash"]}, timeout=5)
        assert r.json() == {"predictions": [{"label": "spam", "score": 1.0}]}
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive()
