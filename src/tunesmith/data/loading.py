"""Read a CSV, TSV, JSONL or Parquet file into a :class:`Table` of rows, with line numbers.

Every way a file can be wrong ends in one :class:`~tunesmith.errors.UserError` naming the file, the
line and what to do about it; no parser exception reaches the user. CSV/TSV go through the stdlib
``csv`` module over the decoded text (rather than pandas) so quoted newlines work and every row
knows the line it starts on, which the later validation messages quote back.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError

EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json-lines": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "csv or tsv (sniffed)",
}
"""Supported file extensions and the format each one is read as."""

_BINARY_PROBE = 8192
_SHOWN_LINES = 5
# Wide enough for whole documents in one field; the csv default (128 KiB) would reject long texts.
_FIELD_SIZE_LIMIT = 2**31 - 1
_MAGIC_HINTS = (
    (b"PAR1", "it is a Parquet file; rename it to .parquet"),
    (b"PK\x03\x04", "it is a zip archive (an Excel .xlsx workbook is one); export the sheet as CSV or unzip it"),
    (b"\x1f\x8b", "it is gzip-compressed; decompress it first (gunzip)"),
    (b"\xd0\xcf\x11\xe0", "it is an old Excel/Office file; export the sheet as CSV"),
)


@dataclass
class Table:
    """Rows read from one file, every row holding every column (missing values are ``None``)."""

    path: str
    kind: str
    columns: list[str]
    rows: list[dict[str, Any]]
    lines: list[int]

    def __len__(self) -> int:
        """Number of rows."""
        return len(self.rows)


def read_table(path: str | Path, encoding: str = "utf-8") -> Table:
    """Read a data file, choosing the format from its extension.

    Args:
        path: a ``.csv``, ``.tsv``/``.tab``, ``.jsonl``/``.ndjson``/``.json-lines``,
            ``.parquet``/``.pq`` or ``.txt`` (tab or comma, sniffed) file. CSV/TSV files need a
            header line.
        encoding: text encoding of CSV/TSV/JSONL files. A UTF-8 byte-order mark is skipped.

    Returns:
        The table, with the 1-based line each row starts on (Parquet: row index + 1).

    Raises:
        UserError: the file is missing, empty, binary, not in ``encoding``, malformed, or has an
            unsupported extension; the message names the file, the line and the fix.
    """
    shown = str(path)
    file = Path(path)
    if not file.exists():
        raise UserError(
            f"file not found: {shown}; check the path, or name a packaged dataset instead (list them with `tunesmith data list`)"
        )
    if not file.is_file():
        raise UserError(f"{shown} is a directory, not a data file; pass a CSV, TSV, JSONL or Parquet file inside it")
    kind = _kind_from_extension(file, shown)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {shown}: {exc.strerror or exc}; check the file's permissions") from None
    if not data:
        raise UserError(f"{shown} is empty (0 bytes); expected a header line such as `text,label` followed by one example per line")
    if kind == "parquet":
        return _read_parquet(file, shown, data)
    text = _decode(data, shown, encoding)
    if not text.strip():
        raise UserError(f"{shown} contains only whitespace; expected a header line such as `text,label` followed by one example per line")
    if kind == "jsonl":
        return _read_jsonl(text, shown)
    if kind not in ("csv", "tsv"):
        first_line = text.lstrip().split("\n", 1)[0]
        kind = "tsv" if "\t" in first_line else "csv"
    return _read_delimited(text, shown, kind)


def _kind_from_extension(file: Path, shown: str) -> str:
    suffix = file.suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    supported = ", ".join(EXTENSIONS)
    hint = ""
    if suffix == ".json":
        hint = " For JSON Lines (one object per line) rename the file to .jsonl; for one JSON array convert it with `jq -c '.[]' in.json > out.jsonl`."
    elif suffix in (".xlsx", ".xls", ".ods"):
        hint = " Export the sheet as CSV first."
    what = f"extension '{suffix}'" if suffix else "no extension"
    raise UserError(f"{shown}: {what} is not a supported data format; supported: {supported}.{hint}")


def _decode(data: bytes, shown: str, encoding: str) -> str:
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise UserError(f"unknown encoding '{encoding}' for {shown}; use a Python codec name such as utf-8, latin-1 or cp1252") from None
    is_utf8 = codec in ("utf-8", "utf-8-sig")
    if is_utf8 and data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        # Excel's "Unicode text" export: the byte-order mark makes the encoding unambiguous.
        codec = "utf-16"
    elif is_utf8:
        codec = "utf-8-sig"
    if not codec.startswith(("utf-16", "utf-32")):
        _reject_binary(data, shown)
    bom = len(codecs.BOM_UTF8) if codec == "utf-8-sig" and data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8" if codec == "utf-8-sig" else codec)
    except UnicodeDecodeError as exc:
        offset = bom + exc.start
        line = data.count(b"\n", 0, offset) + 1
        if is_utf8:
            fix = f"re-save the file as UTF-8 (iconv -f latin1 -t utf-8 {shown} > fixed{Path(shown).suffix}) or pass --encoding latin-1"
        else:
            fix = "pass the file's real encoding with --encoding (for example utf-8, latin-1 or cp1252)"
        raise UserError(f"{shown} line {line}: byte 0x{data[offset]:02x} at offset {offset} is not valid {encoding}; {fix}") from None


def _reject_binary(data: bytes, shown: str) -> None:
    for magic, hint in _MAGIC_HINTS:
        if data.startswith(magic):
            raise UserError(f"{shown} is not a text file: {hint}")
    nul = data.find(b"\x00", 0, _BINARY_PROBE)
    if nul >= 0:
        raise UserError(
            f"{shown} is not a text file (NUL byte at offset {nul}); expected a UTF-8 CSV, TSV or JSONL file. "
            "If it is UTF-16 pass --encoding utf-16; if it is a spreadsheet or Parquet file, export it as CSV or give it its real extension"
        )


def _read_parquet(file: Path, shown: str, data: bytes) -> Table:
    if len(data) < 8 or not (data.startswith(b"PAR1") and data.endswith(b"PAR1")):
        raise UserError(
            f"{shown} is not a Parquet file (it lacks the PAR1 marker at its start and end); "
            "if it holds CSV or JSON Lines text, rename it to .csv or .jsonl; if it was cut short, write it again"
        )
    # Imported here: pyarrow takes a noticeable time to import and only Parquet needs it.
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        arrow = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UserError(f"{shown}: cannot read the Parquet file ({exc}); write it again, e.g. with pandas `df.to_parquet(...)`") from None
    # pandas stores a non-default index as an extra column; it is never an example field.
    keep = [name for name in arrow.column_names if not name.startswith("__index_level_")]
    arrow = arrow.select(keep)
    if arrow.num_rows == 0:
        raise UserError(f"{shown} has the columns ({', '.join(keep)}) but no rows; write the examples into it")
    rows = arrow.to_pylist()
    return Table(path=shown, kind="parquet", columns=list(keep), rows=rows, lines=list(range(1, len(rows) + 1)))


def json_objects(text: str, shown: str, example: str) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str]]]:
    """The JSON objects of a JSON Lines text with their line numbers, and the bad lines with what is wrong.

    Blank lines are skipped; a whole-file JSON array is refused with the command that converts it.
    ``example`` shows the expected object in messages.
    """
    first = text.lstrip()
    if first.startswith("[") and _is_json_array(first):
        raise UserError(
            f"{shown} holds one JSON array, not JSON Lines; write one object per line, e.g. `jq -c '.[]' {shown} > fixed.jsonl`"
        )
    objects: list[tuple[int, dict[str, Any]]] = []
    bad: list[tuple[int, str]] = []
    # split("\n") rather than splitlines(): JSON strings may hold a raw U+2028, which splitlines would cut.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append((number, f"not valid JSON ({exc.msg} at column {exc.colno}): {_snippet(line)}"))
            continue
        if not isinstance(value, dict):
            bad.append((number, f"expected a JSON object such as {example}, got {_json_type(value)}: {_snippet(line)}"))
            continue
        objects.append((number, value))
    return objects, bad


def _read_jsonl(text: str, shown: str) -> Table:
    objects, bad = json_objects(text, shown, '{"text": "...", "label": "..."}')
    if bad:
        number, problem = bad[0]
        more = _more_lines([n for n, _ in bad[1:]], "bad lines")
        raise UserError(f"{shown} line {number}: {problem}{more}; each line must hold one JSON object")
    names = list(dict.fromkeys(key for _, value in objects for key in value))
    if not names:
        raise UserError(f'{shown} holds only empty objects {{}}; each line needs fields, e.g. {{"text": "...", "label": "..."}}')
    rows = [{name: value.get(name) for name in names} for _, value in objects]
    return Table(path=shown, kind="jsonl", columns=names, rows=rows, lines=[number for number, _ in objects])


def _is_json_array(text: str) -> bool:
    try:
        return isinstance(json.loads(text), list)
    except json.JSONDecodeError:
        return False


def _read_delimited(text: str, shown: str, kind: str) -> Table:
    delimiter = "\t" if kind == "tsv" else ","
    old_limit = csv.field_size_limit(_FIELD_SIZE_LIMIT)
    try:
        try:
            parsed = _parse_rows(text, shown, delimiter)
        except UserError:
            if delimiter != "\t":
                raise
            # Plain TSV has no quoting at all (IANA text/tab-separated-values): a stray quote is
            # just a character there. Read it that way before calling the file broken.
            parsed = _parse_rows(text, shown, delimiter, quoting=csv.QUOTE_NONE)
    finally:
        csv.field_size_limit(old_limit)
    if not parsed:
        raise UserError(f"{shown} has no header line; expected a header such as `text,label` followed by one example per line")
    header_line, header = parsed[0]
    columns = _header_names(header, shown, header_line)
    records = parsed[1:]
    if not records:
        sep = "\\t" if kind == "tsv" else ","
        raise UserError(
            f"{shown} has a header ({', '.join(columns)}) but no data rows; add one example per line below the header, "
            f"fields separated by '{sep}'"
        )
    too_long = [(line, len(fields)) for line, fields in records if len(fields) > len(columns)]
    if too_long:
        line, count = too_long[0]
        more = _more_lines([n for n, _ in too_long[1:]], "rows like this")
        name = "tab" if kind == "tsv" else "comma"
        raise UserError(
            f"{shown} line {line}: {count} fields but the header (line {header_line}) has {len(columns)} columns ({', '.join(columns)}){more}; "
            f'a field that contains a {name} must be enclosed in double quotes, e.g. "hello{delimiter} world"'
        )
    rows = []
    for _, fields in records:
        # Short rows are padded like pandas does; validation later names the lines whose text or label is missing.
        padded: list[str | None] = [*fields, *([None] * (len(columns) - len(fields)))]
        rows.append(dict(zip(columns, padded, strict=True)))
    return Table(path=shown, kind=kind, columns=columns, rows=rows, lines=[line for line, _ in records])


def _parse_rows(text: str, shown: str, delimiter: str, quoting: int = csv.QUOTE_MINIMAL) -> list[tuple[int, list[str]]]:
    """Rows with the line each starts on, blank lines skipped."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    rows: list[tuple[int, list[str]]] = []
    last_line = text.count("\n") + (0 if text.endswith("\n") else 1)
    end = 0
    while True:
        start = end + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise UserError(f"{shown} line {start}: cannot parse the row ({exc}); check the quoting around line {start}") from None
        end = reader.line_num
        if not fields:
            continue
        at_end = end >= last_line
        if (end > start or at_end) and _swallows_rows(fields, delimiter, at_end=at_end):
            raise UserError(
                f"{shown} line {start}: a quoted field opens here and runs on to line {end}, swallowing the rows between; "
                'close the quote, or write a literal quote inside a quoted field as two ("")'
            )
        rows.append((start, fields))
    return rows


