"""read_table: every supported format, and one clear UserError per kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunesmith.data import read_table
from tunesmith.errors import UserError


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def error_of(path: Path | str, **kwargs: str) -> str:
    with pytest.raises(UserError) as info:
        read_table(path, **kwargs)
    return str(info.value)


# --- formats that must work -------------------------------------------------------------------


def test_csv_rows_columns_and_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "text,label\nhello,a\n\nbye,b\n")
    table = read_table(path)
    assert table.kind == "csv"
    assert table.path == str(path)
    assert table.columns == ["text", "label"]
    assert table.rows == [{"text": "hello", "label": "a"}, {"text": "bye", "label": "b"}]
    assert table.lines == [2, 4]  # the blank line 3 is skipped but still counted


def test_unnamed_index_column_like_sms_spam(tmp_path: Path) -> None:
    path = write(tmp_path, "sms.csv", ',spam,text\n0,0,"Go until jurong, point"\n1,1,Free entry\n')
    table = read_table(path)
    assert table.columns == ["Unnamed: 0", "spam", "text"]
    assert table.rows[0] == {"Unnamed: 0": "0", "spam": "0", "text": "Go until jurong, point"}


def test_quoted_newline_keeps_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "q.csv", 'text,label\n"line one\nline two\nline three",a\nnext,b\n"x, ""quoted""",c\n')
    table = read_table(path)
    assert [row["text"] for row in table.rows] == ["line one\nline two\nline three", "next", 'x, "quoted"']
    assert table.lines == [2, 5, 6]


def test_crlf_line_endings(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "win.csv", b'text,label\r\nhello,a\r\n"two\r\nlines",b\r\nlast,c\r\n'))
    assert [row["text"] for row in table.rows] == ["hello", "two\r\nlines", "last"]
    assert table.lines == [2, 3, 5]


def test_utf8_bom_is_skipped(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "bom.csv", "\ufefftext,label\ncafé,a\n".encode()))
    assert table.columns == ["text", "label"]
    assert table.rows[0]["text"] == "café"


def test_utf16_with_bom_is_decoded(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "excel.txt", "text\tlabel\nhi\ta\n".encode("utf-16")))
    assert table.kind == "tsv"
    assert table.rows == [{"text": "hi", "label": "a"}]


@pytest.mark.parametrize("name", ["data.tsv", "data.tab", "data.txt"])
def test_tsv(tmp_path: Path, name: str) -> None:
    table = read_table(write(tmp_path, name, 'text\tlabel\nhello, world\tpos\nit \'s "fine"\tneg\n'))
    assert table.kind == "tsv"
    assert table.rows == [{"text": "hello, world", "label": "pos"}, {"text": 'it \'s "fine"', "label": "neg"}]


def test_txt_with_commas_is_csv(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "data.txt", "text,label\nhi,a\n"))
    assert table.kind == "csv"
    assert table.rows == [{"text": "hi", "label": "a"}]


def test_short_rows_are_padded_with_none(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "short.csv", "text,label,extra\nhi,a\n"))
    assert table.rows == [{"text": "hi", "label": "a", "extra": None}]


def test_header_names_are_stripped(tmp_path: Path) -> None:
    assert read_table(write(tmp_path, "sp.csv", "text, label\nhi,a\n")).columns == ["text", "label"]


@pytest.mark.parametrize("name", ["data.jsonl", "data.ndjson", "data.json-lines", "DATA.JSONL"])
def test_jsonl(tmp_path: Path, name: str) -> None:
    lines = [json.dumps({"text": "hi", "label": 1}), "", "   ", json.dumps({"label": 0, "text": "yo\u2028there", "extra": [1]})]
    table = read_table(write(tmp_path, name, "\n".join(lines) + "\n"))
    assert table.kind == "jsonl"
    assert table.columns == ["text", "label", "extra"]
    assert table.rows == [{"text": "hi", "label": 1, "extra": None}, {"text": "yo\u2028there", "label": 0, "extra": [1]}]
    assert table.lines == [1, 4]


