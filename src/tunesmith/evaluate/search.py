"""Hyperparameter search with Optuna: every trial a normal run, the study resumable from SQLite.

A search space YAML maps flat config keys to a range or a list of choices::

    lr: {low: 1.0e-5, high: 1.0e-3, log: true}   # floats: the bounds are floats
    epochs: {low: 1, high: 4}                     # ints: both bounds are ints
    batch_size: {choices: [8, 16, 32]}

Each trial is trained with :func:`tunesmith.training.runner.train`; after every evaluation the
trial's eval metric is reported to Optuna, and a trial the pruner gives up on stops training there
(its run is still written, and recorded as pruned). The TPE sampler is seeded with ``training.seed``::

    OUT/study.db          the Optuna study (default storage); rerunning the search continues it
    OUT/trial-0/ ...      one run directory per trial (``tunesmith predict``/``eval`` open it)
    OUT/search.json       every trial: number, state, value, params, intermediate values, run
    OUT/best_config.yaml  the best trial's config, ready for ``tunesmith train --config``
    OUT/search.png        value per trial with the best so far, and the parameter importances
"""

from __future__ import annotations

import math
import re
import shutil
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from tunesmith.config import RunConfig, build_config, dump_config, flat_fields, load_config
from tunesmith.errors import UserError

STUDY_FILE = "study.db"
RESULT_FILE = "search.json"
BEST_CONFIG_FILE = "best_config.yaml"
PLOT_FILE = "search.png"
DEFAULT_STUDY = "tunesmith-search"

# keys that say where data and runs are, not how to train: searching them makes no sense
NOT_SEARCHABLE = frozenset(
    {"task", "out", "resume", "train", "eval", "text_col", "label_col", "encoding", "lang_col", "label_sep", "threads", "metric"}
)


@dataclass
class SearchResult:
    """What ``OUT/search.json`` holds, with the paths of the files written."""

    out: Path
    study_name: str
    storage: str
    metric: str
    direction: str
    space: dict[str, dict[str, Any]]
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    importances: dict[str, float] = field(default_factory=dict)
    plot: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study_name,
            "storage": _redact(self.storage),
            "metric": self.metric,
            "direction": self.direction,
            "space": self.space,
            "n_trials": len(self.trials),
            "states": {s: sum(t["state"] == s for t in self.trials) for s in sorted({t["state"] for t in self.trials})},
            "best": self.best,
            "importances": self.importances,
            "trials": self.trials,
        }


def searchable_keys() -> list[str]:
    """The flat config keys a search space may name."""
    return [k for k in flat_fields() if k not in NOT_SEARCHABLE]


