"""The T5 SentencePiece tokenizer (through transformers), loaded beside the weights."""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Iterable

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


def train_sentencepiece(texts: Iterable[str], out_dir: str, vocab_size: int) -> str:
    """Trains a T5-style SentencePiece model (pad 0, eos 1, unk 2) into ``out_dir/spiece.model``.

    For offline work only (the demo's stand-in backbone, tests): real checkpoints
    ship their own ``spiece.model``. ``load_tokenizer(out_dir)`` then adds T5's 100
    sentinel tokens after the pieces, so a model needs ``vocab_size + 100`` rows.
    """
    import sentencepiece as spm

    os.makedirs(out_dir, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(texts))
        corpus = f.name
    try:
        spm.SentencePieceTrainer.train(
            input=corpus, model_prefix=os.path.join(out_dir, "spiece"), vocab_size=vocab_size,
            model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False,
            num_threads=1, minloglevel=2)  # one thread: the same corpus gives the same model
    finally:
        os.remove(corpus)
    os.remove(os.path.join(out_dir, "spiece.vocab"))
    return os.path.join(out_dir, "spiece.model")
