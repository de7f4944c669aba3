"""Classical text classifiers on the fine-tuning split, compared in one table and saved without pickle.

Every baseline is the same TF-IDF features (word 1-2-grams + char_wb 2-5-grams,
:func:`~tunesmith.classic.tfidf.tfidf_features`) and one scikit-learn classifier, fitted on exactly
the train/eval split that a fine-tuning run with the same data settings and seed uses
(:func:`tunesmith.data.prepare_classification`), so the numbers compare with the run's.

Saved models never go through pickle, which runs arbitrary code when a file is loaded. The linear
models (linear SVM, logistic regression, complement naive Bayes: each scores ``X @ W.T + b`` over the
TF-IDF features) are written as ``model.json`` (vectorizer settings, vocabularies, classes) and
``weights.npz`` (idf vectors and weights, read back with ``allow_pickle=False``), and
:func:`load_baseline` rebuilds their predict function. The tree, the forest and the ensemble are
written with skops (``model.skops``, loaded only when every type in it comes from scikit-learn,
numpy or scipy) when skops is installed, and otherwise left unsaved, with the reason in
``baselines.json``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from tunesmith.classic.tfidf import tfidf_features
from tunesmith.config import DataConfig
from tunesmith.errors import UserError

if TYPE_CHECKING:  # numpy is imported where it is used: `tunesmith --help` lists these baselines and should stay quick
    import numpy as np

LINEAR_FORMAT = "tunesmith.linear-text-classifier"
LINEAR_FORMAT_VERSION = 1
SKOPS_FILE = "model.skops"
# Only these vectorizer settings matter once the vocabulary is fixed; they are all JSON values.
_VECTORIZER_PARAMS = (
    "analyzer", "ngram_range", "lowercase", "strip_accents", "token_pattern", "binary", "norm", "use_idf", "smooth_idf", "sublinear_tf",
)  # fmt: skip
# A skops file may only name types from these packages; anything else could run foreign code on load.
_SKOPS_TRUSTED_PACKAGES = ("sklearn", "numpy", "scipy")
_HEADLINE = ("accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall")


@dataclass(frozen=True)
class Baseline:
    """One classical classifier over the shared TF-IDF features.

    Attributes:
        name: registry name (``--models NAME``, the folder its saved model goes to).
        title: how the comparison table names it.
        build: ``(seed, training class counts) -> unfitted estimator``.
        probabilities: for linear models, how scores become probabilities (``logistic``, ``softmax``)
            or None when the model has none; ignored for the others.
        linear: saved in tunesmith's own JSON + npz format (else skops, when installed).
    """

    name: str
    title: str
    build: Callable[[int, Counter], Any]
    probabilities: str | None = None
    linear: bool = False


BASELINES: dict[str, Baseline] = {}


def register_baseline(baseline: Baseline) -> None:
    """Add a baseline to :data:`BASELINES`; a second one with the same name is a programming error."""
    if baseline.name in BASELINES:
        raise ValueError(f"baseline {baseline.name!r} is already registered")
    BASELINES[baseline.name] = baseline


def _linear_svc(seed: int, counts: Counter) -> Any:
    from sklearn.svm import LinearSVC

    # the same model as the TF-IDF + SVM baseline every fine-tuning run reports
    return LinearSVC(C=1.0, random_state=seed)


def _logreg(seed: int, counts: Counter) -> Any:
    from sklearn.linear_model import LogisticRegression

    # C=10: L2-normalised TF-IDF rows are small, and the default C=1 underfits them
    return LogisticRegression(C=10.0, max_iter=2000, random_state=seed)


def _tree(seed: int, counts: Counter) -> Any:
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(random_state=seed)


def _forest(seed: int, counts: Counter) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    # one job: reproducible timings, and it never takes every core from a training run beside it
    return RandomForestClassifier(n_estimators=200, n_jobs=1, random_state=seed)


def _complement_nb(seed: int, counts: Counter) -> Any:
    from sklearn.naive_bayes import ComplementNB

    return ComplementNB()


def _calibration_folds(counts: Counter) -> int:
    return min(3, min(counts.values()))


def _soft_vote(seed: int, counts: Counter) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import VotingClassifier
    from sklearn.svm import LinearSVC

    # soft voting averages probabilities; a linear SVM has none until it is calibrated
    svm = CalibratedClassifierCV(LinearSVC(C=1.0, random_state=seed), method="sigmoid", cv=_calibration_folds(counts))
    members = [("logreg", _logreg(seed, counts)), ("svm", svm), ("nb", _complement_nb(seed, counts)), ("forest", _forest(seed, counts))]
    return VotingClassifier(members, voting="soft")


register_baseline(Baseline("linear-svc", "TF-IDF + LinearSVC", _linear_svc, probabilities=None, linear=True))
register_baseline(Baseline("logreg", "TF-IDF + logistic regression", _logreg, probabilities="logistic", linear=True))
register_baseline(Baseline("decision-tree", "TF-IDF + decision tree", _tree))
register_baseline(Baseline("random-forest", "TF-IDF + random forest (200 trees)", _forest))
register_baseline(Baseline("complement-nb", "TF-IDF + complement naive Bayes", _complement_nb, probabilities="softmax", linear=True))
register_baseline(Baseline("soft-vote", "soft vote (logreg + calibrated SVM + NB + forest)", _soft_vote))


def skops_available() -> bool:
    """Whether skops (the safe format for tree models) is installed."""
    return importlib.util.find_spec("skops") is not None


def default_baseline_dir(source: str) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(source).stem) or "data"
    return Path("runs") / f"baseline-{stem}-{datetime.now():%Y%m%d-%H%M%S}"


def run_baselines(
    data_config: DataConfig | dict[str, Any],
    seed: int = 42,
    *,
    out: str | Path | None = None,
    models: Sequence[str] | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Fit the classical baselines on the fine-tuning split, score them on its eval side and save them.

    Args:
        data_config: the ``data`` section of a run config (or a dict of its keys): the same
            settings and ``seed`` give the same split as ``tunesmith train``.
        seed: seed of the split and of the models.
        out: directory to write ``baselines.json`` and ``models/NAME/``; default
            ``runs/baseline-<data>-<time>``.
        models: names from :data:`BASELINES` to fit (default: all, in registry order).
        console: where progress goes (default: stderr).

    Returns:
        What ``baselines.json`` holds: the data report, the labels, per model its headline metrics,
        confusion matrix, train seconds and where it was saved (or why not), and the majority baseline.

    Raises:
        UserError: bad data (as for training) or an unknown model name.
    """
    from sklearn.pipeline import Pipeline

    from tunesmith.data import prepare_classification
    from tunesmith.evaluate.metrics import classification_metrics, majority_baseline
    from tunesmith.training.rundir import atomic_write_json

    data_config = data_config if isinstance(data_config, DataConfig) else _data_config(data_config)
    names = _chosen(models)
    console = console or Console(stderr=True)
    data = prepare_classification(data_config, seed=seed)
    out_dir = Path(out) if out is not None else default_baseline_dir(data_config.train)
    label_id = {name: i for i, name in enumerate(data.labels)}
    y_eval = [label_id[g] for g in data.eval.labels]
    counts = Counter(data.train.labels)
    console.print(
        f"baselines on {data.report['train_size']:,} train / {data.report['eval_size']:,} eval examples ({data.report['split']}); "
        f"writing {out_dir}"
    )

    started = time.perf_counter()
    features = tfidf_features()
    x_train = features.fit_transform(data.train.texts)
    x_eval = features.transform(data.eval.texts)
    feature_seconds = time.perf_counter() - started
    n_features = int(x_train.shape[1])
    console.print(f"TF-IDF features: {n_features:,} (word 1-2-grams + char 2-5-grams) in {feature_seconds:.1f} s")

    results: dict[str, Any] = {}
    for name in names:
        spec = BASELINES[name]
        if name == "soft-vote" and _calibration_folds(counts) < 2:
            rare = [label for label, n in counts.items() if n < 2]
            results[name] = {
                "title": spec.title,
                "skipped": f"class(es) {', '.join(map(repr, rare))} have one training example; calibrating the SVM needs 2",
            }
            console.print(f"[yellow]skipped[/] {name}: {results[name]['skipped']}")
            continue
        model = spec.build(seed, counts)
        fit_started = time.perf_counter()
        model.fit(x_train, data.train.labels)
        model_seconds = time.perf_counter() - fit_started
        predicted = [str(p) for p in model.predict(x_eval)]
        metrics = classification_metrics(y_eval, [label_id[p] for p in predicted], data.labels)
        record: dict[str, Any] = {
            "title": spec.title,
            **{k: metrics[k] for k in _HEADLINE},
            "per_class": metrics["per_class"],
            "confusion_matrix": metrics["confusion_matrix"],
            "model_seconds": round(model_seconds, 3),
            "train_seconds": round(model_seconds + feature_seconds, 3),
        }
        target = out_dir / "models" / name
        if spec.linear:
            save_linear(target, features, model, name=name, title=spec.title, probabilities=spec.probabilities)
            record["saved"], record["not_saved"] = str(target.relative_to(out_dir)), None
        elif skops_available():
            _save_skops(target, Pipeline([("features", features), ("model", model)]))
            record["saved"], record["not_saved"] = str((target / SKOPS_FILE).relative_to(out_dir)), None
        else:
            record["saved"] = None
            record["not_saved"] = (
                "tree models have no small safe format of ours and pickle is never used; install skops (pip install skops) to save them as .skops"
            )
        results[name] = record
        console.print(f"{name}: accuracy {record['accuracy']:.4f}, macro-F1 {record['macro_f1']:.4f} ({model_seconds:.1f} s)")

    majority = majority_baseline([label_id[t] for t in data.train.labels], y_eval, data.labels)
    scored = [n for n in names if "accuracy" in results[n]]
    summary = {
        "data": data.report,
        "seed": seed,
        "labels": data.labels,
        "features": {
            "description": "TF-IDF word 1-2-grams (min_df 1) + char_wb 2-5-grams (min_df 2), sublinear tf, l2",
            "n_features": n_features,
            "seconds": round(feature_seconds, 3),
        },
        "models": results,
        "majority_baseline": majority,
        "best": max(scored, key=lambda n: (results[n]["macro_f1"], results[n]["accuracy"])) if scored else None,
        "out": str(out_dir),
    }
    atomic_write_json(out_dir / "baselines.json", summary)
    return summary


