"""A compact Flax linen T5 encoder-decoder with seams for prompt injection.

The module exposes the pieces a prompt method needs instead of one monolithic
``__call__``: ``embed`` (token ids to embeddings), ``encode`` (embeddings to
encoder states, so prompts can be concatenated in front), ``decode`` (the full
teacher-forced decoder) and ``init_cache``/``decode_step`` (one token per call
with a KV cache, for generation). ``__call__`` composes them into the
``T5ForConditionalGeneration`` contract.

Attention gates (``gates`` ``[layers, heads]`` and the static ``gated_len``)
are passed in by the caller, never owned here: the backbone stays frozen and
prompt-agnostic, and with ``gated_len == 0`` it is exactly the plain T5.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from talora_jax.t5.config import T5Config
from talora_jax.t5.layers import Attention, FeedForward, RelativePositionBias, RMSNorm

Array = jax.Array
Cache = dict[str, Any]


def _norm(cfg: T5Config, name: str) -> RMSNorm:
    return RMSNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, cfg.storage_dtype, name=name)


def _layer_gate(gates: Optional[Array], layer: int) -> Optional[Array]:
    return None if gates is None else gates[layer]


class EncoderLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x: Array, mask: Array, bias: Array, gate: Optional[Array],
                 gated_len: int) -> Array:
        cfg = self.config
        h = _norm(cfg, "pre_attention_norm")(x)
        x = x + Attention(cfg, name="attention")(h, h, mask, bias, gate, gated_len)
        h = _norm(cfg, "pre_mlp_norm")(x)
        return x + FeedForward(cfg, name="mlp")(h)


class DecoderLayer(nn.Module):
    config: T5Config

    def setup(self):
        cfg = self.config
        self.pre_self_attention_norm = _norm(cfg, "pre_self_attention_norm")
        self.self_attention = Attention(cfg)
        self.pre_cross_attention_norm = _norm(cfg, "pre_cross_attention_norm")
        self.cross_attention = Attention(cfg)
        self.pre_mlp_norm = _norm(cfg, "pre_mlp_norm")
        self.mlp = FeedForward(cfg)

    def cross_kv(self, encoder_outputs: Array) -> tuple[Array, Array]:
        return self.cross_attention.project_kv(encoder_outputs)

    def __call__(self, x: Array, self_mask: Array, self_bias: Array, encoder_outputs: Optional[Array],
                 cross_mask: Array, gate: Optional[Array], gated_len: int,
                 cache: Optional[Cache] = None, cache_index: Optional[Array] = None
                 ) -> tuple[Array, Optional[Cache]]:
        h = self.pre_self_attention_norm(x)
        if cache is None:
            x = x + self.self_attention(h, h, self_mask, self_bias)
            cross_kv = None
        else:
            k_new, v_new = self.self_attention.project_kv(h)
            start = (0, cache_index, 0, 0)
            k = jax.lax.dynamic_update_slice(cache["self_k"], k_new.astype(cache["self_k"].dtype), start)
            v = jax.lax.dynamic_update_slice(cache["self_v"], v_new.astype(cache["self_v"].dtype), start)
            x = x + self.self_attention(h, None, self_mask, self_bias, kv=(k, v))
            cache = {**cache, "self_k": k, "self_v": v}
            cross_kv = (cache["cross_k"], cache["cross_v"])
        h = self.pre_cross_attention_norm(x)
        x = x + self.cross_attention(h, encoder_outputs, cross_mask, None, gate, gated_len, kv=cross_kv)
        h = self.pre_mlp_norm(x)
        return x + self.mlp(h), cache


class Encoder(nn.Module):
    config: T5Config
    remat: bool = False

    def setup(self):
        cfg = self.config
        layer_cls = nn.remat(EncoderLayer, static_argnums=(5,)) if self.remat else EncoderLayer
        self.relpos_bias = RelativePositionBias(cfg, bidirectional=True)
        self.layers = [layer_cls(cfg) for _ in range(cfg.num_layers)]
        self.final_norm = _norm(cfg, "final_norm")

    def __call__(self, inputs_embeds: Array, attention_mask: Array, gates: Optional[Array] = None,
                 gated_len: int = 0) -> Array:
        positions = jnp.arange(inputs_embeds.shape[1])
        bias = self.relpos_bias(positions, positions)  # computed once, shared by every layer
        mask = attention_mask[:, None, None, :].astype(bool)
        x = inputs_embeds.astype(jnp.float32)  # residual stream in float32; matmuls in compute dtype
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, bias, _layer_gate(gates, i), gated_len)
        return self.final_norm(x)


class Decoder(nn.Module):
    config: T5Config
    remat: bool = False

    def setup(self):
        cfg = self.config
        layer_cls = nn.remat(DecoderLayer, static_argnums=(7,)) if self.remat else DecoderLayer
        self.relpos_bias = RelativePositionBias(cfg, bidirectional=False)
        self.layers = [layer_cls(cfg) for _ in range(cfg.num_decoder_layers)]
        self.final_norm = _norm(cfg, "final_norm")

    def init_cache(self, encoder_outputs: Array, max_decode_len: int) -> Cache:
        cfg = self.config
        batch = encoder_outputs.shape[0]
        zeros = jnp.zeros((batch, max_decode_len, cfg.num_heads, cfg.d_kv), cfg.compute_dtype)
        layers = []
        for layer in self.layers:
            cross_k, cross_v = layer.cross_kv(encoder_outputs)
            layers.append({"self_k": zeros, "self_v": zeros, "cross_k": cross_k, "cross_v": cross_v})
        return {"layers": tuple(layers)}

    def __call__(self, x: Array, decoder_attention_mask: Optional[Array],
                 encoder_outputs: Optional[Array], encoder_mask: Array, gates: Optional[Array] = None,
                 gated_len: int = 0, cache: Optional[Cache] = None,
                 cache_index: Optional[Array] = None) -> tuple[Array, Optional[Cache]]:
        if cache is None:
            positions = jnp.arange(x.shape[1])
            bias = self.relpos_bias(positions, positions)
            self_mask = (positions[None, :] <= positions[:, None])[None, None]
            if decoder_attention_mask is not None:
                self_mask = self_mask & decoder_attention_mask[:, None, None, :].astype(bool)
        else:
            key_positions = jnp.arange(cache["layers"][0]["self_k"].shape[1])
            bias = self.relpos_bias(jnp.reshape(cache_index, (1,)), key_positions)
            self_mask = (key_positions <= cache_index)[None, None, None, :]
        cross_mask = encoder_mask[:, None, None, :].astype(bool)
        new_layers = []
        x = x.astype(jnp.float32)  # residual stream in float32; matmuls in compute dtype
        for i, layer in enumerate(self.layers):
            layer_cache = None if cache is None else cache["layers"][i]
            x, layer_cache = layer(x, self_mask, bias, encoder_outputs, cross_mask,
                                   _layer_gate(gates, i), gated_len, layer_cache, cache_index)
            new_layers.append(layer_cache)
        new_cache = None if cache is None else {"layers": tuple(new_layers)}
        return self.final_norm(x), new_cache


def _float32_logits(hidden: Array, kernel: Array, dtype: Any) -> Array:
    # Accumulate and emit logits in float32 even under bf16 compute: near-ties between
    # vocabulary entries are decided here, and the loss needs float32 anyway.
    return jnp.dot(hidden.astype(dtype), kernel.astype(dtype), preferred_element_type=jnp.float32)


class LMHead(nn.Module):
    """The untied output projection of T5 v1.1 / FLAN-T5 / mT5."""

    config: T5Config

    @nn.compact
    def __call__(self, hidden: Array) -> Array:
        cfg = self.config
        kernel = self.param(
            "kernel", nn.with_logical_partitioning(nn.initializers.normal(cfg.d_model ** -0.5),
                                                   ("embed", "vocab")),
            (cfg.d_model, cfg.vocab_size), cfg.storage_dtype)
        return _float32_logits(hidden, kernel, cfg.compute_dtype)


class T5(nn.Module):
    """T5 / T5 v1.1 / FLAN-T5 / mT5 with the ``T5ForConditionalGeneration`` contract.

    Attributes:
      config: shapes, variant and dtypes.
      remat: rematerialise each layer in the backward pass. Prompt tuning needs
        activation gradients through the frozen stack, so this trades compute
        for memory on large backbones.
    """

    config: T5Config
    remat: bool = False

    def setup(self):
        cfg = self.config
        self.shared = nn.Embed(
            cfg.vocab_size, cfg.d_model, dtype=cfg.storage_dtype, param_dtype=cfg.storage_dtype,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")))
        self.encoder = Encoder(cfg, self.remat)
        self.decoder = Decoder(cfg, self.remat)
        if not cfg.tie_word_embeddings:
            self.lm_head = LMHead(cfg)

    def embed(self, input_ids: Array) -> Array:
        """Token embeddings ``[B, N, d_model]`` in the compute dtype (T5 does not scale them)."""
        return self.shared(input_ids)

    def encode(self, inputs_embeds: Array, attention_mask: Array, gates: Optional[Array] = None,
               gated_len: int = 0) -> Array:
        """Encoder states for already-embedded inputs (prompts may be prepended by the caller)."""
        return self.encoder(inputs_embeds, attention_mask, gates, gated_len)

    def _logits(self, hidden: Array) -> Array:
        cfg = self.config
        if cfg.scale_decoder_outputs:
            hidden = hidden * (cfg.d_model ** -0.5)
        if not cfg.tie_word_embeddings:
            return self.lm_head(hidden)
        return _float32_logits(hidden, self.shared.embedding.T, cfg.compute_dtype)

    def decode(self, decoder_input_ids: Array, encoder_outputs: Array, encoder_mask: Array,
               decoder_attention_mask: Optional[Array] = None, gates: Optional[Array] = None,
               gated_len: int = 0) -> Array:
        """Teacher-forced decoder pass; returns float32 logits ``[B, T, vocab]``."""
        hidden, _ = self.decoder(self.embed(decoder_input_ids), decoder_attention_mask,
                                 encoder_outputs, encoder_mask, gates, gated_len)
        return self._logits(hidden)

    def init_cache(self, encoder_outputs: Array, max_decode_len: int) -> Cache:
        """A decoding cache: empty self-attention K/V and the cross-attention K/V, computed once."""
        return self.decoder.init_cache(encoder_outputs, max_decode_len)

    def decode_step(self, token_ids: Array, cache: Cache, cache_index: Array, encoder_mask: Array,
                    gates: Optional[Array] = None, gated_len: int = 0) -> tuple[Array, Cache]:
        """Decodes one position per call: ``token_ids [B, 1]`` at ``cache_index`` -> logits ``[B, 1, V]``."""
        hidden, cache = self.decoder(self.embed(token_ids), None, None, encoder_mask, gates, gated_len,
                                     cache=cache, cache_index=cache_index)
        return self._logits(hidden), cache

    def __call__(self, input_ids: Array, attention_mask: Array, decoder_input_ids: Array,
                 decoder_attention_mask: Optional[Array] = None) -> Array:
        encoded = self.encode(self.embed(input_ids), attention_mask)
        return self.decode(decoder_input_ids, encoded, attention_mask, decoder_attention_mask)


def abstract_params(config: T5Config, remat: bool = False) -> Any:
    """Shapes (and logical-axis boxes) of every backbone parameter, without allocating them."""
    ids = jnp.zeros((1, 1), jnp.int32)
    variables = jax.eval_shape(lambda: T5(config, remat).init(jax.random.PRNGKey(0), ids, ids, ids))
    return variables["params"]


def logical_axes(config: T5Config) -> Any:
    """A tree of ``PartitionSpec`` with logical axis names, one per backbone parameter."""
    return nn.get_partition_spec(abstract_params(config))


def init_params(config: T5Config, rng: Array) -> Any:
    """Freshly initialised (unboxed) parameters; for tests and the offline demo backbone."""
    ids = jnp.zeros((1, 1), jnp.int32)
    return nn.unbox(T5(config).init(rng, ids, ids, ids)["params"])
