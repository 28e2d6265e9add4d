"""The T5 SentencePiece tokenizer (through transformers), loaded beside the weights."""

from __future__ import annotations

import hashlib
import os

from talora_jax.t5.hub import ModelNotFoundError, resolve_model_dir


def load_tokenizer(name_or_path: str):
    """Returns the transformers T5 tokenizer stored with a checkpoint (directory or hub name).

    The directory needs ``spiece.model`` or ``tokenizer.json``; hub names are
    fetched through ``huggingface_hub`` like the weights.
    """
    from transformers import AutoTokenizer, T5Tokenizer

    model_dir = resolve_model_dir(name_or_path)
    described = any(os.path.isfile(os.path.join(model_dir, f))
                    for f in ("tokenizer_config.json", "config.json"))
    try:
        # A bare spiece.model says nothing about its class; every T5/mT5 uses T5Tokenizer.
        return (AutoTokenizer if described else T5Tokenizer).from_pretrained(model_dir)
    except (OSError, ValueError) as e:
        raise ModelNotFoundError(
            f"No usable tokenizer in {model_dir!r} ({e}). A T5 checkpoint directory needs "
            "spiece.model or tokenizer.json; copy them from the original checkpoint.") from e


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of the tokenizer's full definition; caches of token ids are keyed by it."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        blob = backend.to_str()
    else:  # e.g. the byte-level ByT5 tokenizer, which is fully defined by its class and size
        blob = f"{type(tokenizer).__name__}:{len(tokenizer)}:{tokenizer.pad_token_id}:{tokenizer.eos_token_id}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