def _data_config(values: dict[str, Any]) -> DataConfig:
    from tunesmith.config import build_config

    return build_config({"data": dict(values)}, source="data config").data


def _chosen(models: Sequence[str] | None) -> list[str]:
    if models is None:
        return list(BASELINES)
    unknown = [m for m in models if m not in BASELINES]
    if unknown:
        raise UserError(f"unknown baseline model(s) {', '.join(map(repr, unknown))}; choose from {', '.join(BASELINES)}")
    if not models:
        raise UserError(f"no baseline model chosen; choose from {', '.join(BASELINES)}")
    return list(dict.fromkeys(models))


def baselines_table(result: dict[str, Any], title: str | None = None) -> Table:
    """The comparison table of :func:`run_baselines`: one row per model, then the majority class."""
    table = Table(
        "model", "accuracy", "macro-F1", "weighted-F1", "train s", "saved",
        title=title or f"TF-IDF (word 1-2 + char 2-5-grams) + each model: {result['out']}",
    )  # fmt: skip
    best = result.get("best")
    for name, r in result["models"].items():
        if "skipped" in r:
            table.add_row(name, "", "", "", "", "skipped")
            continue
        table.add_row(
            name,
            f"{r['accuracy']:.4f}",
            f"{r['macro_f1']:.4f}",
            f"{r['weighted_f1']:.4f}",
            f"{r['train_seconds']:.1f}",
            "yes" if r["saved"] else "no",
            style="bold" if name == best else None,
        )
    m = result["majority_baseline"]
    table.add_row(f"majority ({m['predicts']})", f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}", f"{m['weighted_f1']:.4f}", "-", "-")
    return table