def load_space(space: str | Path | dict[str, Any], config: RunConfig) -> dict[str, dict[str, Any]]:
    """Read and check a search space; every problem is reported together, each naming its key.

    Returns:
        ``{key: {"type": "float"|"int", "low", "high", "log", "step"}}`` or ``{key: {"type": "categorical", "choices"}}``.

    Raises:
        UserError: unreadable YAML, an unknown key (the valid keys listed), a malformed range, or
            bounds/choices the config schema rejects.
    """
    source = "search space"
    if not isinstance(space, dict):
        path = Path(space)
        source = str(path)
        if not path.is_file():
            raise UserError(f"search space file not found: {path}; pass a YAML file (see examples/search/sms_spam_space.yaml)")
        try:
            space = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise UserError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(space, dict) or not space:
        raise UserError(
            f"{source} must be a non-empty mapping of config keys to ranges, e.g. `lr: {{low: 1.0e-5, high: 1.0e-3, log: true}}`"
        )
    valid = searchable_keys()
    problems: list[str] = []
    parsed: dict[str, dict[str, Any]] = {}
    for key, spec in space.items():
        key = str(key)
        if key not in valid:
            hint = "it says where data or runs are, not how to train" if key in NOT_SEARCHABLE else f"valid keys: {', '.join(valid)}"
            problems.append(f"`{key}` is not a searchable config key; {hint}")
            continue
        if not isinstance(spec, dict):
            problems.append(f"`{key}` must be a mapping {{low, high[, log, step]}} or {{choices: [...]}}, got {spec!r}")
            continue
        if "choices" in spec:
            extra = set(spec) - {"choices"}
            choices = spec["choices"]
            if extra:
                problems.append(f"`{key}`: choices take no {', '.join(sorted(extra))}")
            elif not isinstance(choices, list) or not choices:
                problems.append(f"`{key}`: `choices` must be a non-empty list, got {choices!r}")
            else:
                parsed[key] = {"type": "categorical", "choices": choices}
            continue
        extra = set(spec) - {"low", "high", "log", "step"}
        low, high, log, step = spec.get("low"), spec.get("high"), bool(spec.get("log", False)), spec.get("step")
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high))
        if extra or not numbers:
            problems.append(
                f"`{key}` must be {{low: NUMBER, high: NUMBER[, log: true][, step: NUMBER]}} or {{choices: [...]}}, got {spec!r}"
                + (f" (unknown field(s) {', '.join(sorted(extra))})" if extra else "")
            )
            continue
        if low >= high:
            problems.append(f"`{key}`: low must be below high, got low {low!r}, high {high!r}")
            continue
        if log and low <= 0:
            problems.append(f"`{key}`: a log range needs low > 0, got {low!r}")
            continue
        if log and step is not None:
            problems.append(f"`{key}`: give either `log` or `step`, not both")
            continue
        kind = "int" if isinstance(low, int) and isinstance(high, int) else "float"
        parsed[key] = {"type": kind, "low": low, "high": high, "log": log, "step": step}
    if problems:
        raise UserError(
            f"{source} has {len(problems)} problem{'s' if len(problems) > 1 else ''}:\n" + "\n".join(f"  {p}" for p in problems)
        )
    # every bound and choice must be a value the config accepts, or trials would fail one by one
    base = config.model_dump(mode="json")
    for key, spec in parsed.items():
        values = spec["choices"] if spec["type"] == "categorical" else [spec["low"], spec["high"]]
        for value in values:
            build_config(base, {key: value}, source=f"{source}: `{key}` = {value!r} gives a config that")
    return parsed


