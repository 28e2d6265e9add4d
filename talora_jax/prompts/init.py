"""Init strategies for prompt parameters (linen initialisers: ``fn(rng, shape, embedding)``).

Prompts live in the backbone's embedding space, so the default init copies
embeddings of sampled vocabulary tokens (Lester et al.'s finding: this beats
random init for frozen T5). The alternatives are uniform noise, the
embeddings of class label words (token ids chosen by the caller; this package
never tokenizes and never imports ``talora_jax.data``), and a ``.npy`` file
(e.g. a prompt exported from another run), whose shape is checked.

All prompt parameters are float32, whatever the backbone's storage dtype.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from talora_jax.prompts.spec import InitSpec, PromptConfigError

Array = jax.Array
Shape = Sequence[int]
Initializer = Callable[..., Array]


def _table(embedding: Optional[Any], strategy: str, leaf: str) -> Array:
    if embedding is None:
        raise PromptConfigError(
            f"init strategy {strategy!r} for {leaf} reads the backbone's token embeddings, but none were "
            "given. Initialise with talora_jax.prompts.init_prompt_params(..., embedding=backbone_params"
            "['shared']['embedding']) or choose a strategy that does not need them ('uniform').")
    return jnp.asarray(embedding, jnp.float32)


def _check_width(table: Array, shape: Shape, leaf: str) -> None:
    if table.ndim != 2 or table.shape[1] != shape[-1]:
        raise PromptConfigError(
            f"{leaf} has width {shape[-1]} but the embedding table has shape {tuple(table.shape)}; the "
            "prompt and the backbone must share d_model.")


def sample_vocab_embeddings(rng: Array, embedding: Array, shape: Shape, vocab_range: tuple[int, int],
                            leaf: str = "prompt") -> Array:
    """Rows of ``embedding`` for token ids drawn from ``[lo, min(hi, V))``, reshaped to ``shape``.

    Ids are drawn without replacement when the range is large enough, so a
    prompt does not start with repeated positions.
    """
    table = _table(embedding, "vocab", leaf)
    _check_width(table, shape, leaf)
    lo, hi = vocab_range[0], min(vocab_range[1], table.shape[0])
    if lo >= hi:
        raise PromptConfigError(
            f"prompt.init.vocab_range=({vocab_range[0]}, {vocab_range[1]}) has no ids below the backbone's "
            f"vocab_size={table.shape[0]}; choose a range inside [0, {table.shape[0]}).")
    count = math.prod(shape[:-1])
    ids = jax.random.choice(rng, hi - lo, (count,), replace=count > hi - lo) + lo
    return jnp.take(table, ids, axis=0).reshape(tuple(shape))


def uniform_values(rng: Array, shape: Shape, scale: float) -> Array:
    """U(-scale, scale) noise, the random-init baseline of prompt tuning."""
    return jax.random.uniform(rng, tuple(shape), jnp.float32, -scale, scale)


def label_word_embeddings(rng: Array, embedding: Array, shape: Shape,
                          label_token_ids: Sequence[Sequence[int]], vocab_range: tuple[int, int],
                          leaf: str = "shared_prompt") -> Array:
    """One position per class label (mean of its token embeddings); the rest sampled from the vocabulary."""
    table = _table(embedding, "label_words", leaf)
    _check_width(table, shape, leaf)
    length = shape[0]
    if len(shape) != 2 or len(label_token_ids) > length:
        raise PromptConfigError(
            f"label_words init needs a [length, d] prompt with length >= {len(label_token_ids)} labels; "
            f"{leaf} has shape {tuple(shape)}.")
    vocab = table.shape[0]
    rows = []
    for ids in label_token_ids:
        bad = [i for i in ids if i >= vocab]
        if bad:
            raise PromptConfigError(
                f"prompt.init.label_token_ids has ids {bad} outside the backbone vocabulary ({vocab}); "
                "tokenize the labels with this backbone's tokenizer.")
        rows.append(jnp.mean(jnp.take(table, jnp.asarray(ids), axis=0), axis=0))
    labels = jnp.stack(rows)
    rest = length - labels.shape[0]
    if rest == 0:
        return labels
    return jnp.concatenate([labels, sample_vocab_embeddings(rng, table, (rest, shape[1]), vocab_range, leaf)])


def load_npy(path: str, shape: Shape, leaf: str = "shared_prompt") -> Array:
    """Loads an exported prompt; refuses a missing file, a pickled object, a wrong shape or NaN/Inf."""
    if not os.path.isfile(path):
        raise PromptConfigError(f"prompt.init.npy_path={path!r} does not exist; point it at a .npy file "
                                f"holding {leaf} of shape {tuple(shape)}.")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise PromptConfigError(f"{path} is not a plain numeric .npy array ({e}). Save it with np.save.") from None
    if tuple(array.shape) != tuple(shape):
        raise PromptConfigError(
            f"{path} holds an array of shape {tuple(array.shape)}, but {leaf} needs shape {tuple(shape)} "
            "([shared_len, d_model] for this config and backbone). Re-export the prompt or change "
            "prompt.shared_len to match.")
    if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
        raise PromptConfigError(f"{path} must hold finite numbers (dtype {array.dtype}).")
    return jnp.asarray(array, jnp.float32)


def embedding_initializer(strategy: str, init: InitSpec, leaf: str) -> Initializer:
    """A linen initialiser ``fn(rng, shape, embedding)`` for an embedding-space prompt tensor."""

    def init_fn(rng: Array, shape: Shape, embedding: Optional[Any] = None) -> Array:
        if strategy == "vocab":
            return sample_vocab_embeddings(rng, embedding, shape, init.vocab_range, leaf)
        if strategy == "uniform":
            return uniform_values(rng, shape, init.uniform_scale)
        if strategy == "label_words":
            return label_word_embeddings(rng, embedding, shape, init.label_token_ids, init.vocab_range, leaf)
        if strategy == "npy":
            return load_npy(init.npy_path, shape, leaf)
        raise PromptConfigError(f"Unknown init strategy {strategy!r} for {leaf}.")

    return init_fn


def normal_initializer(std: float) -> Initializer:
    """N(0, std); used for TA-LoRA's coefficients A_k, which must start non-zero (invariant d)."""

    def init_fn(rng: Array, shape: Shape, embedding: Optional[Any] = None) -> Array:
        del embedding
        return std * jax.random.normal(rng, tuple(shape), jnp.float32)

    return init_fn


def factor_initializer(rank: int, std: float) -> Initializer:
    """MPT factors start at ``r^-1/2`` (+ noise), so ``u_k v_kᵀ ≈ 1`` and every task starts at P*.

    The noise breaks the symmetry between the r rank-one components.
    """

    def init_fn(rng: Array, shape: Shape, embedding: Optional[Any] = None) -> Array:
        del embedding
        return rank ** -0.5 + std * jax.random.normal(rng, tuple(shape), jnp.float32)

    return init_fn


def zeros_initializer(rng: Array, shape: Shape, embedding: Optional[Any] = None) -> Array:
    """Exactly zero: gates start closed, so the immature task prompt cannot disturb P0 (DESIGN §2)."""
    del rng, embedding
    return jnp.zeros(tuple(shape), jnp.float32)