# ---------------------------------------------------------------- the linear format: JSON + npz


def save_linear(target: Path, features: Any, model: Any, *, name: str, title: str = "", probabilities: str | None = None) -> None:
    """Write a fitted TF-IDF union + linear classifier as ``model.json`` and ``weights.npz`` in ``target``.

    Args:
        target: directory to (re)write; it is replaced whole, never left half-written.
        features: the fitted ``FeatureUnion`` of ``TfidfVectorizer``s.
        model: a fitted classifier with ``coef_``/``intercept_`` (linear SVM, logistic regression) or
            ``feature_log_prob_`` (complement naive Bayes).
        name: the baseline's registry name, stored for the reader.
        title: its display name.
        probabilities: ``logistic``, ``softmax`` or None, how :class:`LinearTextClassifier` turns scores
            into probabilities.

    Raises:
        ValueError: the features or the model are of a kind this format cannot hold.
    """
    import numpy as np
    import sklearn

    from tunesmith.training.rundir import replace_dir

    vectorizers, arrays = [], {}
    for i, (_, vec) in enumerate(features.transformer_list):
        params = vec.get_params()
        custom = [k for k in ("preprocessor", "tokenizer", "stop_words") if params.get(k) is not None]
        if custom or callable(params["analyzer"]) or params.get("vocabulary") is not None:
            raise ValueError(
                f"vectorizer {i} uses {', '.join(custom) or 'a callable analyzer or fixed vocabulary'}; the JSON format holds settings only"
            )
        terms: list[str | None] = [None] * len(vec.vocabulary_)
        for term, index in vec.vocabulary_.items():
            terms[int(index)] = term
        settings = {k: params[k] for k in _VECTORIZER_PARAMS}
        settings["ngram_range"] = list(settings["ngram_range"])
        vectorizers.append({"settings": settings, "terms": terms})
        arrays[f"idf_{i}"] = np.asarray(vec.idf_, dtype=np.float64)
    if hasattr(model, "coef_"):
        arrays["coef"] = np.asarray(model.coef_, dtype=np.float64)
        arrays["intercept"] = np.asarray(model.intercept_, dtype=np.float64).reshape(-1)
    elif hasattr(model, "feature_log_prob_"):  # complement NB scores X @ feature_log_prob_.T (2+ classes: no prior term)
        arrays["coef"] = np.asarray(model.feature_log_prob_, dtype=np.float64)
        arrays["intercept"] = np.zeros(arrays["coef"].shape[0])
    else:
        raise ValueError(f"{type(model).__name__} is not a linear model; save it with skops")
    meta = {
        "format": LINEAR_FORMAT,
        "version": LINEAR_FORMAT_VERSION,
        "baseline": name,
        "title": title,
        "estimator": type(model).__name__,
        "classes": [str(c) for c in model.classes_],
        "probabilities": probabilities,
        "vectorizers": vectorizers,
        "sklearn_version": sklearn.__version__,
    }
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "model.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    np.savez_compressed(tmp / "weights.npz", **arrays)
    replace_dir(tmp, target)


