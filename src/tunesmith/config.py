"""The run configuration: one typed schema, loaded from YAML and overridden by CLI flags.

Every field carries its help text (it becomes the CLI ``--help``). Validation happens when the
config loads and reports every problem at once, each naming the key, the value and what is allowed.
Field names are unique across sections so each one maps to one flat CLI flag
(``training.lr`` -> ``--lr``, ``data.text_col`` -> ``--text-col``).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunesmith.errors import UserError

TaskName = Literal["classify", "regress", "ner", "mlm", "multitask", "seq2seq", "reward", "dpo", "sft", "clm"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the examples come from and how they are split."""

    train: str = Field(
        "sms_spam", description="training data: a CSV/TSV/JSONL/Parquet file or a packaged dataset name (see `tunesmith data list`)"
    )
    eval: str | None = Field(None, description="evaluation file; when absent, a seeded stratified split of the training data is held out")
    text_col: str | None = Field(
        None, description="column holding the text; detected from common names (text, sentence, message, ...) when absent"
    )
    label_col: str | None = Field(
        None, description="column holding the label; detected from common names (label, class, target, ...) when absent"
    )
    eval_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="share of the training data held out for evaluation when no eval file is given"
    )
    dedupe: bool = Field(True, description="drop exact-duplicate texts before splitting (keeps the first occurrence)")
    encoding: str = Field("utf-8", description="text encoding of CSV/TSV/JSONL files")
    balance: Literal["none", "oversample", "undersample"] = Field(
        "none", description="classify: resample the training split so classes are equally frequent (eval is never resampled)"
    )
    lang_col: str | None = Field(
        None, description="column holding each text's language; enables per-language metrics and --lang-temperature"
    )
    detect_language: bool = Field(
        False, description="identify each text's language (py3langid) for per-language metrics and --lang-temperature"
    )
    lang_temperature: float | None = Field(
        None, ge=1.0, description="resample training texts across languages with probability ~ n^(1/T): 1 keeps the mix, larger flattens it"
    )
    multi_label: bool = Field(False, description="classify: each text has a set of labels (`a|b` in CSV, a list in JSONL)")
    label_sep: str = Field("|", min_length=1, description="classify --multi-label: separator between labels in a CSV/TSV cell")
    tag_scheme: Literal["auto", "BIO", "BIOES"] = Field(
        "auto", description="ner: tag scheme of the data; auto detects BIOES when E-/S- tags occur"
    )
    repair_tags: bool = Field(False, description="ner: fix invalid tag sequences (I- without B-) instead of reporting them")
    max_length: int = Field(128, ge=8, le=8192, description="maximum tokens per text; longer texts are truncated")
    template: str | None = Field(
        None,
        description="sft: chat template for a model without one (or to replace its own): plain (### User:/### Assistant:), "
        "a Jinja file, or an inline Jinja string",
    )


class ModelConfig(_Section):
    """Which model to fine-tune and how much of it."""

    model: str = Field(
        "minilm", description="registry name (see `tunesmith models list`), a local Hugging Face model directory, or a hub id"
    )
    method: Literal["full", "lora", "freeze"] = Field(
        "full", description="full: train every weight; lora: low-rank adapters (PEFT); freeze: train the head only"
    )
    lora_r: int = Field(8, ge=1, description="LoRA rank")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling alpha")
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on the LoRA branch")
    lora_merge: bool = Field(True, description="merge LoRA adapters into the saved model (plain transformers can load it)")
    head: Literal["crf", "softmax"] = Field(
        "crf", description="ner: CRF layer with Viterbi decoding under the tag scheme's constraints, or a per-token softmax"
    )
    dropout: float | None = Field(None, ge=0.0, lt=1.0, description="override the model's hidden and attention dropout")
    freeze_embeddings: bool | Literal["auto"] = Field(
        "auto",
        description="full: keep the embedding block fixed (no gradient, no optimizer state for the largest matrix); "
        "auto: on for encoders except mlm, whose output layer shares the word embeddings",
    )
    freeze_layers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto",
        description="full: keep the lowest N transformer layers fixed, so backpropagation stops above them; "
        "auto: 1 for classify on models of 6 layers or more (a faster step at the same accuracy, measured in "
        "benchmarks/README.md), else 0",
    )
    attention: Literal["auto", "eager", "sdpa"] = Field(
        "auto", description="attention kernel while training: auto picks eager for encoders on the CPU (measured faster at short lengths)"
    )
    pooled_last_layer: bool | Literal["auto"] = Field(
        "auto",
        description="compute the last encoder layer only for the first token, the one a BERT-style classification head reads "
        "(exact: the same logits, about a seventh less compute with 6 layers); auto: on wherever the model allows it",
    )