@pytest.mark.parametrize("name", ["data.parquet", "data.pq"])
def test_parquet(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    pq.write_table(pa.table({"text": ["a", "b", None], "label": [1, 0, 1]}), path)
    table = read_table(path)
    assert table.kind == "parquet"
    assert table.columns == ["text", "label"]
    assert table.rows[2] == {"text": None, "label": 1}
    assert table.lines == [1, 2, 3]


def test_parquet_drops_pandas_index(tmp_path: Path) -> None:
    import pandas as pd

    path = tmp_path / "df.parquet"
    pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]}, index=[10, 20]).to_parquet(path)
    assert read_table(path).columns == ["text", "label"]


def test_latin1_with_encoding_flag(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "l1.csv", "text,label\ncafé,a\n".encode("latin-1")), encoding="latin-1")
    assert table.rows[0]["text"] == "café"


def test_long_field_is_accepted(tmp_path: Path) -> None:
    long_text = "word " * 40_000  # over the csv module's default 128 KiB field limit
    table = read_table(write(tmp_path, "long.csv", f'text,label\n"{long_text}",a\n'))
    assert table.rows[0]["text"] == long_text


# --- bad input: one UserError each, naming file, line and fix ----------------------------------


def test_missing_file(tmp_path: Path) -> None:
    message = error_of(tmp_path / "nope.csv")
    assert message.startswith(f"file not found: {tmp_path / 'nope.csv'}")
    assert "check the path" in message
    assert "packaged dataset" in message
    assert "tunesmith data list" in message


def test_directory(tmp_path: Path) -> None:
    assert "is a directory" in error_of(tmp_path)


def test_unknown_extension(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "data.xyz", "a,b\n"))
    assert "data.xyz" in message
    assert "'.xyz'" in message
    for ext in (".csv", ".tsv", ".jsonl", ".parquet"):
        assert ext in message


def test_json_extension_hints_jsonl(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "data.json", "[]"))
    assert ".jsonl" in message and "jq" in message


def test_empty_file(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "empty.csv", b""))
    assert "empty.csv is empty (0 bytes)" in message
    assert "header" in message


@pytest.mark.parametrize("name", ["blank.csv", "blank.jsonl"])
def test_whitespace_only_file(tmp_path: Path, name: str) -> None:
    assert f"{name} contains only whitespace" in error_of(write(tmp_path, name, "\n  \n\t\n"))


def test_empty_parquet_file(tmp_path: Path) -> None:
    assert "is empty (0 bytes)" in error_of(write(tmp_path, "e.parquet", b""))


@pytest.mark.parametrize(("name", "content"), [("h.csv", "text,label\n"), ("h.tsv", "text\tlabel\n\n\n")])
def test_header_only(tmp_path: Path, name: str, content: str) -> None:
    message = error_of(write(tmp_path, name, content))
    assert name in message
    assert "header (text, label) but no data rows" in message


def test_parquet_without_rows(tmp_path: Path) -> None:
    path = tmp_path / "none.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), path)
    assert "none.parquet has the columns (text) but no rows" in error_of(path)


def test_binary_file(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "bin.csv", b"text,label\n\x00\x01\x02\xff" * 10))
    assert "bin.csv is not a text file" in message
    assert "NUL byte at offset 11" in message


def test_parquet_named_csv(tmp_path: Path) -> None:
    path = tmp_path / "real.parquet"
    pq.write_table(pa.table({"text": ["a"]}), path)
    message = error_of(write(tmp_path, "fake.csv", path.read_bytes()))
    assert "fake.csv is not a text file" in message and "rename it to .parquet" in message


def test_xlsx_named_csv(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "sheet.csv", b"PK\x03\x04" + b"\x00" * 20))
    assert "sheet.csv is not a text file" in message and "export the sheet as CSV" in message


