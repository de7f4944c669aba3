"""Decoder (causal) language models: telling them from encoders, and the padding token they often lack."""

from __future__ import annotations

from tunesmith.errors import UserError


def ensure_pad_token(tokenizer, model=None) -> bool:
    """Give a tokenizer without a padding token one (EOS, else UNK), and the model's config its id.

    Llama-family tokenizers ship without a pad token; batching then fails, and a sequence
    classification head cannot find each text's last token. Padding positions are masked out of
    attention and loss, so reusing EOS is safe. Returns whether a pad token was added.

    Raises:
        UserError: the tokenizer has neither a pad, an EOS nor an UNK token.
    """
    added = False
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise UserError("the tokenizer has no padding, end-of-sequence or unknown token to pad batches with; add a pad token to it")
        tokenizer.pad_token = fallback
        added = True
    if model is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return added


def check_causal(model_config, name: str, task: str) -> None:
    """Refuse encoders (BERT-like) and encoder-decoders for a task that trains a causal LM.

    Raises:
        UserError: naming the model's architecture and what to use instead.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    arch = ", ".join(getattr(model_config, "architectures", None) or [model_config.model_type])
    if getattr(model_config, "is_encoder_decoder", False):
        raise UserError(
            f"model {name!r} is an encoder-decoder ({arch}); --task {task} trains a decoder-only causal LM such as smollm2-135m "
            "(for T5/Marian models use --task seq2seq)"
        )
    kind = model_config.model_type
    if kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES or kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise UserError(
            f"model {name!r} ({arch}) is not a decoder language model; --task {task} needs a causal LM such as smollm2-135m "
            "or a local Llama/Qwen/GPT-2-style Hugging Face directory"
        )