class TrainingConfig(_Section):
    """Optimisation, regularisation and stopping."""

    epochs: float = Field(3.0, gt=0, description="passes over the training data")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    batch_size: int = Field(16, ge=1, description="examples per device per step")
    eval_batch_size: int = Field(64, ge=1, description="examples per batch at evaluation and prediction")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps (effective batch = batch_size x grad_accum)")
    lr: float = Field(5e-5, gt=0, le=1.0, description="peak learning rate of the encoder")
    head_lr: float | None = Field(
        None, gt=0, le=1.0, description="learning rate of the new task head (and CRF); default: lr, but 1e-3 for classify and ner"
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not applied to biases and LayerNorm)")
    warmup_ratio: float = Field(
        0.0, ge=0, lt=1, description="share of steps spent warming up the learning rate (0.0 measured best on SMS spam at 1 epoch)"
    )
    scheduler: Literal["linear", "cosine", "constant"] = Field("linear", description="learning-rate schedule after warm-up")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the cross-entropy loss")
    class_weights: Literal["none", "auto"] = Field(
        "none", description="auto: weight the loss by inverse class frequency (for unbalanced labels)"
    )
    early_stopping: int | None = Field(
        2, ge=1, description="stop after this many evaluations without improvement (patience); null disables"
    )
    metric: str = Field(
        "auto", description="eval metric for early stopping and the best checkpoint; auto: macro_f1 (classify), rmse (regress), f1 (ner)"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast where the CPU/GPU supports it, else fp32"
    )
    fast_dropout: bool = Field(
        True,
        description="on the CPU, draw dropout masks from 16-bit random numbers instead of PyTorch's bernoulli "
        "(the same keep probability to 1/65536, about 3x cheaper; measured 9 percent of a MiniLM step)",
    )
    group_by_length: bool = Field(True, description="batch texts of similar length together (less padding, much faster)")
    baseline: bool = Field(True, description="also fit TF-IDF + linear SVM on the same split and report it beside the model (seconds)")
    doctor: bool = Field(True, description="classify: run `tunesmith doctor` on the data first and keep its findings in doctor.json")
    report: bool = Field(
        True, description="write report.html at the end: metrics beside baselines, curves, confusion matrix, findings, explained errors"
    )
    overfit_monitor: bool = Field(
        True, description="watch the train/eval gap during training; warn and write overfitting.json with remedies"
    )
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="mlm: share of tokens masked for prediction")
    whole_word_mask: bool = Field(False, description="mlm: mask whole words (all their sub-tokens) instead of single sub-tokens")
    task_sampling: Literal["proportional", "temperature"] = Field(
        "proportional",
        description="multitask: proportional: every head's training examples once per epoch; "
        "temperature: resample so head h gets a share of each epoch proportional to n_h^(1/sampling_temperature)",
    )
    sampling_temperature: float = Field(
        2.0, ge=1.0, description="multitask --task-sampling temperature: 1 is proportional, larger values move towards equal shares"
    )
    dpo_beta: float = Field(
        0.1, gt=0, description="dpo: strength of the pull towards the reference model (larger: stay closer); rewards are beta x log-ratio"
    )
    activation_checkpointing: bool = Field(
        False,
        description="recompute each layer's activations in the backward pass instead of keeping them: much less memory "
        "(LoRA then saves the optimizer state on top), about a third more compute",
    )
    packing: bool = Field(
        True, description="sft/clm: pack whole examples into max-length sequences (no attention across examples) instead of padding each"
    )
    eval_generate: int = Field(
        100,
        ge=0,
        description="sft, seq2seq: eval prompts answered greedily for BLEU/chrF, before and after training (a seeded sample; 0 skips)",
    )
    max_new_tokens: int = Field(64, ge=1, description="sft, seq2seq, dpo: most tokens generated per eval reply (and per `predict` reply)")
    seed: int = Field(42, description="seed for splits, initialisation and data order")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch; default: all cores, one less if the machine is busy")
    eval_steps: int | None = Field(
        None, ge=1, description="evaluate and save a checkpoint every N optimizer steps; default: once per epoch"
    )
    num_processes: int = Field(
        1,
        ge=1,
        description="data-parallel processes on this machine (torch.distributed: gloo on CPU, NCCL with one GPU each); "
        "for several machines, FSDP or DeepSpeed use `accelerate launch` (examples/accelerate/)",
    )
    lr_scaling: Literal["none", "linear", "sqrt"] = Field(
        "none",
        description="with several processes: keep lr (none), or multiply it by the number of processes (linear) or its square root (sqrt)",
    )