class LinearTextClassifier:
    """A linear baseline rebuilt from ``model.json`` + ``weights.npz`` (no pickle involved).

    Example:
        >>> model = load_baseline("runs/baseline-sms_spam-.../models/linear-svc")
        >>> model.predict(["WIN a FREE prize now"])
        ['spam']
    """

    def __init__(self, path: Path):
        import numpy as np
        from sklearn.feature_extraction.text import TfidfVectorizer

        meta = json.loads((path / "model.json").read_text(encoding="utf-8"))
        if meta.get("format") != LINEAR_FORMAT or meta.get("version") != LINEAR_FORMAT_VERSION:
            raise UserError(
                f"{path / 'model.json'} is not a tunesmith linear baseline of version {LINEAR_FORMAT_VERSION} "
                f"(format {meta.get('format')!r}, version {meta.get('version')!r}); refit it with `tunesmith baseline`"
            )
        self.path = path
        self.name = meta["baseline"]
        self.classes = list(meta["classes"])
        self.probabilities = meta["probabilities"]
        with np.load(path / "weights.npz", allow_pickle=False) as weights:
            self.coef = weights["coef"]
            self.intercept = weights["intercept"]
            idfs = [weights[f"idf_{i}"] for i in range(len(meta["vectorizers"]))]
        self._vectorizers = []
        for spec, idf in zip(meta["vectorizers"], idfs, strict=True):
            settings = {**spec["settings"], "ngram_range": tuple(spec["settings"]["ngram_range"])}
            vec = TfidfVectorizer(**settings, vocabulary={term: i for i, term in enumerate(spec["terms"])})
            vec.idf_ = idf  # the documented way to give a vectorizer a known idf
            self._vectorizers.append(vec)

    def transform(self, texts: Sequence[str]):
        """The TF-IDF matrix of ``texts`` (the features the model was fitted on)."""
        import scipy.sparse as sp

        if isinstance(texts, str):
            raise UserError("expected a list of texts, got a single string; wrap it: model.predict([text])")
        return sp.hstack([vec.transform(list(texts)) for vec in self._vectorizers]).tocsr()

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        """Scores ``X @ coef.T + intercept``: shape ``[n]`` for a binary SVM/logreg, else ``[n, classes]``."""
        from sklearn.utils.extmath import safe_sparse_dot

        scores = safe_sparse_dot(self.transform(texts), self.coef.T, dense_output=True) + self.intercept
        return scores.reshape(-1) if scores.shape[1] == 1 else scores

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The predicted class of each text, in input order."""
        scores = self.decision_function(texts)
        best = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return [self.classes[i] for i in best]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities ``[n, classes]`` (logistic regression and naive Bayes; a linear SVM has none)."""
        import numpy as np
        from scipy.special import expit, softmax

        if self.probabilities is None:
            raise UserError(f"{self.name} gives no probabilities (a linear SVM only scores); use logreg or complement-nb")
        scores = self.decision_function(texts)
        if scores.ndim == 1:
            p = expit(scores)
            return np.column_stack([1 - p, p])
        return softmax(scores, axis=1)