def search(
    config: RunConfig | dict[str, Any] | str | Path | None,
    space: str | Path | dict[str, Any],
    trials: int,
    storage: str | None = None,
    study_name: str | None = None,
    out: str | Path | None = None,
    *,
    pruner: Any = None,
    console: Console | None = None,
    **overrides: Any,
) -> SearchResult:
    """Search hyperparameters of a fine-tuning config with Optuna (TPE sampler, median pruner).

    Args:
        config: a :class:`RunConfig`, a nested dict, a YAML config path, or None for the defaults.
        space: a search space YAML path or dict (flat keys to ``{low, high[, log, step]}`` or ``{choices}``).
        trials: trials to run in this call (a rerun adds this many more to the study).
        storage: an Optuna storage URL; default SQLite ``OUT/study.db``. Workers given the same
            RDB URL and study name share the study.
        study_name: the study's name in the storage (default ``tunesmith-search``).
        out: the search directory (default: the config's ``out``, else ``runs/search-<data>-<time>``).
        pruner: an Optuna pruner; default ``MedianPruner(n_startup_trials=2, n_warmup_steps=1)``.
        console: where progress goes (default: stderr).
        **overrides: flat config keys, as for ``train``.

    Returns:
        The :class:`SearchResult`, also written to ``OUT/search.json`` beside ``best_config.yaml``.

    Raises:
        UserError: a bad config or search space (before anything is written), or ``trials`` < 1.
    """
    import optuna

    if isinstance(config, str | Path):
        config = load_config(config, overrides)
    elif isinstance(config, RunConfig):
        config = build_config(config.model_dump(), overrides) if overrides else config
    else:
        config = build_config(config or {}, overrides)
    if trials < 1:
        raise UserError(f"--trials must be at least 1, got {trials}")
    parsed = load_space(space, config)
    console = console or Console(stderr=True)
    from tunesmith.tasks import task_for

    metric = config.metric
    direction = "maximize" if task_for(config).metrics[metric] else "minimize"
    out_dir = Path(out) if out is not None else Path(config.out) if config.out else _default_dir(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out_dir / STUDY_FILE).resolve()}"
    study_name = study_name or DEFAULT_STUDY

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # the seed moves on with the study, so a resumed search does not propose the first trials again
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        load_if_exists=True,
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=config.training.seed + len(_safe_trials(study_name, storage))),
        pruner=pruner if pruner is not None else optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    if study.direction.name.lower() != direction:
        raise UserError(
            f"study {study_name!r} in {_redact(storage)} is to {study.direction.name.lower()}, but {metric} is to {direction}; "
            "use another --study or --out"
        )
    done = len(study.trials)
    if done:
        console.print(f"continuing study {study_name!r}: {done} trial(s) already there")
    base = config.model_dump(mode="json")

    def objective(trial: optuna.Trial) -> float:
        params = {key: _suggest(trial, key, spec) for key, spec in parsed.items()}
        run_dir = out_dir / f"trial-{trial.number}"
        if run_dir.exists():  # left by an interrupted trial of a study since deleted: trial numbers are unique
            console.print(f"[yellow]replacing[/] {run_dir}, left by an unfinished trial")
            shutil.rmtree(run_dir)
        trial.set_user_attr("run", str(run_dir))
        console.rule(f"trial {trial.number}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in params.items()))
        trial_config = build_config(base, {**params, "out": str(run_dir), "resume": False}, source=f"trial {trial.number} config")
        reporter = _optuna_reporter(trial, metric)
        from tunesmith.training.runner import train

        run = train(trial_config, console=console, callbacks=[reporter])
        value = float(run.metrics["eval"][metric])
        trial.set_user_attr("eval", {k: v for k, v in run.metrics["eval"].items() if isinstance(v, int | float)})
        if reporter.pruned:
            console.print(f"trial {trial.number} pruned after {reporter.reports} evaluation(s): below the median of earlier trials")
            raise optuna.TrialPruned(f"pruned at evaluation {reporter.reports}")
        return value

    study.optimize(objective, n_trials=trials, gc_after_trial=True)
    result = _summarise(study, out_dir, storage, metric, direction, parsed)
    _write_outputs(result, base)
    return result


def _safe_trials(study_name: str, storage: str) -> list[Any]:
    """The trials of an existing study, or none when it does not exist yet."""
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=storage).trials
    except KeyError:
        return []


def _suggest(trial: Any, key: str, spec: dict[str, Any]) -> Any:
    if spec["type"] == "categorical":
        return trial.suggest_categorical(key, spec["choices"])
    if spec["type"] == "int":
        return trial.suggest_int(key, spec["low"], spec["high"], log=spec["log"], step=spec["step"] or 1)
    return trial.suggest_float(key, spec["low"], spec["high"], log=spec["log"], step=spec["step"])


def _optuna_reporter(trial: Any, metric: str) -> Any:
    """A ``TrainerCallback`` that reports every evaluation to the trial and stops training when it is pruned."""
    from transformers import TrainerCallback

    class OptunaReporter(TrainerCallback):
        def __init__(self) -> None:
            self.reports = 0
            self.pruned = False

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            value = (metrics or {}).get(f"eval_{metric}")
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return
            self.reports += 1  # the evaluation's index is the step: trials with other batch sizes stay comparable
            trial.report(float(value), step=self.reports)
            if trial.should_prune():
                self.pruned = True
                control.should_training_stop = True

    return OptunaReporter()