class HeadConfig(_Section):
    """multitask: one head on the shared encoder, with its own data (YAML only: a list under ``heads:``)."""

    name: str = Field(..., description="head name (letters, digits, _ and -): the key of its metrics and predictions")
    type: Literal["classify", "regress"] = Field(..., description="classify: one label per text; regress: one numeric target per text")
    train: str | None = Field(None, description="training data of this head; default: data.train")
    eval: str | None = Field(
        None, description="eval file of this head; default: data.eval when the head reads data.train, else a held-out split of its own data"
    )
    text_col: str | None = Field(None, description="text column; default: data.text_col, else detected")
    label_col: str | None = Field(None, description="label (classify) or target (regress) column; default: data.label_col, else detected")
    weight: float = Field(1.0, gt=0, description="weight of this head's loss in the sum over heads")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
            raise ValueError("a head name is letters, digits, _ and - (it becomes metric keys such as `spam_macro_f1`)")
        return name


_HEADS_EXAMPLE = (
    "declare them in the YAML config (heads are not CLI flags), e.g.\n"
    "    heads:\n"
    "      - {name: spam, type: classify, train: sms_spam}\n"
    "      - {name: sentiment, type: regress, train: vader_tweets}"
)


class RunConfig(_Section):
    """A whole run: task, data, model, training and where to write it."""

    task: TaskName = Field("classify", description="what to fine-tune for")
    out: str | None = Field(None, description="run directory to write; default runs/<task>-<dataset>-<time>")
    resume: bool = Field(False, description="continue from the last complete checkpoint in the run directory")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    heads: list[HeadConfig] = Field(
        default_factory=list, description="multitask: the heads on the shared encoder, each with its own data (YAML only)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.data.eval is not None and self.data.eval == self.data.train:
            raise ValueError("`data.eval` is the same file as `data.train`; give a separate eval file or omit it for a held-out split")
        problems = self._head_problems()
        if problems:
            raise ValueError("; ".join(problems))
        from tunesmith.tasks import task_for  # late: tasks build on this module

        self._apply_task_defaults(task_for(self).config_defaults)
        allowed = task_for(self).metrics
        if self.training.metric != "auto" and self.training.metric not in allowed:
            raise ValueError(
                f"`training.metric` {self.training.metric!r} is not a {self.task} metric; choose auto or one of {', '.join(allowed)}"
            )
        return self

    def _apply_task_defaults(self, defaults: dict[str, Any]) -> None:
        """The task's own defaults (sft: smollm2-135m, LoRA, hsk_zh_en) for every section key the config does not set."""
        for key, value in defaults.items():
            for section in SECTIONS:
                holder = getattr(self, section)
                if key in type(holder).model_fields and key not in holder.model_fields_set:
                    setattr(holder, key, value)

    def _head_problems(self) -> list[str]:
        if self.task != "multitask":
            if self.heads:
                return [f"`heads` is only read by task multitask, but task is {self.task!r}; remove `heads` or set `task: multitask`"]
            return []
        problems = []
        if len(self.heads) < 2:
            problems.append(f"task multitask needs at least 2 heads, got {len(self.heads)}; {_HEADS_EXAMPLE}")
        counts: dict[str, int] = {}
        for head in self.heads:
            counts[head.name] = counts.get(head.name, 0) + 1
        problems += [f"`heads` names must be unique: {name!r} is declared {n} times; rename one" for name, n in counts.items() if n > 1]
        for head in self.heads:
            if head.eval is not None and head.eval == (head.train or self.data.train):
                problems.append(f"head {head.name!r}: `eval` is the same file as its training data; give a separate eval file or omit it")
        if self.data.multi_label:
            problems.append("`data.multi_label` is not supported by multitask heads (classify heads are single-label); set it to false")
        return problems

    @property
    def metric(self) -> str:
        """The eval metric that picks the best checkpoint, with ``auto`` resolved for the task."""
        from tunesmith.tasks import task_for

        return task_for(self).default_metric if self.training.metric == "auto" else self.training.metric


SECTIONS: dict[str, type[_Section]] = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig}
YAML_ONLY: dict[str, type[_Section]] = {"heads": HeadConfig}
"""List-valued keys: set in YAML only, so they get no CLI flag."""


