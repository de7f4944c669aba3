"""Fine-tuning methods (full, LoRA, freeze) and the optimizer's parameter groups."""

from __future__ import annotations

import torch

from tunesmith.config import ModelConfig, TrainingConfig
from tunesmith.errors import UserError
from tunesmith.training.hardware import is_generative


def apply_dropout(config, dropout: float | None) -> None:
    """Override hidden and attention dropout on a model config before the model is built."""
    if dropout is None:
        return
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout", "classifier_dropout"):
        if hasattr(config, key):
            setattr(config, key, dropout)


def is_head_parameter(name: str, base_prefix: str) -> bool:
    """True for parameters of the task head, i.e. outside the pre-trained body (``bert.``...)."""
    return f".{base_prefix}." not in f".{name}"


def apply_method(model: torch.nn.Module, cfg: ModelConfig, task_type: str = "SEQ_CLS", auto_freeze_layers: int = 0) -> torch.nn.Module:
    """Make only the parameters the method trains require gradients; wrap with PEFT for LoRA.

    A task model that wraps a transformers model in ``.encoder`` (the NER CRF tagger) gets the
    adapters on that encoder; its own layers (the CRF) stay fully trainable. ``auto_freeze_layers``
    is the task's choice for ``model.freeze_layers: auto`` (see :func:`freeze_lower`).
    """
    if cfg.method == "freeze":
        for name, param in model.named_parameters():
            param.requires_grad = is_head_parameter(name, model.base_model_prefix)
        return model
    if cfg.method == "full":
        freeze_lower(_transformer(model), cfg, auto_freeze_layers)
        return model
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model

        inner = _transformer(model)
        # the new head is trained in full (PEFT's modules_to_save), so it must not also get adapters
        head = [name for name, _ in inner.named_children() if name != inner.base_model_prefix]
        lora = LoraConfig(
            task_type=task_type,
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules="all-linear",
            exclude_modules=head or None,
        )
        if _is_wrapper(model):
            model.encoder = get_peft_model(model.encoder, lora)
            return model
        return get_peft_model(model, lora)
    return model


AUTO_FREEZE_MIN_LAYERS = 6
"""``freeze_layers: auto`` leaves shallower models whole: one layer of two is a large part of the model."""


def freeze_lower(model: torch.nn.Module, cfg: ModelConfig, auto_layers: int = 0) -> dict[str, int]:
    """Fix the embedding block and the lowest ``cfg.freeze_layers`` layers of a fully fine-tuned model.

    No parameter below the lowest trainable layer needs a gradient, so backpropagation stops there:
    freezing the embeddings removes the largest matrix from the backward pass and the optimizer, and
    each frozen layer removes its share of the backward pass. ``auto`` freezes the embeddings of
    encoders, unless the output layer shares their weights (masked language models), and
    ``auto_layers`` layers (the task's choice) of models with at least :data:`AUTO_FREEZE_MIN_LAYERS`
    layers whose embeddings are frozen; smaller models keep every layer.

    Returns:
        ``{"embeddings": 0|1, "layers": N}``: what was frozen.
    """
    layers = transformer_layers(model)
    embeddings = cfg.freeze_embeddings
    if embeddings == "auto":  # measured on encoders; a decoder's output layer often shares the embeddings
        embeddings = not _ties_embeddings(model) and not is_generative(model.config)
    if cfg.freeze_layers != "auto":
        n_layers = cfg.freeze_layers
    else:
        n_layers = auto_layers if embeddings and len(layers or []) >= AUTO_FREEZE_MIN_LAYERS else 0
    if layers is None and n_layers:
        raise UserError(f"`model.freeze_layers` {n_layers}: cannot find the transformer layers of {type(model).__name__}; set it to 0")
    if layers is not None and n_layers >= len(layers):
        raise UserError(
            f"`model.freeze_layers` {n_layers} leaves nothing to fine-tune: {type(model).__name__} has {len(layers)} layers; "
            f"choose at most {len(layers) - 1}, or use --method freeze to train the head only"
        )
    if n_layers and not embeddings:
        raise UserError(
            "`model.freeze_layers` needs frozen embeddings (gradients would still flow through every layer); drop --freeze-embeddings false"
        )
    if embeddings:
        embedding_block(model).requires_grad_(False)
    for layer in (layers or [])[:n_layers]:
        layer.requires_grad_(False)
    return {"embeddings": int(bool(embeddings)), "layers": n_layers}


def describe_frozen(model: torch.nn.Module) -> str:
    """What :func:`freeze_lower` left fixed, for the run header: ``"embeddings and lowest 1 of 6 layers fixed"``, or ``""``."""
    inner = _transformer(model)
    parts = []
    if not any(p.requires_grad for p in embedding_block(inner).parameters()):
        parts.append("embeddings")
    layers = transformer_layers(inner) or []
    fixed = next((i for i, layer in enumerate(layers) if any(p.requires_grad for p in layer.parameters())), len(layers))
    if fixed:
        parts.append(f"lowest {fixed} of {len(layers)} layers")
    return f"{' and '.join(parts)} fixed" if parts else ""


def embedding_block(model: torch.nn.Module) -> torch.nn.Module:
    """The embedding block (word, position and type embeddings with their norm), or the input embeddings alone."""
    block = getattr(model.base_model, "embeddings", None)
    return block if isinstance(block, torch.nn.Module) else model.get_input_embeddings()


def transformer_layers(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The model's stack of transformer layers, lowest first: the list with ``num_hidden_layers`` entries."""
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for module in model.base_model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    return None


def _ties_embeddings(model: torch.nn.Module) -> bool:
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return output is not None and output.weight is model.get_input_embeddings().weight


def _transformer(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model itself, or the one a task wrapper (the NER CRF tagger) holds in ``.encoder``."""
    return model.encoder if _is_wrapper(model) else model


def _is_wrapper(model: torch.nn.Module) -> bool:
    from transformers import PreTrainedModel

    return (
        not isinstance(model, PreTrainedModel)
        and isinstance(getattr(model, "encoder", None), torch.nn.Module)
        and not hasattr(model, "peft_config")
    )


def unwrap_for_saving(model: torch.nn.Module, cfg: ModelConfig) -> torch.nn.Module:
    """The model to save: LoRA adapters merged into the weights unless the user keeps them apart."""
    if cfg.method == "lora" and cfg.lora_merge:
        if _is_wrapper(model):
            model.encoder = model.encoder.merge_and_unload()
            return model
        return model.merge_and_unload()
    return model


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def build_optimizer(
    model: torch.nn.Module, training: TrainingConfig, base_prefix: str, default_head_lr: float | None = None
) -> torch.optim.Optimizer:
    """AdamW with four groups: body/head x decay/no-decay.

    Biases and normalisation weights (1-D tensors) get no weight decay; the freshly initialised head
    can take its own, usually larger, learning rate (``training.head_lr``).
    """
    head_lr = training.head_lr or default_head_lr or training.lr
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = (is_head_parameter(name, base_prefix), param.ndim >= 2)
        groups.setdefault(key, []).append(param)
    param_groups = [
        {"params": params, "lr": head_lr if is_head else training.lr, "weight_decay": training.weight_decay if decay else 0.0}
        for (is_head, decay), params in sorted(groups.items())
    ]
    fused = all(p.is_floating_point() for g in param_groups for p in g["params"])
    return torch.optim.AdamW(param_groups, lr=training.lr, fused=fused)
