"""Model registry and loading."""

from tunesmith.models.registry import MODELS, ModelEntry, list_models, load_failure, register_model, resolve_model

__all__ = ["MODELS", "ModelEntry", "list_models", "load_failure", "register_model", "resolve_model"]