@pytest.mark.parametrize("content", [b"text,label\nhello,a\n", b"PAR1 this is not really parquet PAR1"])
def test_not_parquet(tmp_path: Path, content: bytes) -> None:
    message = error_of(write(tmp_path, "bad.parquet", content))
    assert message.startswith(str(tmp_path / "bad.parquet"))
    assert "not a Parquet file" in message or "cannot read the Parquet file" in message


def test_non_utf8(tmp_path: Path) -> None:
    content = b"text,label\nhello,a\ncaf" + b"\xe9,b\n"
    path = write(tmp_path, "data.csv", content)
    message = error_of(path)
    offset = content.index(b"\xe9")
    assert f"data.csv line 3: byte 0xe9 at offset {offset} is not valid utf-8" in message
    assert "iconv -f latin1 -t utf-8" in message
    assert "--encoding latin-1" in message


def test_non_utf8_after_bom_counts_the_bom(tmp_path: Path) -> None:
    content = b"\xef\xbb\xbftext,label\n\xff,a\n"
    assert "line 2: byte 0xff at offset 14" in error_of(write(tmp_path, "b.csv", content))


def test_unknown_encoding(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "d.csv", "text\nhi\n"), encoding="klingon")
    assert "unknown encoding 'klingon'" in message and "d.csv" in message


def test_malformed_jsonl_line(tmp_path: Path) -> None:
    long_tail = "x" * 200
    content = '{"text": "ok", "label": 1}\n\n{"text": "broken" "label": 2, "pad": "' + long_tail + '"}\n{"text": bad}\n'
    message = error_of(write(tmp_path, "d.jsonl", content))
    assert "d.jsonl line 3: not valid JSON (Expecting ',' delimiter at column 19)" in message
    assert '{"text": "broken" "label"' in message
    assert long_tail not in message  # the line is cut to its first 80 characters
    assert "1 more bad lines: lines 4" in message


def test_jsonl_line_not_an_object(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "d.jsonl", '{"text": "ok"}\n["a", 1]\n'))
    assert "d.jsonl line 2: expected a JSON object" in message
    assert "got a list" in message


def test_jsonl_holding_one_array(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "arr.jsonl", json.dumps([{"text": "a"}, {"text": "b"}], indent=1)))
    assert "one JSON array" in message and "jq -c" in message


def test_csv_row_with_too_many_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "sms.csv", "text,label\nfine,a\nhello, world,b\nok,b\nx,y,z,w\n")
    message = error_of(path)
    assert "sms.csv line 3: 3 fields but the header (line 1) has 2 columns (text, label)" in message
    assert "1 more rows like this: lines 5" in message
    assert 'enclosed in double quotes, e.g. "hello, world"' in message


def test_unclosed_quote(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "q.csv", 'text,label\nok,a\n"never closed,b\nmore,c\n'))
    assert "q.csv line 3: a quoted field opens here and runs on to line 4" in message


def test_unclosed_quote_on_the_last_line(tmp_path: Path) -> None:
    assert "q.csv line 3: a quoted field opens here" in error_of(write(tmp_path, "q.csv", 'text,label\nok,a\n"never closed,b\n'))


def test_jsonl_of_empty_objects(tmp_path: Path) -> None:
    assert "e.jsonl holds only empty objects" in error_of(write(tmp_path, "e.jsonl", "{}\n{}\n"))


def test_tsv_stray_quote_is_read_as_plain_tsv(tmp_path: Path) -> None:
    """Plain TSV has no quoting (the VADER ground-truth files rely on that): a stray quote stays a character."""
    table = read_table(write(tmp_path, "s.tsv", 'text\tlabel\n"oops\ta\nrow two\tb\n"\tc\nlast\td\n'))
    assert [r["text"] for r in table.rows] == ['"oops', "row two", '"', "last"]
    assert table.lines == [2, 3, 4, 5]


def test_duplicate_header(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "dup.csv", "text,label,text\na,b,c\n"))
    assert "dup.csv line 1: the header names column 'text' twice (columns 1 and 3)" in message
