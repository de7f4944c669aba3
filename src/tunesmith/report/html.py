"""One self-contained ``report.html`` per run: config, data, metrics beside baselines, curves, errors explained.

Everything is inline (CSS, PNG figures as base64), so the file can be mailed or attached on its own. Every
optional run file (data.json, history.jsonl, doctor.json, overfitting.json, eval_predictions.jsonl) may
be missing: its section then says so instead of failing.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError
from tunesmith.explain.render import HTML_CSS, html_fragment
from tunesmith.report import plots
from tunesmith.training.rundir import atomic_write_text

REPORT = "report.html"
EXPLAINED_ERRORS = 5
LISTED_ERRORS = 20


def write_report(run_dir: str | Path, output: str | Path | None = None, *, explain_errors: int = EXPLAINED_ERRORS) -> Path:
    """Write the run's HTML report and return its path.

    Args:
        run_dir: a run directory written by ``tunesmith train``.
        output: where to write it [default: ``RUN/report.html``].
        explain_errors: how many of the most confident eval errors get word attributions (classify; 0: none).

    Raises:
        UserError: when ``run_dir`` is not a run directory.
    """
    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run} is not a tunesmith run (no config.yaml); pass the --out directory of `tunesmith train`")
    path = Path(output) if output else run / REPORT
    atomic_write_text(path, render_report(run, explain_errors=explain_errors))
    return path


def render_report(run: Path, *, explain_errors: int = EXPLAINED_ERRORS) -> str:
    """The report page as a string (see :func:`write_report`)."""
    config = _read_yaml(run / "config.yaml")
    metrics = _read_json(run / "metrics.json") or {}
    task = str(metrics.get("task") or config.get("task") or "unknown")
    evaluation = metrics.get("eval") if isinstance(metrics.get("eval"), dict) else {}
    sections = [
        _section("Configuration", _config_summary(config)),
        _section("Data", _data_summary(_read_json(run / "data.json"))),
        _section("Metrics", _metrics_section(task, evaluation, metrics.get("training"))),
        _section("Training curves", _curves(_read_jsonl(run / "history.jsonl"))),
    ]
    if task == "classify" and evaluation.get("confusion_matrix") and evaluation.get("labels"):
        img = plots.img_tag(plots.confusion_heatmap(evaluation["confusion_matrix"], evaluation["labels"]), "confusion matrix")
        sections.append(_section("Confusion matrix", f"<p class='muted'>rows: gold label, columns: predicted</p>{img}"))
    if evaluation.get("per_class"):
        sections.append(_section("Per class", _per_class(evaluation["per_class"])))
    calibration = _calibration(_read_jsonl(run / "eval_predictions.jsonl")) if task == "classify" else None
    if calibration:
        sections.append(_section("Calibration", calibration))
    per_language = evaluation.get("per_language") or metrics.get("per_language")
    if per_language:
        sections.append(_section("Per language", _records_table(per_language, "language")))
    sections.append(_section("Doctor findings", _doctor(_read_json(run / "doctor.json"))))
    sections.append(_section("Overfitting", _overfitting(_read_json(run / "overfitting.json"))))
    sections.append(_section("Most confident errors", _errors(run, task, _read_jsonl(run / "eval_predictions.jsonl"), explain_errors)))
    title = f"tunesmith report: {run.name}"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{HTML_CSS}</style></head>'
        f"<body><h1>{_e(title)}</h1><p class='muted'>task {_e(task)}; run directory {_e(str(run))}; written {stamp}</p>"
        f"{''.join(sections)}</body></html>\n"
    )


# ---------------------------------------------------------------- reading run files (all optional)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a run interrupted mid-write leaves at most a partial last line
        if isinstance(rec, dict):
            records.append(rec)
    return records


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


# ---------------------------------------------------------------- sections


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict | list):
        return _e(json.dumps(value, ensure_ascii=False)[:300])
    return _e(value)


def _section(title: str, body: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{body}</section>"


def _kv_table(pairs: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in pairs)
    return f"<table>{rows}</table>"


def _missing(name: str) -> str:
    return f"<p class='muted'>no {_e(name)} in this run directory.</p>"


def _config_summary(config: dict[str, Any]) -> str:
    if not config:
        return _missing("readable config.yaml")
    data, model, training = (config.get(k) or {} for k in ("data", "model", "training"))
    pairs = [
        ("task", config.get("task")),
        ("train data", data.get("train")),
        ("eval data", data.get("eval") or f"held out {data.get('eval_fraction')}"),
        ("model", model.get("model")),
        ("method", model.get("method")),
        ("max length", data.get("max_length")),
    ]
    pairs += [(k, v) for k, v in training.items() if k in ("epochs", "lr", "batch_size", "seed", "metric", "precision", "class_weights")]
    return _kv_table([(k, v) for k, v in pairs if v is not None])


def _data_summary(data: dict[str, Any] | None) -> str:
    if not data:
        return _missing("data.json")
    pairs = [(k, v) for k, v in data.items() if not isinstance(v, dict)]
    body = _kv_table(pairs)
    counts = [k for k, v in data.items() if k.startswith("class_counts") and isinstance(v, dict)]
    if counts:
        labels = list(dict.fromkeys(lab for k in counts for lab in data[k]))
        head = "".join(f"<th>{_e(k.removeprefix('class_counts_'))}</th>" for k in counts)
        rows = "".join(f"<tr><td>{_e(lab)}</td>{''.join(f'<td>{_fmt(data[k].get(lab, 0))}</td>' for k in counts)}</tr>" for lab in labels)
        body += f"<table><tr><th>label</th>{head}</tr>{rows}</table>"
    others = [(k, v) for k, v in data.items() if isinstance(v, dict) and not k.startswith("class_counts")]
    if others:
        body += _kv_table(others)
    return body


BASELINES = {"majority_baseline": "majority class", "tfidf_svm_baseline": "TF-IDF + SVM"}


def _metrics_section(task: str, evaluation: dict[str, Any], training: Any) -> str:
    if not evaluation:
        return _missing("metrics.json (eval metrics)")
    scalars = {k: v for k, v in evaluation.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    baselines = {name: evaluation[key] for key, name in BASELINES.items() if isinstance(evaluation.get(key), dict)}
    if task == "classify" and baselines:
        head = "<tr><th>metric</th><th>model</th>" + "".join(f"<th>{_e(n)}</th>" for n in baselines) + "</tr>"
        rows = "".join(
            f"<tr><td>{_e(k)}</td><td><b>{_fmt(v)}</b></td>"
            + "".join(f"<td>{_fmt(b[k]) if k in b else '-'}</td>" for b in baselines.values())
            + "</tr>"
            for k, v in scalars.items()
        )
        body = f"<table>{head}{rows}</table>"
    else:
        body = _kv_table(list(scalars.items()))
        nested = [(k, v) for k, v in evaluation.items() if k not in scalars and k not in ("confusion_matrix", "per_class", "per_language")]
        tables = [(k, v) for k, v in nested if isinstance(v, dict) and v and all(isinstance(r, dict) for r in v.values())]
        rest = [(k, v) for k, v in nested if (k, v) not in tables]
        if rest:
            body += _kv_table(rest)
        for name, records in tables:  # per_target (regress), per_label (multi-label), per_type (ner)
            body += f"<h3>{_e(name)}</h3>" + _records_table(records, name.removeprefix("per_"))
    if isinstance(training, dict):
        keep = ("steps", "epochs", "wall_seconds", "train_samples_per_second", "best_metric", "stopped_early", "precision")
        body += "<h3>training</h3>" + _kv_table([(k, training[k]) for k in keep if k in training])
    return body


def _calibration(predictions: list[dict[str, Any]]) -> str | None:
    """Reliability diagram, ECE and the bins, from single-label predictions (score = the predicted label's probability)."""
    from tunesmith.evaluate.calibration import expected_calibration_error, reliability_bins

    scored = [p for p in predictions if isinstance(p.get("score"), int | float) and isinstance(p.get("correct"), bool)]
    if not scored:
        return None
    bins = reliability_bins([float(p["score"]) for p in scored], [p["correct"] for p in scored])
    ece = expected_calibration_error(bins)
    img = plots.img_tag(plots.reliability_diagram(bins, ece), "reliability diagram")
    rows = "".join(
        f"<tr><td>({b.low:.1f}, {b.high:.1f}]</td><td>{b.count:,}</td><td>{_fmt(b.confidence) if b.count else '-'}</td>"
        f"<td>{_fmt(b.accuracy) if b.count else '-'}</td></tr>"
        for b in bins
    )
    intro = (
        f"<p>expected calibration error (ECE, {len(bins)} equal-width bins) on {len(scored):,} eval texts: <b>{ece:.4f}</b>. "
        "0 means that, of the texts predicted with confidence p, a fraction p is right.</p>"
    )
    table = f"<table><tr><th>confidence</th><th>texts</th><th>mean confidence</th><th>accuracy</th></tr>{rows}</table>"
    return intro + img + table


def _curves(history: list[dict[str, Any]]) -> str:
    png = plots.training_curves(history) if history else None
    return plots.img_tag(png, "training curves") if png else _missing("history.jsonl")


def _per_class(per_class: dict[str, Any]) -> str:
    return _records_table(per_class, "label")


def _records_table(records: dict[str, Any], key_name: str) -> str:
    columns = list(dict.fromkeys(c for rec in records.values() if isinstance(rec, dict) for c in rec))
    head = f"<tr><th>{_e(key_name)}</th>" + "".join(f"<th>{_e(c)}</th>" for c in columns) + "</tr>"
    rows = "".join(
        f"<tr><td>{_e(name)}</td>" + "".join(f"<td>{_fmt(rec.get(c, ''))}</td>" for c in columns) + "</tr>"
        for name, rec in records.items()
        if isinstance(rec, dict)
    )
    return f"<table>{head}{rows}</table>"


def _doctor(doctor: dict[str, Any] | None) -> str:
    if doctor is None:
        return _missing("doctor.json")
    findings = doctor.get("findings") or []
    if not findings:
        return "<p>the doctor found no problems in the training data.</p>"
    rows = "".join(
        f"<tr><td>{_e(f.get('severity', ''))}</td><td>{_e(f.get('check', ''))}</td><td>{_e(f.get('message', ''))}</td><td>{_e(f.get('remedy') or '')}</td></tr>"
        for f in findings
    )
    return f"<table><tr><th>severity</th><th>check</th><th>finding</th><th>remedy</th></tr>{rows}</table>"


def _overfitting(report: dict[str, Any] | None) -> str:
    if report is None:
        return _missing("overfitting.json")
    body = f"<p>verdict: <b>{_e(report.get('verdict', '?'))}</b> ({_e(report.get('reason', ''))})</p>"
    remedies = report.get("remedies") or []
    if remedies:
        body += "<ul>" + "".join(f"<li>{_e(r if isinstance(r, str) else json.dumps(r))}</li>" for r in remedies) + "</ul>"
    return body


def _errors(run: Path, task: str, predictions: list[dict[str, Any]], explain_errors: int) -> str:
    if not predictions:
        return _missing("eval_predictions.jsonl")
    wrong = [p for p in predictions if p.get("correct") is False and "text" in p]
    if not any("correct" in p for p in predictions):
        return "<p class='muted'>this task's predictions have no right/wrong flag per text.</p>"
    if not wrong:
        return "<p>no errors on the eval split.</p>"
    wrong.sort(key=lambda p: -_confidence(p))
    rows = "".join(
        f"<tr><td>{_e(p.get('row', ''))}</td><td>{_e(p['text'])}</td><td>{_labels(p.get('gold', ''))}</td>"
        f"<td>{_labels(p.get('label', p.get('labels', '')))}</td><td>{_confidence(p):.4f}</td></tr>"
        for p in wrong[:LISTED_ERRORS]
    )
    body = f"<p>{len(wrong):,} of {len(predictions):,} eval texts wrong; the most confident first.</p>"
    body += f"<table><tr><th>row</th><th>text</th><th>gold</th><th>predicted</th><th>score</th></tr>{rows}</table>"
    if task == "classify" and explain_errors > 0 and isinstance(wrong[0].get("label"), str):
        body += _explained(run, wrong[:explain_errors])
    return body


def _confidence(prediction: dict[str, Any]) -> float:
    """The predicted label's probability (classify), or the highest label probability (multi-label)."""
    if isinstance(prediction.get("score"), int | float):
        return float(prediction["score"])
    probabilities = prediction.get("probabilities")
    if isinstance(probabilities, dict) and probabilities:
        return float(max(probabilities.values()))
    return 0.0


def _labels(value: Any) -> str:
    return _e(", ".join(map(str, value)) if isinstance(value, list) else value)


def _explained(run: Path, wrong: list[dict[str, Any]]) -> str:
    from tunesmith.explain import explain

    try:
        explanations = explain(run, [p["text"] for p in wrong])
    except UserError as exc:  # e.g. the model folder is gone: the rest of the report still stands
        return f"<p class='muted'>no attributions: {_e(exc)}</p>"
    intro = "<h3>why the model was wrong (integrated gradients toward the predicted label)</h3>"
    return intro + "".join(
        f"<p class='meta'>gold <b>{_e(p.get('gold', ''))}</b></p>{html_fragment(e)}" for p, e in zip(wrong, explanations, strict=True)
    )
