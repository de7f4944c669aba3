"""`tunesmith ui`: the verb, its bad input, a real server process, and the pages shipped in the package."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from importlib.resources import files

import pytest

from tunesmith.cli import VERBS, build_parser, main


def test_the_verb_is_registered_with_examples():
    assert "ui" in VERBS
    parser = build_parser()
    args = parser.parse_args(["ui"])
    assert (args.runs_dir, args.host, args.port) == ("runs", "127.0.0.1", 7860)
    help_text = parser._subparsers._group_actions[0].choices["ui"].format_help()
    assert "--runs-dir" in help_text and "tunesmith ui --runs-dir" in help_text


@pytest.mark.parametrize(
    ("argv", "message"), [(["--port", "0"], "--port must be between"), (["--max-upload-mb", "-1"], "--max-upload-mb must be > 0")]
)
def test_bad_flags_exit_2(argv, message, capsys, tmp_path):
    assert main(["ui", "--runs-dir", str(tmp_path / "runs"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_runs_dir_that_is_a_file_exits_2(tmp_path, capsys):
    (tmp_path / "runs").write_text("")
    assert main(["ui", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_the_command_serves_the_pages_and_stops_on_ctrl_c(tmp_path):
    pytest.importorskip("uvicorn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunesmith", "ui", "--runs-dir", str(tmp_path / "runs"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=2) as r:
                    assert json.load(r) == {"runs": [], "active": []}
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.time() < deadline, "the UI did not answer within 60 s"
                time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
            assert "tunesmith" in r.read().decode()
        assert (tmp_path / "runs").is_dir()
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}" in out


def test_the_pages_ship_in_the_package_and_fetch_nothing_from_the_network():
    static = files("tunesmith.ui") / "static"
    names = {p.name for p in static.iterdir()}
    assert {"index.html", "style.css", "app.js"} <= names
    for name in names:
        text = (static / name).read_text(encoding="utf-8")
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, f"{name} refers to {urls}: the UI must work offline"
        for module in re.findall(r"""from\s+["']\./([^"']+)["']""", text):
            assert module in names, f"{name} imports ./{module}, which is not shipped"
