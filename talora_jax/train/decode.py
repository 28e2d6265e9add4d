"""Inference under jit with static shapes: cached greedy generation and rank classification.

Generation encodes once, builds the KV cache (cross-attention K/V computed a
single time) and then runs a ``fori_loop`` of one-token decoder steps, so the
whole decode is one compiled program with no per-token host round trips.
Rank classification scores every label word with one teacher-forced decoder
pass over ``batch x labels`` rows and takes the most likely; it is the
standard way to evaluate label-word tasks because it can never produce an
out-of-vocabulary answer.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from talora_jax.model import PromptedT5

Array = jax.Array


def greedy_generate_fn(model: PromptedT5, max_decode_len: int, eos_id: int = 1, pad_id: int = 0,
                       start_id: int = 0) -> Callable[[Any, Any, Mapping[str, Array]], Array]:
    """Returns ``generate(prompt, backbone, batch) -> tokens [B, max_decode_len]`` (pad after eos)."""

    def generate(prompt: Any, backbone: Any, batch: Mapping[str, Array]) -> Array:
        variables = {"params": {"backbone": backbone, "prompt": prompt}}
        task_ids = batch["task_ids"]
        encoded, enc_mask = model.apply(variables, task_ids, batch["input_ids"], batch["attention_mask"],
                                        method=PromptedT5.encode)
        cache = model.apply(variables, encoded, max_decode_len, method=PromptedT5.init_cache)
        bsz = task_ids.shape[0]

        def body(i, carry):
            tokens, cache, current, done = carry
            logits, cache = model.apply(variables, task_ids, current[:, None], cache, i, enc_mask,
                                        method=PromptedT5.decode_step)
            nxt = jnp.argmax(logits[:, 0], axis=-1).astype(jnp.int32)
            nxt = jnp.where(done, pad_id, nxt)
            tokens = jax.lax.dynamic_update_slice(tokens, nxt[:, None], (0, i))
            return tokens, cache, nxt, done | (nxt == eos_id)

        init = (jnp.full((bsz, max_decode_len), pad_id, jnp.int32), cache,
                jnp.full((bsz,), start_id, jnp.int32), jnp.zeros((bsz,), bool))
        tokens, *_ = jax.lax.fori_loop(0, max_decode_len, body, init)
        return tokens

    return generate


def rank_classify_fn(model: PromptedT5) -> Callable[[Any, Any, Mapping[str, Array], Mapping[str, Array]], Array]:
    """Returns ``classify(prompt, backbone, batch, labels) -> [B]`` index of the most likely label.

    ``labels`` holds the tokenized label words: ``decoder_input_ids``, ``labels`` and
    ``decoder_attention_mask``, each ``[C, T]``. A label's score is the sum of its
    token log-probabilities (length-unnormalised, as in T5 rank classification).
    """

    def classify(prompt: Any, backbone: Any, batch: Mapping[str, Array], labels: Mapping[str, Array]) -> Array:
        variables = {"params": {"backbone": backbone, "prompt": prompt}}
        task_ids = batch["task_ids"]
        encoded, enc_mask = model.apply(variables, task_ids, batch["input_ids"], batch["attention_mask"],
                                        method=PromptedT5.encode)
        bsz, num_labels = task_ids.shape[0], labels["labels"].shape[0]
        tile = lambda x: jnp.repeat(x, num_labels, axis=0)           # row b*C + c
        per_row = lambda x: jnp.tile(x, (bsz,) + (1,) * (x.ndim - 1))
        logits = model.apply(variables, tile(task_ids), per_row(labels["decoder_input_ids"]), tile(encoded),
                             tile(enc_mask), per_row(labels["decoder_attention_mask"]),
                             method=PromptedT5.decode)
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        target = per_row(labels["labels"])
        token_lp = jnp.take_along_axis(log_probs, target[..., None], axis=-1)[..., 0]
        scores = jnp.sum(token_lp * per_row(labels["decoder_attention_mask"]), axis=-1)
        return jnp.argmax(scores.reshape(bsz, num_labels), axis=-1)

    return classify
