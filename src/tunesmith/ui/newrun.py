"""The new-run form: uploaded files, form fields -> a validated config, and the data check before training.

Data for a run started in the UI is a packaged dataset or a file uploaded into ``RUNS/.uploads`` (never an
arbitrary path on the machine: the doctor's findings quote rows, and the UI shows nothing from outside the
runs directory). The model may be a registry name or a local model directory.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tunesmith.config import RunConfig, build_config, flat_fields
from tunesmith.errors import UserError
from tunesmith.ui.rundirs import UPLOADS

DATA_EXTENSIONS = (".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".parquet", ".pq", ".txt", ".conll", ".bio", ".iob")
"""File types an upload may have: what tunesmith's readers accept (tables, CoNLL for ner, plain text for mlm)."""
_TABLE_EXTENSIONS = (".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".parquet", ".pq")
DEFAULT_MAX_UPLOAD_BYTES = 100 * 1024 * 1024
FORM_KEYS = (
    "task",
    "train",
    "eval",
    "text_col",
    "label_col",
    "model",
    "method",
    "epochs",
    "max_steps",
    "lr",
    "batch_size",
    "max_length",
    "seed",
)
"""Form fields that are config keys; any other key goes in the form's "more settings" box (YAML)."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+-]{0,99}")


class UploadError(UserError):
    """An upload refused, with the HTTP status that says why (413 too large, 415 wrong type, 422 unreadable)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.1f} KB" if n >= 1024 else f"{n} bytes"


def safe_filename(name: str) -> str:
    """The base name of an uploaded file with anything but letters, digits, ``._-`` replaced."""
    base = re.split(r"[\\/]", name or "")[-1]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip(".-") or "data"
    return stem[:100]


def check_upload_name(name: str) -> str:
    """The file's suffix if it is a data file tunesmith reads.

    Raises:
        UploadError: (415) any other file type, naming the accepted ones.
    """
    suffix = Path(safe_filename(name)).suffix.lower()
    if suffix not in DATA_EXTENSIONS:
        what = f"'{suffix}' files" if suffix else "files without an extension"
        hint = " Export spreadsheets as CSV." if suffix in (".xlsx", ".xls", ".ods") else ""
        if suffix == ".json":
            hint = " For JSON Lines (one object per line) rename the file to .jsonl."
        raise UploadError(f"{name}: {what} cannot be used as training data; upload one of {', '.join(DATA_EXTENSIONS)}.{hint}", 415)
    return suffix


