"""Token cross-entropy and a gradient that touches the prompt subtree only.

The backbone parameters are an explicit argument (never closed over, so
under ``jax.jit`` they are a sharded input rather than baked-in constants) and
are not differentiated: ``value_and_grad`` is taken with respect to the prompt
tree alone, so XLA never builds weight gradients for the frozen T5 and the
gradient tree cannot contain a backbone leaf (invariant e).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from talora_jax.model import PromptedT5

Array = jax.Array


def token_cross_entropy(logits: Array, labels: Array, weights: Array) -> tuple[Array, Array]:
    """Mean negative log-likelihood over target tokens with non-zero weight.

    Args:
      logits: ``[B, T, V]``.
      labels: ``[B, T]`` target ids.
      weights: ``[B, T]``, normally ``decoder_attention_mask`` (0 on padding).

    Returns:
      ``(loss, num_tokens)``; an all-padding batch gives loss 0, not NaN.
    """
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    weights = weights.astype(jnp.float32)
    num_tokens = jnp.sum(weights)
    return jnp.sum(nll * weights) / jnp.maximum(num_tokens, 1.0), num_tokens


def prompted_loss(prompt_params: Mapping[str, Any], backbone_params: Mapping[str, Any],
                  batch: Mapping[str, Array], model: PromptedT5) -> tuple[Array, dict[str, Array]]:
    """Loss of ``model`` on ``batch`` (needs ``labels`` and ``decoder_attention_mask``) and metrics."""
    for key in ("labels", "decoder_attention_mask"):
        if key not in batch:
            raise KeyError(f"the training batch has no {key!r}; the loss averages over target tokens "
                           "weighted by decoder_attention_mask.")
    logits = model.apply({"params": {"backbone": backbone_params, "prompt": prompt_params}}, batch)
    loss, num_tokens = token_cross_entropy(logits, batch["labels"], batch["decoder_attention_mask"])
    return loss, {"loss": loss, "num_tokens": num_tokens}


def loss_and_grad(prompt_params: Mapping[str, Any], backbone_params: Mapping[str, Any],
                  batch: Mapping[str, Array], model: PromptedT5
                  ) -> tuple[tuple[Array, dict[str, Array]], Any]:
    """``((loss, metrics), grads)`` with ``grads`` shaped like ``prompt_params`` only.

    ``model`` is hashable, so a trainer can jit this with ``static_argnames='model'``.
    """
    return jax.value_and_grad(prompted_loss, argnums=0, has_aux=True)(
        prompt_params, backbone_params, batch, model)
