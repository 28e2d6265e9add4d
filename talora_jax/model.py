"""PromptedT5: a prompt module in front of the frozen T5, with masks and the gated segment.

Parameters live under two names so that training can split them cleanly:
``params['backbone']`` (the frozen T5, loaded by ``talora_jax.t5.load_pretrained``)
and ``params['prompt']`` (the only trainable subtree). The encoder input is
``[prompt(task_ids) ; E(x)]`` with mask ``[1_P ; mask(x)]``; for TA-LoRA the
prompt is ``[T_k ; P0]`` and its first m positions are the gated segment,
so ``gated_len = m`` is passed down to the encoder and to cross-attention,
including in cached step-by-step decoding.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from talora_jax.prompts.base import PromptOutput
from talora_jax.prompts.registry import build_prompt_module, init_prompt_params
from talora_jax.prompts.spec import PromptSpec, resolve_prompt_spec
from talora_jax.t5.config import T5Config
from talora_jax.t5.model import T5, Cache

Array = jax.Array


class PromptedT5(nn.Module):
    """``apply({'params': {'backbone': ..., 'prompt': ...}}, batch) -> logits [B, T, V]`` (float32).

    Attributes:
      t5_config: the backbone's config.
      prompt_config: an ml_collections ConfigDict (see ``configs/prompt_defaults.py``);
        it is validated and frozen into a hashable ``PromptSpec`` on construction,
        so the module can be a static argument of ``jax.jit``.
      remat: rematerialise backbone layers in the backward pass.
    """

    t5_config: T5Config
    prompt_config: Any
    remat: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.prompt_config, PromptSpec):
            object.__setattr__(self, "prompt_config", resolve_prompt_spec(self.prompt_config, self.t5_config))
        super().__post_init__()

    @property
    def spec(self) -> PromptSpec:
        return self.prompt_config

    def setup(self) -> None:
        self.backbone = T5(self.t5_config, self.remat)
        self.prompt = build_prompt_module(self.prompt_config, self.t5_config)

    def prompt_output(self, task_ids: Array) -> PromptOutput:
        """The prompt embeddings, gated length and gates for these tasks."""
        # The token table is read only when the prompt is being initialised.
        return self.prompt(task_ids, self.backbone.shared.embedding)

    def encode(self, task_ids: Array, input_ids: Array, attention_mask: Array) -> tuple[Array, Array]:
        """Encoder states over ``[prompt ; E(x)]`` and the matching mask ``[1_P ; mask(x)]``."""
        prompt = self.prompt_output(task_ids)
        tokens = self.backbone.embed(input_ids)
        embeds = jnp.concatenate([prompt.embeds.astype(tokens.dtype), tokens], axis=1)
        ones = jnp.ones(prompt.embeds.shape[:2], attention_mask.dtype)
        mask = jnp.concatenate([ones, attention_mask], axis=1)
        return self.backbone.encode(embeds, mask, prompt.enc_gates, prompt.gated_len), mask

    def decode(self, task_ids: Array, decoder_input_ids: Array, encoder_outputs: Array, encoder_mask: Array,
               decoder_attention_mask: Optional[Array] = None) -> Array:
        """Teacher-forced decoder logits, with cross-attention gated like the encoder."""
        prompt = self.prompt_output(task_ids)
        return self.backbone.decode(decoder_input_ids, encoder_outputs, encoder_mask, decoder_attention_mask,
                                    prompt.cross_gates, prompt.gated_len)

    def init_cache(self, encoder_outputs: Array, max_decode_len: int) -> Cache:
        """Decoding cache (empty self-attention K/V, cross-attention K/V of ``encoder_outputs``)."""
        return self.backbone.init_cache(encoder_outputs, max_decode_len)

    def decode_step(self, task_ids: Array, token_ids: Array, cache: Cache, cache_index: Array,
                    encoder_mask: Array) -> tuple[Array, Cache]:
        """One cached decoding step with the same gates as ``decode``: logits ``[B, 1, V]``."""
        prompt = self.prompt_output(task_ids)
        return self.backbone.decode_step(token_ids, cache, cache_index, encoder_mask,
                                         prompt.cross_gates, prompt.gated_len)

    def __call__(self, batch: Mapping[str, Array]) -> Array:
        missing = [k for k in ("task_ids", "input_ids", "attention_mask", "decoder_input_ids") if k not in batch]
        if missing:
            raise KeyError(f"PromptedT5 batch is missing {missing}; it needs task_ids [B], input_ids [B,N], "
                           "attention_mask [B,N], decoder_input_ids [B,T] (decoder_attention_mask optional).")
        encoded, mask = self.encode(batch["task_ids"], batch["input_ids"], batch["attention_mask"])
        return self.decode(batch["task_ids"], batch["decoder_input_ids"], encoded, mask,
                           batch.get("decoder_attention_mask"))


def init_prompt(model: PromptedT5, rng: jax.Array, backbone_params: Mapping[str, Any]) -> dict:
    """Fresh ``params['prompt']`` for ``model``, initialised from its frozen backbone's embeddings."""
    return init_prompt_params(model.spec, model.t5_config, rng, backbone_params["shared"]["embedding"])
