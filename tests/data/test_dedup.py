import json

import pytest

from tunesmith.cli import main
from tunesmith.data.dedup import dedup_files
from tunesmith.data.loading import read_table
from tunesmith.errors import UserError

TRAIN = "text,label,source\nHello there!,a,x\nhello there,a,y\nbye now,b,z\nHello there!,a,w\nsomething else,b,v\n"
EVAL = "text,label\nbye now,b\nnew one,a\nnew one,a\nBye now!,b\n"


def test_exact_dedup_keeps_first_rows_and_every_column(tmp_path):
    (tmp_path / "t.csv").write_text(TRAIN)
    report = dedup_files(str(tmp_path / "t.csv"), str(tmp_path / "c.csv"))
    table = read_table(tmp_path / "c.csv")
    assert [r["source"] for r in table.rows] == ["x", "y", "z", "v"]
    assert report["duplicates_removed"] == 1 and report["duplicate_lines"] == [5]


def test_near_dedup_and_leakage(tmp_path):
    (tmp_path / "t.csv").write_text(TRAIN)
    (tmp_path / "e.csv").write_text(EVAL)
    report = dedup_files(
        str(tmp_path / "t.csv"), str(tmp_path / "c.jsonl"), eval=str(tmp_path / "e.csv"), eval_out=str(tmp_path / "e.jsonl"), near=True
    )
    kept = [json.loads(line)["text"] for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert kept == ["Hello there!", "bye now", "something else"]
    eval_kept = [json.loads(line)["text"] for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert eval_kept == ["new one"]
    assert report["eval_leaked_removed"] == 2 and report["eval_duplicates_removed"] == 1


def test_cli_and_errors(tmp_path, capsys):
    (tmp_path / "t.csv").write_text(TRAIN)
    assert main(["dedup", str(tmp_path / "t.csv"), "--out", str(tmp_path / "o.tsv")]) == 0
    assert "kept 4 of 5 rows" in capsys.readouterr().out
    assert main(["dedup", str(tmp_path / "t.csv"), "--out", str(tmp_path / "o.txt")]) == 2
    with pytest.raises(UserError, match="--eval-out"):
        dedup_files(str(tmp_path / "t.csv"), str(tmp_path / "o.csv"), eval=str(tmp_path / "t.csv"))