def _summarise(study: Any, out_dir: Path, storage: str, metric: str, direction: str, space: dict[str, Any]) -> SearchResult:
    import optuna

    records = []
    for t in study.trials:
        records.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": t.value,
                "params": t.params,
                "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
                "run": t.user_attrs.get("run"),
                "seconds": round(t.duration.total_seconds(), 3) if t.duration else None,
            }
        )
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = None
    if complete:
        b = study.best_trial
        best = {"number": b.number, "value": b.value, "params": b.params, "run": b.user_attrs.get("run")}
    importances: dict[str, float] = {}
    if len(complete) >= 2 and len(space) >= 2:
        try:
            with warnings.catch_warnings():  # few trials: Optuna warns that the importances are equal, which they then show
                warnings.simplefilter("ignore")
                importances = {k: round(float(v), 4) for k, v in optuna.importance.get_param_importances(study).items()}
        except (ValueError, RuntimeError):  # e.g. every trial scored the same: no importance to measure
            importances = {}
    elif len(complete) >= 2:
        importances = {next(iter(space)): 1.0}
    return SearchResult(
        out=out_dir,
        study_name=study.study_name,
        storage=storage,
        metric=metric,
        direction=direction,
        space=space,
        trials=records,
        best=best,
        importances=importances,
    )


def _write_outputs(result: SearchResult, base: dict[str, Any]) -> None:
    from tunesmith.training.rundir import atomic_write_json, atomic_write_text

    if result.best is not None:
        best = build_config(base, {**result.best["params"], "out": None, "resume": False}, source="best trial config")
        header = (
            f"# best of {len(result.trials)} trial(s) of study {result.study_name!r}: {result.metric} {result.best['value']:.4f} "
            f"(trial {result.best['number']}, run {result.best['run']})\n# train it: tunesmith train --config {result.out / BEST_CONFIG_FILE}\n"
        )
        atomic_write_text(result.out / BEST_CONFIG_FILE, header + dump_config(best))
    result.plot = _plot(result)
    atomic_write_json(result.out / RESULT_FILE, result.to_dict())


def _plot(result: SearchResult) -> Path | None:
    """Value per trial with the best so far; beside it the parameter importances when there are any."""
    points = [(t["number"], t["value"], t["state"]) for t in result.trials if t["value"] is not None]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2 if result.importances else 1, figsize=(11 if result.importances else 6, 4), squeeze=False)
    ax = axes[0][0]
    complete = [(n, v) for n, v, s in points if s == "complete"]
    if complete:
        ax.scatter(*zip(*complete, strict=True), label="complete", color="tab:blue")
        best, running = [], None
        for n, v in complete:
            running = v if running is None else (max if result.direction == "maximize" else min)(running, v)
            best.append((n, running))
        ax.step(*zip(*best, strict=True), where="post", color="tab:red", label="best so far")
    others = [(n, v) for n, v, s in points if s != "complete"]
    if others:
        ax.scatter(*zip(*others, strict=True), marker="x", color="grey", label="pruned (final eval)")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(result.metric)
    ax.set_title(f"search history ({result.direction})")
    ax.legend(loc="best")
    if result.importances:
        ax2 = axes[0][1]
        names = list(result.importances)[::-1]
        ax2.barh(names, [result.importances[n] for n in names], color="tab:green")
        ax2.set_xlabel("importance (Optuna's default evaluator)")
        ax2.set_title("parameter importance")
    fig.tight_layout()
    path = result.out / PLOT_FILE
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def search_table(result: SearchResult, limit: int = 30) -> Table:
    """One row per trial (best first), its parameters and value."""
    keys = list(result.space)
    table = Table(
        "trial",
        "state",
        result.metric,
        *keys,
        title=f"search {result.study_name!r}: {result.out}",
        caption=f"{result.direction} {result.metric}; pruned trials show their final eval"
        + (f"; best: trial {result.best['number']}" if result.best else ""),
    )
    sign = -1 if result.direction == "maximize" else 1
    ordered = sorted(result.trials, key=lambda t: (t["value"] is None, sign * (t["value"] or 0), t["number"]))
    for t in ordered[:limit]:
        best = result.best is not None and t["number"] == result.best["number"]
        table.add_row(
            str(t["number"]),
            t["state"],
            f"{t['value']:.4f}" if t["value"] is not None else "",
            *[_fmt(t["params"].get(k)) for k in keys],
            style="bold" if best else None,
        )
    return table


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


def _redact(storage: str) -> str:
    """A storage URL without its password, fit for a file others read."""
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", storage)


def _default_dir(config: RunConfig) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(config.data.train).stem) or "data"
    return Path("runs") / f"search-{stem}-{datetime.now():%Y%m%d-%H%M%S}"
