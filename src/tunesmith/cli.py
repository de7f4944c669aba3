"""The `tunesmith` console script: a table from verb to function, thin wrappers that parse and print.

Everything here is callable from Python (``tunesmith.train``, ``tunesmith.load(run).predict``);
the CLI only turns flags into arguments and results into tables. Bad input exits with code 2 and a
one-paragraph message, never a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from tunesmith.commands.compress import args_distill, cmd_distill
from tunesmith.commands.data import (
    args_augment,
    args_dedup,
    args_doctor,
    args_list,
    cmd_augment,
    cmd_data_list,
    cmd_dedup,
    cmd_doctor,
    cmd_models_list,
)
from tunesmith.commands.deploy import args_explain, args_export, args_report, args_serve, cmd_explain, cmd_export, cmd_report, cmd_serve
from tunesmith.commands.evaluate import (
    args_baseline,
    args_cluster,
    args_curve,
    args_cv,
    args_ensemble,
    args_fewshot,
    args_search,
    args_zeroshot,
    cmd_baseline,
    cmd_cluster,
    cmd_curve,
    cmd_cv,
    cmd_ensemble,
    cmd_fewshot,
    cmd_search,
    cmd_zeroshot,
)
from tunesmith.commands.generate import args_chat, args_generate, cmd_chat, cmd_generate
from tunesmith.commands.output import err
from tunesmith.commands.preference import args_data_preferences, cmd_data_preferences
from tunesmith.commands.run import args_eval, args_predict, args_train, cmd_eval, cmd_predict, cmd_train
from tunesmith.commands.ui import args_ui, cmd_ui
from tunesmith.errors import UserError

# verb -> (help, description/epilog examples, add arguments, handler); nested verbs use "group verb"
VERBS: dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "train": (
        "fine-tune a model and write a run directory",
        "examples:\n  tunesmith train                                   # minilm on sms_spam\n"
        "  tunesmith train --train data.csv --text-col text --label-col label --out runs/mine\n"
        "  tunesmith train --config examples/sms_spam.yaml --epochs 1 --method lora\n"
        "  tunesmith train --out runs/mine --resume          # continue an interrupted run",
        args_train,
        cmd_train,
    ),
    "predict": (
        "label texts with a trained run",
        'examples:\n  tunesmith predict runs/mine --text "WIN a FREE prize, text now"\n'
        "  tunesmith predict runs/mine --input new.csv --output predictions.csv",
        args_predict,
        cmd_predict,
    ),
    "eval": (
        "score a trained run on a labelled file",
        "example:\n  tunesmith eval runs/mine --data holdout.csv",
        args_eval,
        cmd_eval,
    ),
    "generate": (
        "generate text with a run or a model (sft/clm runs, smollm2-135m, any HF causal LM), streamed as it is written",
        'examples:\n  tunesmith generate smollm2-135m --prompt "Translate to English: 你好" --temperature 0\n'
        '  tunesmith generate runs/sft-hsk --prompt "Translate to English: 我很高兴" --max-new-tokens 32\n'
        '  tunesmith generate runs/clm-mine --prompt "Once upon a time" --seed 1 --top-p 0.95',
        args_generate,
        cmd_generate,
    ),
    "chat": (
        "chat with a run or a model in the terminal (history kept; /reset forgets it, /exit quits)",
        "examples:\n  tunesmith chat smollm2-135m\n  tunesmith chat runs/sft-hsk --temperature 0.3 --system 'You translate Chinese to English.'\n"
        "  printf 'hello\\n/reset\\nhi again\\n' | tunesmith chat runs/sft-hsk   # reads stdin: scriptable",
        args_chat,
        cmd_chat,
    ),
    "doctor": (
        "find what in a dataset would hurt fine-tuning, with the command that fixes it",
        "examples:\n  tunesmith doctor sms_spam\n  tunesmith doctor data.csv --eval holdout.csv --text-col text --label-col label\n"
        "  tunesmith doctor data.csv --model none --json   # skip the tokenizer checks, print JSON",
        args_doctor,
        cmd_doctor,
    ),
    "dedup": (
        "remove duplicate rows, and eval rows that leak from training",
        "examples:\n  tunesmith dedup data.csv --out clean.csv\n"
        "  tunesmith dedup train.csv --eval test.csv --out train.clean.csv --eval-out test.clean.csv --near",
        args_dedup,
        cmd_dedup,
    ),
    "augment": (
        "write a training file plus EDA copies of each row (swap, delete, insert words)",
        "examples:\n  tunesmith augment train.csv --method eda --factor 4 --out train-eda.csv\n"
        "  tunesmith augment data.csv --factor 2 --out train-eda.csv --eval-out eval.csv   # hold out eval first",
        args_augment,
        cmd_augment,
    ),
    "curve": (
        "measure a learning curve and say what doubling the training data should add",
        "examples:\n  tunesmith curve sms_spam                          # TF-IDF + SVM, 5 fractions x 2 repeats\n"
        "  tunesmith curve data.csv --eval holdout.csv --fractions 0.1,0.25,0.5,1.0\n"
        "  tunesmith curve data.csv --estimator finetune --epochs 1 --out runs/curve-mine",
        args_curve,
        cmd_curve,
    ),
    "cv": (
        "k-fold cross-validation: one run per fold, mean ± std and a 95%% interval beside TF-IDF + SVM",
        "examples:\n  tunesmith cv data.csv --folds 5 --epochs 2 --out runs/cv-mine\n"
        "  tunesmith cv data.csv --group-col speaker --folds 5       # a speaker's texts stay in one fold\n"
        "  tunesmith cv --config examples/sms_spam.yaml --folds 3 --out runs/cv-spam\n"
        "rerun with the same --out to resume: folds whose run finished are reused; OUT/oof_predictions.jsonl has every row once",
        args_cv,
        cmd_cv,
    ),
    "baseline": (
        "fit classical TF-IDF models (SVM, logreg, tree, forest, NB, soft vote) on the fine-tuning split and compare them",
        "examples:\n  tunesmith baseline sms_spam\n"
        "  tunesmith baseline data.csv --eval holdout.csv --text-col text --label-col label --out runs/baseline-mine\n"
        "  tunesmith baseline data.csv --models linear-svc,logreg --seed 7",
        args_baseline,
        cmd_baseline,
    ),
    "search": (
        "search hyperparameters with Optuna (TPE, median pruning); every trial a run, the study resumable",
        "examples:\n  tunesmith search examples/sms_spam.yaml --space examples/search/sms_spam_space.yaml --trials 20 --out runs/search-spam\n"
        "  tunesmith search --config examples/sms_spam.yaml --space space.yaml --trials 10 --max-steps 60\n"
        "  tunesmith search cfg.yaml --space space.yaml --trials 5 --storage postgresql://host/db --study spam   # one of several workers\n"
        "rerun with the same --out to continue the study; OUT/best_config.yaml is ready for `tunesmith train --config`",
        args_search,
        cmd_search,
    ),
    "ensemble": (
        "soft-vote classify runs (and saved baselines) and score the ensemble beside each member",
        "examples:\n  tunesmith ensemble runs/a runs/b --data holdout.csv\n"
        "  tunesmith ensemble runs/a runs/b --data holdout.csv --baseline runs/baseline-spam --fit-weights --out ensemble.json",
        args_ensemble,
        cmd_ensemble,
    ),
    "cluster": (
        "cluster texts by their sentence embeddings (k-means or HDBSCAN), name clusters by c-TF-IDF terms, plot them",
        "examples:\n  tunesmith cluster sms_spam                        # minilm, k by silhouette, NMI vs labels\n"
        "  tunesmith cluster texts.csv --k 5 --out runs/cluster-mine\n"
        "  tunesmith cluster texts.csv --run runs/mine --algorithm hdbscan   # a fine-tuned run's encoder",
        args_cluster,
        cmd_cluster,
    ),
    "zeroshot": (
        "label texts with no training data: the label whose description embeds closest (sentence encoder)",
        "examples:\n  tunesmith zeroshot sms_spam --labels ham,spam --descriptions labels.yaml\n"
        "  tunesmith zeroshot texts.csv --labels sport,politics,tech --template '{label}' --out runs/zs/metrics.json\n"
        "labels.yaml maps label -> description, e.g. spam: an unsolicited advertisement or scam message.\n"
        "Scoring by an instruct LLM's log-likelihood needs the generative models of another issue and is not available yet.",
        args_zeroshot,
        cmd_zeroshot,
    ),
    "fewshot": (
        "classify from K examples per class: nearest class prototype on frozen embeddings, or SetFit, beside the majority baseline",
        "examples:\n  tunesmith fewshot sms_spam --shots 8                       # prototypes on minilm\n"
        "  tunesmith fewshot sms_spam --shots 8 --method setfit --seed 1\n"
        "  tunesmith fewshot data.csv --shots 16 --eval holdout.csv --out runs/fs-mine",
        args_fewshot,
        cmd_fewshot,
    ),
    "explain": (
        "show which words made a classify or ner run predict what it did (integrated gradients, attention maps; ner per entity)",
        'examples:\n  tunesmith explain runs/mine --text "WIN a FREE prize, text now"\n'
        '  tunesmith explain runs/mine --text "see you at lunch" --target spam --html why.html\n'
        '  tunesmith explain runs/mine --text "..." --method attention --html map.html\n'
        '  tunesmith explain runs/my-ner --text "we met Alice in Paris" --target PER\n'
        '  tunesmith explain runs/mine --text "..." --json --steps 64',
        args_explain,
        cmd_explain,
    ),
    "report": (
        "write a run's self-contained HTML report (metrics beside baselines, curves, confusion matrix, errors explained)",
        "examples:\n  tunesmith report runs/mine                        # RUN/report.html\n  tunesmith report runs/mine --output mine.html",
        args_report,
        cmd_report,
    ),
    "distill": (
        "distil a classify run into a smaller student (soft targets + gold labels); the student is a normal run",
        "examples:\n  tunesmith distill --teacher runs/spam --out runs/spam-small        # every other layer of the teacher\n"
        "  tunesmith distill --teacher runs/spam --student layers:2 --alpha 0.7 --temperature 4 --epochs 2\n"
        "  tunesmith distill --teacher runs/spam --student path/to/small-encoder --num-processes 2\n"
        "  tunesmith distill --out runs/spam-small --resume                     # continue an interrupted one\n"
        "  tunesmith export runs/spam-small --quantize int8                     # then: an int8 ONNX student",
        args_distill,
        cmd_distill,
    ),
    "export": (
        "export a trained run to ONNX or TorchScript, checking that it reproduces the run",
        "examples:\n  tunesmith export runs/mine                        # RUN/export/onnx: fused fp32 ONNX\n"
        "  tunesmith export runs/mine --quantize int8        # RUN/export/onnx-int8\n"
        "  tunesmith export runs/mine --format torchscript --output deploy/model\n"
        "exit code 1 when the export's outputs differ from the run's beyond the parity bound (files kept)",
        args_export,
        cmd_export,
    ),
    "serve": (
        "serve a trained run over HTTP: POST /predict with micro-batching (OpenAI-style /v1/chat/completions and "
        "/v1/completions for sft/clm runs), /health, /info, /metrics",
        "examples:\n  tunesmith serve runs/mine                         # http://127.0.0.1:8000, fastest backend measured at startup\n"
        '  curl -s localhost:8000/predict -H "content-type: application/json" -d \'{"texts": ["WIN a FREE prize"]}\'\n'
        "  tunesmith serve runs/mine --backend onnx-int8 --host 0.0.0.0 --api-key $KEY\n"
        "  tunesmith serve runs/my-sft                       # then: curl -N localhost:8000/v1/chat/completions \\\n"
        '      -d \'{"messages": [{"role": "user", "content": "hi"}], "stream": true}\'',
        args_serve,
        cmd_serve,
    ),
    "ui": (
        "a local web page to start, watch, compare and inspect runs (runs table, curves, doctor findings, try box)",
        "examples:\n  tunesmith ui                                      # http://127.0.0.1:7860 over ./runs\n"
        "  tunesmith ui --runs-dir experiments --port 8080\n"
        "  tunesmith ui --max-upload-mb 500                  # accept larger data files",
        args_ui,
        cmd_ui,
    ),
    "data list": ("list the packaged datasets", "example:\n  tunesmith data list", args_list, cmd_data_list),
    "data preferences": (
        "build a demo preference set (prompt/chosen/rejected) from translation pairs, for --task reward and --task dpo",
        "examples:\n  tunesmith data preferences --out prefs.jsonl                 # from hsk_zh_en: right vs another sentence's translation\n"
        "  tunesmith data preferences my_sft.jsonl --out prefs.jsonl --limit 500 --seed 1",
        args_data_preferences,
        cmd_data_preferences,
    ),
    "models list": ("list the registry models", "example:\n  tunesmith models list", args_list, cmd_models_list),
}


def build_parser() -> argparse.ArgumentParser:
    from tunesmith import __version__

    parser = argparse.ArgumentParser(
        prog="tunesmith",
        description="Fine-tune language models on small, unbalanced, multilingual or noisy data, and know whether it worked.",
        epilog="Run `tunesmith VERB --help` for a verb's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, (help_text, examples, add_args, handler) in VERBS.items():
        fmt = argparse.RawDescriptionHelpFormatter
        if " " in name:
            group, verb = name.split(" ", 1)
            if group not in groups:
                gp = verbs.add_parser(group, help=f"{group} commands ({group} list)")
                groups[group] = gp.add_subparsers(dest="subverb", metavar="VERB", required=True)
            sp = groups[group].add_parser(verb, help=help_text, description=help_text, epilog=examples, formatter_class=fmt)
        else:
            sp = verbs.add_parser(name, help=help_text, description=help_text, epilog=examples, formatter_class=fmt)
        add_args(sp)
        sp.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UserError as exc:
        err.print("[bold red]error:[/]", end=" ")
        err.print(str(exc), markup=False, highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
