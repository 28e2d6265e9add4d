"""Building blocks of the T5 backbone, with logical axis names on every parameter.

Logical axis names (``vocab``, ``embed``, ``heads``, ``kv``, ``mlp``,
``relpos_buckets``) are mapped to mesh axes in one place, ``talora_jax.parallel``;
nothing here knows about meshes.

Attention keeps a seam for the method: ``gate``/``gated_len`` give a leading
segment of keys its own softmax, scaled by ``tanh(gate)`` per head. With
``gated_len == 0`` that code path is skipped entirely, so the plain T5 is
computed exactly as before.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from talora_jax.t5.config import T5Config

Array = jax.Array
# HF's T5 initialises from N(0, factor * fan-in^-0.5); only used for fresh init (tests, demo).
_normal = nn.initializers.normal


def _param(module: nn.Module, name: str, shape, axes, stddev: float, dtype) -> Array:
    init = nn.with_logical_partitioning(_normal(stddev), axes)
    return module.param(name, init, shape, dtype)


class RMSNorm(nn.Module):
    """T5 layer norm: scale only, no mean subtraction, statistics in float32."""

    eps: float
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                           (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (x32 * scale.astype(jnp.float32)).astype(self.dtype)


def relative_position_bucket(relative_position: Array, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> Array:
    """Maps ``key_pos - query_pos`` to T5's log-spaced buckets (same rule as Mesh TF / HF)."""
    buckets = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).astype(relative_position.dtype) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = -jnp.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    safe = jnp.maximum(distance, 1).astype(jnp.float32)
    large = max_exact + (jnp.log(safe / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).astype(relative_position.dtype)
    large = jnp.minimum(large, num_buckets - 1)
    return buckets + jnp.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
    """Learned per-head bias over relative-position buckets; built once per stack."""

    config: T5Config
    bidirectional: bool

    @nn.compact
    def __call__(self, query_positions: Array, key_positions: Array) -> Array:
        """Returns ``[1, heads, q, k]`` float32 bias for the given absolute positions."""
        cfg = self.config
        table = _param(self, "embedding", (cfg.relative_attention_num_buckets, cfg.num_heads),
                       ("relpos_buckets", "heads"), 1.0, cfg.storage_dtype)
        rel = key_positions[None, :] - query_positions[:, None]
        buckets = relative_position_bucket(rel, self.bidirectional, cfg.relative_attention_num_buckets,
                                           cfg.relative_attention_max_distance)
        values = jnp.take(table, buckets, axis=0).astype(jnp.float32)  # [q, k, heads]
        return jnp.transpose(values, (2, 0, 1))[None]


def _masked_softmax(scores: Array, mask: Array) -> Array:
    scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    return jax.nn.softmax(scores, axis=-1)


def attention_weights(scores: Array, mask: Array, gate: Optional[Array] = None,
                      gated_len: int = 0) -> Array:
    """Softmax attention weights, optionally with a zero-initialised gated key segment.

    Args:
      scores: ``[B, H, Q, K]`` float32 logits (already including any bias).
      mask: boolean, broadcastable to ``scores``; False marks keys a query may not see.
      gate: ``[H]`` gate values for this layer, or None.
      gated_len: the first ``gated_len`` keys form the gated segment (static).

    With a gated segment 𝒯 and the other valid keys ℛ (DESIGN.md §2):
    ``a = softmax_ℛ(s)`` on ℛ and ``a = tanh(g_h) · softmax_𝒯(s)`` on 𝒯.
    """
    if gated_len == 0 or gate is None:
        return _masked_softmax(scores, mask)
    # The two segments are contiguous (𝒯 = the first gated_len keys), so each softmax runs on its
    # own slice: one softmax's worth of work and memory instead of two full-width masked ones.
    mask = jnp.broadcast_to(mask, scores.shape)
    gated = _masked_softmax(scores[..., :gated_len], mask[..., :gated_len])
    rest = _masked_softmax(scores[..., gated_len:], mask[..., gated_len:])
    scale = jnp.tanh(gate.astype(jnp.float32))[None, :, None, None]
    return jnp.concatenate([scale * gated, rest], axis=-1)


class Attention(nn.Module):
    """Unscaled multi-head attention (T5 folds the 1/sqrt(d) into its init)."""

    config: T5Config

    def setup(self):
        cfg = self.config
        d, h, k = cfg.d_model, cfg.num_heads, cfg.d_kv
        dt = cfg.storage_dtype
        self.query = _param(self, "query", (d, h, k), ("embed", "heads", "kv"), (d * k) ** -0.5, dt)
        self.key = _param(self, "key", (d, h, k), ("embed", "heads", "kv"), d ** -0.5, dt)
        self.value = _param(self, "value", (d, h, k), ("embed", "heads", "kv"), d ** -0.5, dt)
        self.out = _param(self, "out", (h, k, d), ("heads", "kv", "embed"), (h * k) ** -0.5, dt)

    def _project(self, x: Array, kernel: Array) -> Array:
        dt = self.config.compute_dtype
        return jnp.einsum("bsd,dhk->bshk", x.astype(dt), kernel.astype(dt))

    def project_kv(self, x_kv: Array) -> tuple[Array, Array]:
        """Keys and values ``[B, K, H, d_kv]`` (cached once per sequence for cross-attention)."""
        return self._project(x_kv, self.key), self._project(x_kv, self.value)

    def __call__(self, x_q: Array, x_kv: Optional[Array], mask: Array, bias: Optional[Array] = None,
                 gate: Optional[Array] = None, gated_len: int = 0,
                 kv: Optional[tuple[Array, Array]] = None) -> Array:
        """Attends ``x_q`` over ``x_kv`` (or over precomputed ``kv``); returns ``[B, Q, d_model]``."""
        dt = self.config.compute_dtype
        q = self._project(x_q, self.query)
        k, v = kv if kv is not None else self.project_kv(x_kv)
        # float32 scores: the softmax (and the gate split) is where bf16 rounding hurts most.
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        if bias is not None:
            scores = scores + bias
        weights = attention_weights(scores, mask, gate, gated_len).astype(dt)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        # float32 output: it is added to the float32 residual stream.
        return jnp.einsum("bqhd,hde->bqe", ctx, self.out.astype(dt), preferred_element_type=jnp.float32)


class FeedForward(nn.Module):
    """ReLU MLP (T5 v1.0) or gated-GELU MLP (v1.1, FLAN-T5, mT5)."""

    config: T5Config

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        dt, pdt = cfg.compute_dtype, cfg.storage_dtype
        d, f = cfg.d_model, cfg.d_ff
        act = {"relu": jax.nn.relu, "gelu": lambda y: jax.nn.gelu(y, approximate=False),
               "gelu_new": lambda y: jax.nn.gelu(y, approximate=True), "silu": jax.nn.silu}[cfg.activation]
        x = x.astype(dt)
        if cfg.is_gated_ffn:
            wi_0 = _param(self, "wi_0", (d, f), ("embed", "mlp"), d ** -0.5, pdt)
            wi_1 = _param(self, "wi_1", (d, f), ("embed", "mlp"), d ** -0.5, pdt)
            hidden = act(x @ wi_0.astype(dt)) * (x @ wi_1.astype(dt))
        else:
            wi = _param(self, "wi", (d, f), ("embed", "mlp"), d ** -0.5, pdt)
            hidden = act(x @ wi.astype(dt))
        wo = _param(self, "wo", (f, d), ("mlp", "embed"), f ** -0.5, pdt)
        # float32 output: it is added to the float32 residual stream.
        return jnp.dot(hidden, wo.astype(dt), preferred_element_type=jnp.float32)
