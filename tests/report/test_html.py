"""`tunesmith report`: one self-contained HTML page per run, with or without the optional run files."""

from __future__ import annotations

import json
import shutil

import pytest

import tunesmith
from conftest import make_texts, write_csv
from tunesmith.cli import main
from tunesmith.evaluate.calibration import expected_calibration_error, reliability_bins
from tunesmith.report import write_report

CHROMIUM = "/usr/bin/chromium"  # Debian's package; the Makefile installs it for this test
OPTIONAL = ("data.json", "history.jsonl", "doctor.json", "overfitting.json", "eval_predictions.jsonl", "metrics.json")


@pytest.fixture(scope="module")
def run_dir(tiny_model, tmp_path_factory):
    """A tiny classify run with every optional file, one eval text holding a script tag, and the most confident error."""
    tmp = tmp_path_factory.mktemp("report")
    data = write_csv(tmp / "spam.csv", make_texts(60))
    args = {"model": str(tiny_model), "epochs": 2, "batch_size": 8, "lr": 1e-3, "max_length": 32, "precision": "fp32", "threads": 1}
    run = tunesmith.train({"data": {"train": str(data)}}, **args, out=str(tmp / "run"))
    predictions = run.dir / "eval_predictions.jsonl"
    hostile = {"row": 999, "text": "win <script>alert(1)</script> now", "gold": "spam", "label": "ham", "score": 0.99, "correct": False}
    predictions.write_text(json.dumps(hostile) + "\n" + predictions.read_text(encoding="utf-8"), encoding="utf-8")
    return run.dir


def test_report_has_metrics_baselines_plots_and_escapes_text(run_dir):
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))["eval"]
    assert "macro_f1" in page and f"{metrics['macro_f1']:.4f}" in page
    assert "majority class" in page and "TF-IDF + SVM" in page
    assert page.count('<img alt="') == 3 and "data:image/png;base64," in page, "training curves, confusion matrix, reliability diagram"
    for section in ("Configuration", "Data", "Per class", "Calibration", "Doctor findings", "Overfitting", "Most confident errors"):
        assert f"<h2>{section}</h2>" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "integrated gradients" in page and 'class="explanation"' in page, "the top errors are explained"
    assert 'src="http' not in page and 'href="http' not in page, "self-contained"


def test_report_without_optional_files(run_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare, ignore=shutil.ignore_patterns("checkpoints", "report.html", *OPTIONAL))
    page = write_report(bare, tmp_path / "out" / "bare.html").read_text(encoding="utf-8")
    for name in ("data.json", "history.jsonl", "doctor.json", "overfitting.json", "eval_predictions.jsonl"):
        assert f"no {name}" in page
    assert "<img" not in page


def test_cli_report(run_dir, tmp_path, capsys):
    output = tmp_path / "r.html"
    assert main(["report", str(run_dir), "--output", str(output)]) == 0
    assert str(output) in capsys.readouterr().out and output.is_file()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "not a tunesmith run" in capsys.readouterr().err


def test_report_of_a_regression_run_uses_generic_tables(tiny_model, tmp_path):
    rows = [(text, str(len(text) / 10)) for text, _ in make_texts(40)]
    data = write_csv(tmp_path / "rg.csv", rows, header=("text", "score"))
    args = {"model": str(tiny_model), "epochs": 1, "batch_size": 8, "max_length": 32, "precision": "fp32", "threads": 1}
    run = tunesmith.train(
        {"task": "regress", "data": {"train": str(data), "label_col": "score"}},
        **args,
        doctor=False,
        baseline=False,
        out=str(tmp_path / "rg"),
    )
    page = write_report(run.dir).read_text(encoding="utf-8")
    assert "<th>rmse</th>" in page and "<h3>per_target</h3>" in page
    assert "Confusion matrix" not in page and "no right/wrong flag" in page


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    """The page as a browser shows it: every figure decodes and has a size, the tables have rows, nothing is fetched."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make test installs it)")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (make test installs it)")
    path = write_report(run_dir, tmp_path / "report.html")
    requests, errors = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri(), wait_until="load")
            images = page.evaluate(
                "Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0, w: i.getBoundingClientRect().width}))"
            )
            tables = page.evaluate("Array.from(document.querySelectorAll('table')).map(t => t.rows.length)")
            headings = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.innerText)")
            ece = page.evaluate("document.body.innerText.match(/ECE[^:]*: ([0-9]+[.][0-9]+)/)[1]")
            explained_words = page.evaluate("document.querySelectorAll('.explanation span.w').length")
        finally:
            browser.close()
    assert sorted(i["alt"] for i in images) == ["confusion matrix", "reliability diagram", "training curves"]
    assert all(i["ok"] and i["w"] > 100 for i in images), images
    assert len(tables) >= 8 and all(rows >= 1 for rows in tables), tables
    assert {"Configuration", "Metrics", "Calibration", "Per class", "Most confident errors"} <= set(headings)
    records = [json.loads(line) for line in (run_dir / "eval_predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    bins = reliability_bins([r["score"] for r in records], [r["correct"] for r in records])
    assert ece == f"{expected_calibration_error(bins):.4f}" and explained_words > 0
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == [], "self-contained: no request leaves the file"
    assert errors == []
