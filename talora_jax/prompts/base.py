"""The protocol every prompt method implements, and the trivial 'none' method.

A prompt module is a linen module that maps ``task_ids [B]`` to what the
frozen T5 needs: embeddings to prepend to the encoder input, the static length
of the leading segment whose keys are gated (0 unless the method gates), and
per-layer gates for encoder self-attention and decoder cross-attention. The
model (``talora_jax.model.PromptedT5``) owns the concatenation and the masks,
so a new method only has to describe its parameters.

``embedding`` (the backbone's token table ``[V, d]``) is passed on every call
but read only by initialisers (e.g. sampled-vocabulary init); in ``apply`` it
is unused and XLA drops it.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, NamedTuple, Optional, Protocol, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from talora_jax.prompts.spec import PromptSpec
from talora_jax.t5.config import T5Config

Array = jax.Array
# One entry per layer: that layer's [H] gate, or None for the plain joint softmax.
LayerGates = tuple[Optional[Array], ...]


class PromptOutput(NamedTuple):
    """What a prompt contributes to one forward pass.

    Attributes:
      embeds: ``[B, P, d_model]`` float32 prompt embeddings; the first
        ``gated_len`` positions form the gated segment.
      gated_len: static (Python int) number of leading gated key positions.
      enc_gates: per encoder layer gate ``[H]`` or None; None overall when no layer is gated.
      cross_gates: the same for decoder cross-attention.
    """

    embeds: Array
    gated_len: int
    enc_gates: Optional[LayerGates]
    cross_gates: Optional[LayerGates]


class PromptModule(Protocol):
    """The protocol shared by ``pt``, ``mpt``, ``talora`` and ``none``.

    ``per_task_leaves`` names the parameters with a leading task axis ``K``;
    everything else is shared by all tasks. Transfer init and parameter
    accounting rely on that split.
    """

    spec: PromptSpec
    t5_config: T5Config
    per_task_leaves: ClassVar[tuple[str, ...]]

    def __call__(self, task_ids: Array, embedding: Optional[Array] = None) -> PromptOutput:
        ...


def layer_gates(gate: Optional[Array], layers: Sequence[int], num_layers: int) -> Optional[LayerGates]:
    """Expands a ``[L, H]`` gate table to one entry per layer, None for ungated layers."""
    if gate is None or not layers:
        return None
    selected = set(layers)
    return tuple(gate[i] if i in selected else None for i in range(num_layers))


def _shape_only(rng: Array, shape: Sequence[int], embedding: Optional[Any] = None) -> Array:
    del rng, embedding
    return jnp.zeros(tuple(shape), jnp.float32)


def prompt_param(module: nn.Module, name: str, init_fn: Callable[..., Array], shape: Sequence[int],
                 embedding: Optional[Any]) -> Array:
    """Declares a prompt parameter whose real initialiser runs only inside ``init``.

    Linen re-evaluates every initialiser abstractly on each ``apply`` to check
    shapes; a ``.npy`` read or a required embedding table has no place there
    (the file may be gone by evaluation time), so ``apply`` checks shapes
    against a zeros stand-in instead.
    """
    fn = init_fn if module.is_initializing() else _shape_only
    return module.param(name, fn, tuple(shape), embedding)


def broadcast_shared(prompt: Array, batch: int) -> Array:
    """``[P, d]`` -> ``[B, P, d]`` without copying per example."""
    return jnp.broadcast_to(prompt[None], (batch,) + prompt.shape)


class NoPrompt(nn.Module):
    """The frozen T5 alone (method 'none'): zero prompt positions, no parameters."""

    spec: PromptSpec
    t5_config: T5Config
    per_task_leaves: ClassVar[tuple[str, ...]] = ()

    def __call__(self, task_ids: Array, embedding: Optional[Any] = None) -> PromptOutput:
        empty = jnp.zeros((task_ids.shape[0], 0, self.t5_config.d_model), jnp.float32)
        return PromptOutput(empty, 0, None, None)