# ---------------------------------------------------------------- skops, for the tree models


def _save_skops(target: Path, pipeline: Any) -> None:
    import skops.io as sio

    from tunesmith.training.rundir import replace_dir

    tmp = target.with_name(f".{target.name}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    sio.dump(pipeline, tmp / SKOPS_FILE)
    replace_dir(tmp, target)


class SkopsTextClassifier:
    """A TF-IDF pipeline read from a ``.skops`` file, whose types were all checked before loading."""

    def __init__(self, file: Path):
        if not skops_available():
            raise UserError(f"{file} is a skops file; install skops to load it: pip install skops")
        import skops.io as sio

        named = sio.get_untrusted_types(file=file)
        foreign = sorted(t for t in named if t.split(".", 1)[0] not in _SKOPS_TRUSTED_PACKAGES)
        if foreign:
            raise UserError(
                f"refusing to load {file}: it names types outside {', '.join(_SKOPS_TRUSTED_PACKAGES)} ({', '.join(foreign)}), "
                "which could run code on load; load it with skops yourself only if you trust where it came from"
            )
        self.path = file
        self.pipeline = sio.load(file, trusted=named)
        self.classes = [str(c) for c in self.pipeline.classes_]

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The predicted class of each text, in input order."""
        if isinstance(texts, str):
            raise UserError("expected a list of texts, got a single string; wrap it: model.predict([text])")
        return [str(p) for p in self.pipeline.predict(list(texts))]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities ``[n, classes]``."""
        return self.pipeline.predict_proba(list(texts))


def load_baseline(path: str | Path) -> LinearTextClassifier | SkopsTextClassifier:
    """Open a saved baseline: a ``models/NAME`` directory written by :func:`run_baselines` (or its files).

    Never unpickles: linear models are rebuilt from JSON + npz (``allow_pickle=False``), tree models
    are read with skops after checking that every type they name is from scikit-learn, numpy or scipy.

    Raises:
        UserError: the path holds no saved baseline.
    """
    p = Path(path)
    if p.is_file():
        p = p.parent if p.name in ("model.json", "weights.npz") else p
    if p.is_dir() and (p / "model.json").is_file():
        return LinearTextClassifier(p)
    skops_file = p / SKOPS_FILE if p.is_dir() else p
    if skops_file.is_file() and skops_file.suffix == ".skops":
        return SkopsTextClassifier(skops_file)
    raise UserError(
        f"{p} holds no saved baseline (expected model.json + weights.npz, or {SKOPS_FILE}); "
        "pass a models/NAME directory written by `tunesmith baseline`"
    )