def flat_fields() -> dict[str, tuple[str | None, Any]]:
    """Map each flat key (``lr``) to its section (``training``) and pydantic field info.

    Top-level keys map to section ``None``; list-valued keys (:data:`YAML_ONLY`) have no flat key.
    Raises if two sections share a name, which would make the CLI flag ambiguous.
    """
    fields: dict[str, tuple[str | None, Any]] = {}
    for name, info in RunConfig.model_fields.items():
        if name not in SECTIONS and name not in YAML_ONLY:
            fields[name] = (None, info)
    for section, cls in SECTIONS.items():
        for name, info in cls.model_fields.items():
            if name in fields:
                raise RuntimeError(f"config key {name!r} appears in two sections; CLI flags would be ambiguous")
            fields[name] = (section, info)
    return fields


# names other tools use for the same settings, so a migrating user is told the tunesmith key
ALIASES = {
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "num_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "model_name_or_path": "model",
    "model_name": "model",
    "lr_scheduler_type": "scheduler",
    "label_smoothing_factor": "label_smoothing",
    "early_stopping_patience": "early_stopping",
    "output_dir": "out",
    "max_seq_length": "max_length",
    "finetuning_type": "method",
}


_UNION_MEMBERS = {"int", "float", "bool", "str"}


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            section = e["loc"][0] if len(e["loc"]) > 1 else None
            known = list({**SECTIONS, **YAML_ONLY}.get(section, RunConfig).model_fields)
            key = str(e["loc"][-1])
            close = [ALIASES[key]] if key in ALIASES else difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean `{close[0]}`?" if close else f"; known keys: {', '.join(known)}"
            lines.append(f"  `{loc}` is not a config key{hint}")
            continue
        msg = e["msg"].replace("Value error, ", "")
        # a value that may be one of several types (``int | "auto"``) fails once per member: report one line
        field = ".".join(str(p) for p in e["loc"] if not isinstance(p, str) or (p.isidentifier() and p not in _UNION_MEMBERS))
        if field and field != loc and lines and lines[-1].startswith(f"  `{field}`: "):
            lines[-1] = lines[-1].replace(", got ", f", or {msg[0].lower()}{msg[1:]}, got ", 1)
        elif field:
            lines.append(f"  `{field}`: {msg}, got {e['input']!r}")
        else:
            lines.append(f"  {msg}")
    n = len(lines)
    return f"{source} has {n} invalid setting{'s' if n > 1 else ''}:\n" + "\n".join(lines)


def build_config(base: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None, source: str = "config") -> RunConfig:
    """Validate a nested config dict, with flat overrides (``{"lr": 1e-4}``) applied on top.

    Raises:
        UserError: listing every invalid key with its value and what is allowed.
    """
    data: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in (base or {}).items()}
    fields = flat_fields()
    for key, value in (overrides or {}).items():
        section, _ = fields[key]
        if section is None:
            data[key] = value
        else:
            sect = data.setdefault(section, {})
            if not isinstance(sect, dict):
                raise UserError(f"{source}: `{section}` must be a mapping of keys, got {sect!r}")
            sect[key] = value
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise UserError(_format_errors(err, source)) from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Load a YAML config (or the defaults when ``path`` is None) and apply flat overrides."""
    base: dict[str, Any] = {}
    source = "config"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise UserError(f"config file not found: {p}; pass an existing YAML file (see examples/)")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise UserError(f"{p} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UserError(f"{p} must hold a mapping of config keys (task, data, model, training), got a {type(loaded).__name__}")
        base = loaded
    return build_config(base, overrides, source)


def dump_config(config: RunConfig) -> str:
    """The fully resolved config as YAML, reloadable with :func:`load_config`."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
