"""Verbs that evaluate and tune: cv, curve, baseline, search, ensemble, cluster, zeroshot, fewshot."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from tunesmith.commands.flags import add_config_flags, config_overrides
from tunesmith.commands.output import (
    err,
    out,
    print_metrics_table,
)
from tunesmith.errors import UserError

_CURVE_TRAINING_FLAGS = ("model", "epochs", "lr", "batch_size", "max_length", "precision", "threads")


def cmd_curve(args: argparse.Namespace) -> int:
    from tunesmith.config import load_config
    from tunesmith.evaluate.curve import METRIC_NAMES, learning_curve

    overrides = {"train": args.data}
    for key in ("eval", "text_col", "label_col", "seed", *_CURVE_TRAINING_FLAGS):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    config = load_config(args.config, overrides)
    result = learning_curve(config, fractions=args.fractions, repeats=args.repeats, estimator=args.estimator, out=args.out, console=err)
    table = Table("fraction", "train examples", "macro-F1", "accuracy", title=f"learning curve ({result.summary['estimator']})")
    for fraction in result.summary["fractions"]:
        pts = [p for p in result.points if p["fraction"] == fraction]
        mean = {m: sum(p[m] for p in pts) / len(pts) for m in ("macro_f1", "accuracy")}
        table.add_row(f"{fraction:g}", f"{pts[0]['n']:,}", f"{mean['macro_f1']:.4f}", f"{mean['accuracy']:.4f}")
    out.print(table)
    out.print(result.sentence, highlight=False)
    check = result.validation or {}
    if check.get("available"):
        m = check["macro_f1"]
        if m["predicted"] is not None:
            lo, hi = m["interval"]
            out.print(
                f"extrapolation check: fitted on fractions <= {check['max_fraction']:g}, the curve predicts {METRIC_NAMES['macro_f1']} "
                f"{m['predicted'] * 100:.1f} at n={check['n_checked']:,} ({check['level']:.0%} interval {lo * 100:.1f}-{hi * 100:.1f}); "
                f"measured {m['measured'] * 100:.1f}: {'inside' if m['inside'] else 'outside'} the interval",
                highlight=False,
            )
    out.print(f"wrote {result.dir / 'curve.json'} and {result.dir / 'curve.png'}")
    return 0


def args_curve(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", metavar="DATA", help="training data: a CSV/TSV/JSONL/Parquet file or a packaged dataset name")
    p.add_argument("--eval", metavar="FILE", help="eval file; default: the seeded stratified holdout `tunesmith train` would use")
    p.add_argument(
        "--fractions",
        default="0.1,0.2,0.4,0.7,1.0",
        metavar="F,F,...",
        help="shares of the training split to train on (nested stratified subsamples) [default: 0.1,0.2,0.4,0.7,1.0]",
    )
    p.add_argument("--repeats", type=int, metavar="N", help="subsamples per fraction, each its own seed [default: 2 baseline, 1 finetune]")
    p.add_argument(
        "--estimator",
        choices=("baseline", "finetune"),  # tunesmith.evaluate.curve.ESTIMATORS, spelled out: that module imports numpy
        default="baseline",
        help="baseline: TF-IDF + linear SVM (seconds); finetune: a training run per point",
    )
    p.add_argument("--out", metavar="DIR", help="directory for curve.json and curve.png [default: runs/curve-<data>-<time>]")
    p.add_argument("--text-col", help="text column (default: detected)")
    p.add_argument("--label-col", help="label column (default: detected)")
    p.add_argument("--seed", metavar="N", help="seed of the split, the subsamples and training [default: 42]")
    p.add_argument("--config", metavar="FILE", help="YAML config for the finetune runs (flags below override its keys)")
    group = p.add_argument_group("training settings for --estimator finetune (see `tunesmith train --help`)")
    for key in _CURVE_TRAINING_FLAGS:
        group.add_argument("--" + key.replace("_", "-"), dest=key, metavar=key.upper())


def cmd_cv(args: argparse.Namespace) -> int:
    from tunesmith.config import load_config
    from tunesmith.evaluate.cv import OOF_FILE, RESULT_FILE, TASK_SPECS, cross_validate, cv_table

    overrides = config_overrides(args)
    if args.data is not None:
        if overrides.get("train", args.data) != args.data:
            raise UserError(f"cv got two training sets, DATA {args.data!r} and --train {overrides['train']!r}; give one of them")
        overrides["train"] = args.data
    config = load_config(args.config, overrides)
    result = cross_validate(config, folds=args.folds, group_col=args.group_col, console=err)
    out.print(cv_table(result))
    shown = TASK_SPECS[result.task].table_metrics[:2]
    pooled = ", ".join(f"{m} {result.pooled[m]:.4f}" for m in shown)
    out.print(f"all out-of-fold predictions pooled: {pooled} (n={result.pooled['n']:,})")
    out.print(f"wrote {result.out / RESULT_FILE} and {result.out / OOF_FILE}; each fold is a run: {result.out / 'fold-1' / 'run'} ...")
    return 0


def args_cv(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data",
        metavar="DATA",
        nargs="?",
        help="data to split into folds: a file or packaged dataset name [default: --train / the config's]",
    )
    p.add_argument("--folds", type=int, default=5, metavar="K", help="number of folds [default: 5]")
    p.add_argument(
        "--group-col",
        metavar="COLUMN",
        help="column whose values (speaker, document, user id) must never be split between train and eval (stratified group k-fold)",
    )
    add_config_flags(p)


def cmd_baseline(args: argparse.Namespace) -> int:
    from tunesmith.classic.baselines import baselines_table, run_baselines
    from tunesmith.config import build_config

    flags = {
        "train": args.data,
        "eval": args.eval,
        "text_col": args.text_col,
        "label_col": args.label_col,
        "eval_fraction": args.eval_fraction,
        "seed": args.seed,
    }
    # the run config validates the flags, so the split is the one `tunesmith train` with the same flags makes
    config = build_config({}, {k: v for k, v in flags.items() if v is not None}, source="baseline flags")
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    result = run_baselines(config.data, config.training.seed, out=args.out, models=models, console=err)
    out.print(baselines_table(result))
    data = result["data"]
    out.print(
        f"eval n={data['eval_size']:,} ({data['split']}); train s = the shared TF-IDF features ({result['features']['seconds']:.1f} s) + the model's fit"
    )
    for reason in sorted({r["not_saved"] for r in result["models"].values() if r.get("not_saved")}):
        out.print(f"[yellow]not saved:[/] {reason}")
    for name, r in result["models"].items():
        if r.get("skipped"):
            out.print(f"[yellow]skipped {name}:[/] {r['skipped']}")
    out.print(
        f"wrote {Path(result['out']) / 'baselines.json'}; load a saved model with "
        f"tunesmith.classic.load_baseline('{Path(result['out']) / 'models' / 'NAME'}').predict(texts)"
    )
    return 0


def args_baseline(p: argparse.ArgumentParser) -> None:
    from tunesmith.classic.baselines import BASELINES

    p.add_argument("data", metavar="DATA", help="training data: a CSV/TSV/JSONL/Parquet file or a packaged dataset name")
    p.add_argument("--eval", metavar="FILE", help="eval file; default: the same seeded stratified holdout as `tunesmith train`")
    p.add_argument("--text-col", help="text column (default: detected)")
    p.add_argument("--label-col", help="label column (default: detected)")
    p.add_argument("--eval-fraction", metavar="F", help="share held out when there is no eval file [default: 0.2, as train]")
    p.add_argument("--seed", metavar="N", help="seed of the split and the models [default: 42, as train]")
    p.add_argument("--models", metavar="A,B", help=f"comma-separated subset of: {', '.join(BASELINES)} [default: all]")
    p.add_argument("--out", metavar="DIR", help="directory for baselines.json and the saved models [default: runs/baseline-<data>-<time>]")


def cmd_cluster(args: argparse.Namespace) -> int:
    from tunesmith.classic.cluster import cluster_texts

    result = cluster_texts(
        args.data, model=args.model, run=args.run, k=args.k, algorithm=args.algorithm, out=args.out,
        text_col=args.text_col, label_col=args.label_col, seed=args.seed, console=err,
    )  # fmt: skip
    table = Table("cluster", "size", "top terms (c-TF-IDF)", title=f"{result['k']} clusters of {args.data} ({result['algorithm']})")
    for cluster, size in result["sizes"].items():
        table.add_row("noise" if cluster == "-1" else cluster, f"{size:,}", ", ".join(result["top_terms"].get(cluster, [])[:8]))
    out.print(table)
    sil = result["silhouette"]
    out.print(f"silhouette {sil:.4f}" if sil is not None else "silhouette: undefined (fewer than 2 clusters)")
    if "against_labels" in result:
        a = result["against_labels"]
        out.print(f"against column '{result['label_col']}': purity {a['purity']:.4f}, NMI {a['nmi']:.4f}, ARI {a['ari']:.4f}")
    out.print(f"wrote {Path(result['out']) / 'clusters.json'}, assignments.jsonl and clusters.png")
    return 0


def args_cluster(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", metavar="DATA", help="texts to cluster: a CSV/TSV/JSONL/Parquet file or packaged dataset name (labels optional)")
    p.add_argument("--run", metavar="RUN", help="embed with the encoder of this trained run")
    p.add_argument("--model", metavar="NAME", help="embed with this registry model, HF directory or hub id [default: minilm]")
    p.add_argument(
        "--k", default="auto", metavar="K|auto", help="number of k-means clusters, or auto: best silhouette over 2..12 [default: auto]"
    )
    p.add_argument(
        "--algorithm",
        choices=("kmeans", "hdbscan"),
        default="kmeans",
        help="hdbscan finds k itself and marks outliers as noise [default: kmeans]",
    )
    p.add_argument("--out", metavar="DIR", help="output directory [default: runs/cluster-<data>-<time>]")
    p.add_argument("--text-col", help="text column (default: detected)")
    p.add_argument("--label-col", help="label column to score the clusters against (default: detected, optional)")
    p.add_argument("--seed", type=int, default=0, help="seed of k-means [default: 0]")


def cmd_zeroshot(args: argparse.Namespace) -> int:
    from tunesmith.evaluate.zeroshot import default_zeroshot_file, zero_shot
    from tunesmith.training.rundir import atomic_write_json, write_jsonl

    result = zero_shot(
        args.data, args.labels, descriptions=args.descriptions, template=args.template, model=args.model,
        text_col=args.text_col, label_col=args.label_col, temperature=args.temperature, console=err,
        method=args.method, calibrate=args.calibrate,
    )  # fmt: skip
    target = Path(args.out) if args.out else default_zeroshot_file(args.data)
    atomic_write_json(
        target,
        {
            "data": args.data,
            "model": args.model or "minilm",
            **(result.metrics or {"label_prompts": dict(zip(result.labels, result.prompts))}),
        },
    )
    write_jsonl(target.with_name("predictions.jsonl"), result.predictions)
    if result.metrics is not None:
        print_metrics_table(result.metrics, title=f"zero-shot on {args.data}")
    else:
        counts = {name: sum(p["label"] == name for p in result.predictions) for name in result.labels}
        out.print("no gold labels: predicted " + ", ".join(f"{n} {c:,}" for n, c in counts.items()))
    out.print(f"wrote {target} and {target.with_name('predictions.jsonl')}")
    return 0


def args_zeroshot(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data", metavar="DATA", help="texts to label: a file or packaged dataset name; a gold label column is scored when present"
    )
    p.add_argument("--labels", required=True, metavar="A,B,C", help="the candidate labels, comma-separated (at least 2)")
    p.add_argument("--descriptions", metavar="FILE", help="JSON or YAML mapping label -> description to embed instead of the template")
    p.add_argument(
        "--template",
        default="This text is about {label}.",
        help="text embedded for labels without a description; '{label}' embeds the bare name [default: %(default)s]",
    )
    p.add_argument(
        "--method",
        choices=("embedding", "llm"),
        default="embedding",
        help="embedding: similarity of text and label description; llm: each label's log-likelihood as an instruct LLM's answer",
    )
    p.add_argument(
        "--model",
        metavar="NAME",
        help="registry name, HF directory or hub id [default: minilm for embedding, smollm2-135m for llm]",
    )
    p.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="llm: keep the model's own label bias (by default each label's score for a content-free text is subtracted)",
    )
    p.add_argument(
        "--temperature", type=float, default=0.05, help="softmax temperature over cosine similarities for the probabilities [default: 0.05]"
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        help="metrics JSON to write, with predictions.jsonl beside it [default: runs/zeroshot-<data>-<time>/metrics.json]",
    )
    p.add_argument("--text-col", help="text column (default: detected)")
    p.add_argument("--label-col", help="gold label column (default: detected, optional)")


def cmd_fewshot(args: argparse.Namespace) -> int:
    from tunesmith.evaluate.fewshot import default_fewshot_dir, few_shot

    target = Path(args.out) if args.out else default_fewshot_dir(args.data, args.method, args.shots)
    result = few_shot(
        args.data, shots=args.shots, eval_data=args.eval, method=args.method, model=args.model, seed=args.seed,
        split_seed=args.split_seed, eval_fraction=args.eval_fraction, text_col=args.text_col, label_col=args.label_col,
        max_pairs=args.max_pairs, out=target, console=err,
    )  # fmt: skip
    print_metrics_table(result["eval"], title=f"{args.method} {args.shots}-shot on {args.data} (seed {args.seed})")
    shots = ", ".join(f"{name} {n}" for name, n in result["shots_per_class"].items())
    out.print(f"trained on {shots} examples; eval split: {result['split']['split']}")
    if result["short_classes"]:
        out.print(f"[yellow]fewer than {args.shots} training examples:[/] {', '.join(result['short_classes'])} (all of them used)")
    if "contrastive" in result:
        c = result["contrastive"]
        out.print(f"contrastive tuning: {c['pairs']:,} pairs, {c['steps']} steps, loss {c['first_epoch_loss']:.4f}")
    out.print(f"wrote {target / 'metrics.json'} and {target / 'predictions.jsonl'}")
    return 0


def args_fewshot(p: argparse.ArgumentParser) -> None:
    from tunesmith.evaluate.fewshot import MAX_PAIRS_PER_EXAMPLE, METHODS

    p.add_argument("data", metavar="DATA", help="labelled data: a file or packaged dataset name; shots come from its training split")
    p.add_argument("--shots", type=int, required=True, metavar="K", help="training examples per class")
    p.add_argument("--eval", metavar="FILE", help="eval file; default: the seeded stratified holdout `tunesmith train` makes")
    p.add_argument(
        "--model", metavar="NAME", help="sentence encoder: registry name, HF directory, hub id or run directory [default: minilm]"
    )
    p.add_argument(
        "--method", choices=METHODS, default="prototypes",
        help="prototypes: nearest class mean of frozen embeddings; setfit: 1 epoch of contrastive pair tuning, then logistic regression [default: prototypes]",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the shots drawn (and of SetFit's tuning) [default: 0]")
    p.add_argument("--split-seed", type=int, default=42, help="seed of the train/eval split, as train's --seed [default: 42]")
    p.add_argument("--eval-fraction", type=float, default=0.2, help="share held out when there is no eval file [default: 0.2]")
    p.add_argument(
        "--max-pairs",
        type=int,
        default=MAX_PAIRS_PER_EXAMPLE,
        help=f"setfit: pairs per example, to keep pair count linear [default: {MAX_PAIRS_PER_EXAMPLE}]",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="directory for metrics.json and predictions.jsonl [default: runs/fewshot-<method>-<K>shot-<data>-<time>]",
    )
    p.add_argument("--text-col", help="text column (default: detected)")
    p.add_argument("--label-col", help="label column (default: detected)")


def cmd_search(args: argparse.Namespace) -> int:
    from tunesmith.config import load_config
    from tunesmith.evaluate.search import BEST_CONFIG_FILE, RESULT_FILE, search, search_table

    if args.config_file and args.config:
        raise UserError(f"search got two configs, CONFIG {args.config_file!r} and --config {args.config!r}; give one of them")
    config = load_config(args.config_file or args.config, config_overrides(args))
    result = search(config, args.space, args.trials, storage=args.storage, study_name=args.study, console=err)
    out.print(search_table(result))
    if result.best is None:
        out.print(f"no trial completed yet; wrote {result.out / RESULT_FILE}")
        return 0
    importance = ", ".join(f"{k} {v:.2f}" for k, v in result.importances.items())
    out.print(f"best: trial {result.best['number']}, {result.metric} {result.best['value']:.4f}, run {result.best['run']}")
    if importance:
        out.print(f"parameter importance: {importance}")
    plot = f", {result.plot}" if result.plot else ""
    out.print(f"wrote {result.out / RESULT_FILE}{plot}\ntrain the best config: tunesmith train --config {result.out / BEST_CONFIG_FILE}")
    return 0


def args_search(p: argparse.ArgumentParser) -> None:
    p.add_argument("config_file", metavar="CONFIG", nargs="?", help="YAML config to search around (or --config) [default: the defaults]")
    p.add_argument("--space", required=True, metavar="SPACE.yaml", help="search space: flat keys to {low, high, log} or {choices: [...]}")
    p.add_argument("--trials", type=int, required=True, metavar="N", help="trials to run now (a rerun adds N more to the study)")
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL shared by workers [default: sqlite:///OUT/study.db]")
    p.add_argument("--study", metavar="NAME", help="study name in the storage [default: tunesmith-search]")
    add_config_flags(p)


def cmd_ensemble(args: argparse.Namespace) -> int:
    from tunesmith.evaluate.ensemble import ensemble, ensemble_table

    result = ensemble(
        args.runs,
        args.data,
        baselines=args.baseline or (),
        fit_weights=args.fit_weights,
        text_col=args.text_col,
        label_col=args.label_col,
        out=args.out,
        console=err,
    )
    out.print(ensemble_table(result))
    if args.out:
        out.print(f"wrote {args.out}")
    return 0


def args_ensemble(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", metavar="RUN", nargs="+", help="run directories of classify runs with the same labels")
    p.add_argument("--data", required=True, metavar="FILE", help="labelled file (or packaged dataset) to score on")
    p.add_argument(
        "--baseline",
        action="append",
        metavar="DIR",
        help="a saved baseline (models/NAME) or a `tunesmith baseline` directory; repeatable; only models with probabilities",
    )
    p.add_argument("--fit-weights", action="store_true", help="fit non-negative weights on --data (log-loss; optimistic on that data)")
    p.add_argument("--text-col", help="text column (default: the first run's, else detected)")
    p.add_argument("--label-col", help="label column (default: the first run's, else detected)")
    p.add_argument("--out", metavar="FILE", help="write the result as JSON")