async def save_upload(chunks: AsyncIterator[bytes], name: str, root: Path, max_bytes: int, declared: int | None = None) -> Path:
    """Stream an upload into ``RUNS/.uploads/<sha256 prefix>/<name>``, refusing it past ``max_bytes``.

    Raises:
        UploadError: 415 for a file type tunesmith cannot read, 413 when larger than ``max_bytes``, 422 when empty.
    """
    check_upload_name(name)
    limit = f"the limit is {_size(max_bytes)} (start the UI with --max-upload-mb to change it)"
    if declared is not None and declared > max_bytes:
        raise UploadError(f"{name} is {_size(declared)}; {limit}", 413)
    uploads = root / UPLOADS
    uploads.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(dir=uploads, prefix=".upload-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise UploadError(f"{name} is larger than {_size(max_bytes)}; {limit}", 413)
                digest.update(chunk)
                f.write(chunk)
        if size == 0:
            raise UploadError(f"{name} is empty (0 bytes); upload a file with a header line and one example per row", 422)
        target = uploads / digest.hexdigest()[:16] / safe_filename(name)
        target.parent.mkdir(exist_ok=True)
        os.replace(tmp, target)
        return target
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def inspect_upload(path: Path, name: str) -> dict[str, Any]:
    """What the page shows of an upload: rows, columns and the first rows of a table, or the lines of a text file.

    Raises:
        UploadError: (422) a table file (CSV, TSV, JSONL, Parquet) that cannot be read, with the reader's message.
    """
    from tunesmith.data.loading import read_table

    suffix = path.suffix.lower()
    info: dict[str, Any] = {"name": name, "path": str(path), "size": path.stat().st_size, "columns": None, "rows": None, "preview": []}
    try:
        table = read_table(path)
    except UserError as exc:
        if suffix in _TABLE_EXTENSIONS:
            path.unlink(missing_ok=True)
            raise UploadError(str(exc).replace(str(path), name), 422) from None
        # .txt/.conll: CoNLL tags or a text per line (mlm), checked against the task by "Check data"
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            path.unlink(missing_ok=True)
            raise UploadError(f"{name} is not UTF-8 text; re-save it as UTF-8 (iconv -f latin1 -t utf-8 in.txt > out.txt)", 422) from None
        lines = text.splitlines()
        info.update(rows=sum(1 for line in lines if line.strip()), preview=[{"line": line} for line in lines[:5]])
        return info
    info.update(columns=table.columns, rows=len(table), preview=[{k: _cell(v) for k, v in row.items()} for row in table.rows[:5]])
    return info


def _cell(value: Any) -> Any:
    return value if isinstance(value, int | float | bool) or value is None else str(value)[:200]


# ---------------------------------------------------------------- form -> config


def _data_source(value: str, root: Path, key: str) -> str:
    from tunesmith.data import PACKAGED

    if value in PACKAGED:
        return value
    uploads = (root / UPLOADS).resolve()
    path = Path(value).resolve()
    if path.is_relative_to(uploads) and path.is_file():
        return str(path)
    raise UserError(
        f"`{key}`: {value!r} is neither a packaged dataset ({', '.join(sorted(PACKAGED))}) nor a file uploaded on this page; pick one"
    )


def form_config(form: dict[str, Any], root: Path) -> tuple[RunConfig, Path]:
    """Validate the new-run form into a config and its run directory ``RUNS/<name>``.

    ``form`` holds the :data:`FORM_KEYS` (strings from the inputs; empty means the default), ``name`` (the run
    directory; default ``<task>-<data>-<time>``) and ``extra``: more config keys as YAML (``label_smoothing: 0.1``).

    Raises:
        UserError: every problem at once, each naming its key.
    """
    problems: list[str] = []
    overrides: dict[str, Any] = {}
    for key in FORM_KEYS:
        value = form.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        overrides[key] = value.strip() if isinstance(value, str) else value
    if "train" not in overrides:
        problems.append("`data.train`: choose a packaged dataset or upload a training file")
    for key in ("train", "eval"):
        if key in overrides:
            try:
                overrides[key] = _data_source(str(overrides[key]), root, f"data.{key}")
            except UserError as exc:
                problems.append(str(exc))
    extra = form.get("extra") or ""
    if isinstance(extra, str) and extra.strip():
        try:
            loaded = yaml.safe_load(extra)
        except yaml.YAMLError as exc:
            loaded = None
            problems.append(f"more settings: not valid YAML ({exc}); write one `key: value` per line, e.g. `label_smoothing: 0.1`")
        if loaded is not None and not isinstance(loaded, dict):
            problems.append("more settings: write `key: value` lines (a mapping of config keys), e.g. `label_smoothing: 0.1`")
        elif isinstance(loaded, dict):
            known = flat_fields()
            for key, value in loaded.items():
                if key in ("out", "resume", "train", "eval"):
                    problems.append(f"more settings: `{key}` is set by the form (run name, data), not here")
                elif key not in known:
                    problems.append(f"more settings: `{key}` is not a config key; see `tunesmith train --help` for the keys")
                else:
                    overrides[key] = value
    name = str(form.get("name") or "").strip()
    if name and not _NAME.fullmatch(name):
        problems.append(f"run name {name!r}: use letters, digits and . _ - = + (at most 100), starting with a letter or digit")
    if problems:
        raise UserError("the form has problems:\n  " + "\n  ".join(problems))
    config = build_config({}, overrides, source="the form")
    if not name:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(config.data.train).stem).strip("-.") or "data"
        name = f"{config.task}-{stem}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir = root / name
    return config.model_copy(update={"out": str(run_dir)}), run_dir


def check_data(config: RunConfig) -> dict[str, Any]:
    """Read and split the data as training will, and run the doctor on it (classify), before anything trains.

    Returns:
        ``data``: what the data step reports (rows, duplicates, split, class counts); ``doctor``: the doctor's
        report (summary and findings) or None, with ``doctor_note`` saying why not.

    Raises:
        UserError: the data or the model cannot be used (the message names the file, row and fix).
    """
    from tunesmith.models.registry import resolve_model
    from tunesmith.tasks import task_for

    resolve_model(config.model.model)
    prepared = task_for(config).prepare(config)
    result: dict[str, Any] = {"data": dict(prepared.report), "doctor": None, "doctor_note": None}
    d = config.data
    if config.task != "classify" or d.multi_label:
        result["doctor_note"] = f"the doctor examines single-label classification data; the {config.task} data was read and split as shown"
        return result
    from tunesmith.doctor import diagnose

    try:
        report = diagnose(
            d.train,
            d.eval,
            text_col=d.text_col,
            label_col=d.label_col,
            model=config.model.model,
            max_length=d.max_length,
            seed=config.training.seed,
        )
    except UserError as exc:
        result["doctor_note"] = f"the doctor could not examine the data: {exc}"
        return result
    result["doctor"] = report.to_dict()
    return result
