"""The pages in headless Chromium (Debian's /usr/bin/chromium driven by Playwright; `make chromium` installs it):
the runs table, a run page, the compare page, upload errors, and a tiny run started from the form and watched
until it finishes. Screenshots go to tests/ui/artifacts/ (or $TUNESMITH_UI_ARTIFACTS)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from ui.conftest import make_chat_run

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("TUNESMITH_UI_ARTIFACTS") or Path(__file__).parent / "artifacts")
MAX_UPLOAD = 64 * 1024

playwright_sync = pytest.importorskip("playwright.sync_api", reason="the dev extra installs playwright")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium: run `make chromium` (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(tmp_path_factory, finished_runs):
    """`tunesmith ui` on a free loopback port over a copy of the finished runs, in a thread."""
    import uvicorn

    from tunesmith.ui import create_app

    root = tmp_path_factory.mktemp("browser") / "runs"
    shutil.copytree(finished_runs, root, symlinks=True)
    if importlib.util.find_spec("tunesmith.generate") is not None:
        make_chat_run(root)
    cancelled = root / "spam-cancelled"  # as a cancel leaves it: checkpoints, no model, the worker's ending
    shutil.copytree(finished_runs / "spam-b", cancelled)
    shutil.rmtree(cancelled / "model")
    (cancelled / "metrics.json").unlink()
    (cancelled / "progress.json").write_text(
        json.dumps({"state": "cancelled", "exit_code": 130, "cancelled_at_step": 12, "step": 12, "max_steps": 24})
    )
    app = create_app(root, allowed_hosts=("127.0.0.1",), max_upload_bytes=MAX_UPLOAD, shutdown_timeout_s=10)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "the UI server did not start"
    yield {"url": f"http://127.0.0.1:{port}", "root": root}
    srv.should_exit = True
    thread.join(timeout=30)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A fresh page; JavaScript errors fail the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    # (an API answering 4xx is logged as "Failed to load resource": the tests provoke those on purpose)
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "Failed to load resource" not in msg.text else None)
    pg.errors = errors
    yield pg
    context.close()
    assert not errors, errors


def shot(pg, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_runs_table_sorts_and_filters(page, server):
    page.goto(server["url"] + "/#/")
    rows = page.locator("#runs-table tbody tr")
    rows.first.wait_for()
    assert {r.get_attribute("data-run-id") for r in rows.all()} >= {"spam-a", "spam-b"}
    header = page.locator("#runs-table th[data-key='id']")
    header.click()  # ascending by name
    ids = [r.get_attribute("data-run-id") for r in rows.all()]
    assert ids == sorted(ids)
    header.click()  # descending
    assert [r.get_attribute("data-run-id") for r in rows.all()] == sorted(ids, reverse=True)
    page.locator("#runs-table th[data-key='metric_value']").click()
    values = [float(v) for v in page.locator("#runs-table tbody tr td:nth-child(6) b").all_inner_texts()]
    assert values == sorted(values, reverse=True)
    order = [r.get_attribute("data-run-id") for r in rows.all()]
    assert order.index("spam-b") < order.index("spam-a"), "spam-b (macro-F1 1.0) sorts above spam-a (0.4)"
    page.fill("#filter", "spam-b")
    assert [r.get_attribute("data-run-id") for r in rows.all()] == ["spam-b"]
    page.fill("#filter", "")
    page.select_option("#filter-status", "finished")
    assert rows.count() >= 2
    assert "classify" in page.locator("#runs-table").inner_text()
    shot(page, "runs-table")


def test_run_page_shows_metrics_curves_doctor_and_tries_predictions(page, server):
    page.goto(server["url"] + "/#/run/spam-a")
    page.locator("#metrics-table").wait_for()
    assert page.locator("h1 .badge").inner_text() == "finished"
    assert re.fullmatch(r"\d\.\d{4}", page.locator("#main-metric").inner_text())
    assert page.locator("#curves svg polyline").count() >= 2, "train loss and at least one eval curve"
    assert page.locator("#confusion tbody tr").count() == 2
    assert set(page.locator("#per-language tbody tr td:first-child").all_inner_texts()) == {"en", "fr"}
    assert page.locator("#doctor .sev").count() >= 3
    page.fill("#try-input", "win cash prize now\nsee you at lunch")
    page.click("#try-button")
    page.locator("#try-result tbody tr").nth(1).wait_for()
    labels = page.locator("#try-result tbody tr td:nth-child(2)").all_inner_texts()
    assert len(labels) == 2 and set(labels) <= {"spam", "ham"}
    page.locator("#report summary").click()
    frame = page.frame_locator("iframe.report")
    assert "tunesmith report" in frame.locator("h1").inner_text()
    shot(page, "run-page")


def test_a_cancelled_run_offers_resume(page, server):
    page.goto(server["url"] + "/#/run/spam-cancelled")
    page.locator("#resume").wait_for()
    assert page.locator("h1 .badge").inner_text() == "cancelled"
    assert "checkpoint at step 12" in page.locator("#resume-note").inner_text()
    assert page.locator("#cancel").count() == 0 and page.locator("#try").count() == 0  # no model to try yet
    assert page.locator("#curves svg polyline").count() >= 1
    shot(page, "run-cancelled")


def test_chat_with_a_generative_run(page, server):
    if not (server["root"] / "chatty").is_dir():
        pytest.skip("needs the tunesmith.generate package")
    page.goto(server["url"] + "/#/run/chatty")
    page.fill("#chat-temperature", "0")
    page.fill("#chat-max-new-tokens", "6")
    page.fill("#chat-input", "hello teacher")
    page.click("#chat-send")
    reply = page.locator("#chat-log .msg.assistant .text:not(.streaming)")
    reply.wait_for()
    assert reply.inner_text().strip() and "[error" not in reply.inner_text()
    page.fill("#chat-input", "thank you")
    page.keyboard.press("Enter")
    page.locator("#chat-log .msg.assistant .text:not(.streaming)").nth(1).wait_for()
    assert page.locator("#chat-log .msg.user").count() == 2
    shot(page, "chat")


def test_compare_two_runs(page, server):
    page.goto(server["url"] + "/#/")
    page.locator("#runs-table").wait_for()
    for run_id in ("spam-a", "spam-b"):
        page.check(f"#runs-table tr[data-run-id='{run_id}'] input[type=checkbox]")
    page.click("#compare-selected")
    page.locator("#metric-deltas").wait_for()
    assert "macro_f1" in page.locator("#metric-deltas").inner_text()
    assert page.locator("#metric-deltas .better").count() >= 1, "spam-b's gains over spam-a are marked better"
    assert "training.lr" in page.locator("#config-diff").inner_text()
    assert page.locator("#overlaid-curves figure").first.locator("g.series").count() == 2
    page.check("#show-all-config")
    assert page.locator("#config-diff tbody tr").count() > 10
    shot(page, "compare")


def test_upload_errors_are_shown_on_the_page(page, server, tmp_path):
    page.goto(server["url"] + "/#/new")
    page.check("input[name=source][value=upload]")
    sheet = tmp_path / "data.xlsx"
    sheet.write_bytes(b"PK\x03\x04 not a csv")
    page.set_input_files("input[name=train_file]", str(sheet))
    assert "cannot be used as training data" in page.locator("#train-upload .error").inner_text()
    big = tmp_path / "big.csv"
    big.write_text("text,label\n" + "some text,ham\n" * (MAX_UPLOAD // 10))
    page.set_input_files("input[name=train_file]", str(big))
    assert "the limit is 64.0 KB" in page.locator("#train-upload .error").inner_text()
    page.click("#check-data")
    assert "choose a packaged dataset or upload" in page.locator("#check-result .error").inner_text()
    assert page.locator("#start-run").is_disabled()
    shot(page, "upload-errors")


def test_start_a_tiny_run_from_the_form_and_watch_it_finish(page, server, ui_data, tiny_model):
    page.goto(server["url"] + "/#/new")
    page.check("input[name=source][value=upload]")
    page.set_input_files("input[name=train_file]", str(ui_data))
    assert "120 rows" in page.locator("#train-upload .ok").inner_text()
    page.fill("input[name=model]", str(tiny_model))
    for name, value in {"epochs": "2", "lr": "1e-3", "batch_size": "8", "max_length": "32", "name": "from-the-page"}.items():
        page.fill(f"input[name={name}]", value)
    page.fill("textarea[name=extra]", "threads: 1\nprecision: fp32\nreport: false")
    page.click("#check-data")
    page.locator("#doctor-findings .sev").first.wait_for(timeout=60_000)
    assert page.locator("#check-result").inner_text().count("train_size") == 1
    shot(page, "new-run-checked")
    page.click("#start-run")
    page.wait_for_url(re.compile(r"#/run/from-the-page$"))
    page.locator("#progress").wait_for()
    # live progress pushed over server-sent events: "step N / 24" once the Trainer has begun
    page.locator("#progress [data-field='step'] b", has_text="/ 24").wait_for(timeout=90_000)
    shot(page, "run-progress")
    page.locator("h1 .status-finished").wait_for(timeout=90_000)
    page.locator("#metrics-table").wait_for()
    assert page.locator("#curves svg polyline").count() >= 2
    assert (server["root"] / "from-the-page" / "metrics.json").is_file()
    shot(page, "run-finished")