def _swallows_rows(fields: list[str], delimiter: str, at_end: bool) -> bool:
    # A never-closed quote runs to the end of the file, leaving a trailing line break in its field.
    if at_end and fields[-1].endswith(("\n", "\r")):
        return True
    # Texts rarely hold tabs, so in TSV a multi-line field with tabs in it is a stray opening quote.
    return delimiter == "\t" and any("\n" in f and "\t" in f for f in fields)


def _header_names(header: list[str], shown: str, line: int) -> list[str]:
    names = []
    for position, raw in enumerate(header):
        name = raw.strip()
        # Same name pandas gives a blank header, so it matches what users see when they inspect the file there.
        names.append(name or f"Unnamed: {position}")
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if name in seen:
            raise UserError(
                f"{shown} line {line}: the header names column '{name}' twice (columns {seen[name]} and {position}); rename one of them"
            )
        seen[name] = position
    return names


def _snippet(line: str, width: int = 80) -> str:
    return repr(line if len(line) <= width else line[:width] + "...")


def _json_type(value: Any) -> str:
    names = {list: "a list", str: "a string", bool: "true/false", type(None): "null", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _more_lines(lines: list[int], what: str) -> str:
    if not lines:
        return ""
    shown = ", ".join(str(n) for n in lines[:_SHOWN_LINES])
    tail = ", ..." if len(lines) > _SHOWN_LINES else ""
    return f" ({len(lines)} more {what}: lines {shown}{tail})"
