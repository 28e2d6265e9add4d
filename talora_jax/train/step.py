"""The jitted, sharded train and eval steps.

The trainable state (prompt params, optimizer state, step) is donated and
replicated; the frozen backbone is an *argument* with its own shardings, so XLA
treats it as a sharded input rather than a baked-in constant, and gradients
are taken with respect to the prompt tree only, so no weight gradient is ever
built for the backbone. Metrics stay on device; the loop fetches them a step
late so the host never waits for the accelerator.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import optax

from talora_jax.losses import token_cross_entropy
from talora_jax.model import PromptedT5

Array = jax.Array
Batch = Mapping[str, Array]
TRAIN_KEYS = ("task_ids", "input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask", "labels")


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training: small, replicated, checkpointed."""

    step: Array
    prompt: Any
    opt_state: Any


def _sums(model: PromptedT5, prompt: Any, backbone: Any, batch: Batch) -> tuple[Array, dict[str, Array]]:
    """Summed token NLL (what we differentiate) plus summed counts for exact accumulation."""
    logits = model.apply({"params": {"backbone": backbone, "prompt": prompt}}, batch)
    weights = batch["decoder_attention_mask"].astype(jnp.float32)
    mean_nll, num_tokens = token_cross_entropy(logits, batch["labels"], weights)
    correct = (jnp.argmax(logits, -1) == batch["labels"]).astype(jnp.float32) * weights
    nll_sum = mean_nll * jnp.maximum(num_tokens, 1.0)
    return nll_sum, {"nll_sum": nll_sum, "correct": jnp.sum(correct), "num_tokens": num_tokens}


def _split_microbatches(batch: Batch, grad_accum: int) -> Batch:
    """Microbatch j is rows j, j+A, j+2A, ...: strided, so every microbatch keeps rows on every
    data-parallel device (the batch is sharded in contiguous blocks) and nothing moves between them."""
    def split(x):
        if x.shape[0] % grad_accum:
            raise ValueError(f"batch size {x.shape[0]} is not divisible by grad_accum={grad_accum}; "
                             "change data.batch_size or optim.grad_accum.")
        return jnp.swapaxes(x.reshape((x.shape[0] // grad_accum, grad_accum) + x.shape[1:]), 0, 1)
    return {k: split(batch[k]) for k in TRAIN_KEYS}


def train_step_fn(model: PromptedT5, optimizer: optax.GradientTransformation,
                  schedules: Mapping[str, Callable[[Array], Array]], grad_accum: int = 1
                  ) -> Callable[[TrainState, Any, Batch], tuple[TrainState, dict[str, Array]]]:
    """The (un-jitted) train step: mean token loss over the whole batch, exact under accumulation.

    With ``grad_accum > 1`` the batch is scanned in microbatches; gradients of
    the *summed* NLL are accumulated and divided by the total target-token
    count once, so the update equals the single-pass one, not an average of
    per-microbatch means.
    """
    grad_fn = jax.grad(lambda p, b, batch: _sums(model, p, b, batch), has_aux=True)

    def step(state: TrainState, backbone: Any, batch: Batch) -> tuple[TrainState, dict[str, Array]]:
        if grad_accum == 1:
            grads, sums = grad_fn(state.prompt, backbone, {k: batch[k] for k in TRAIN_KEYS})
        else:
            def body(carry, micro):
                g, s = grad_fn(state.prompt, backbone, micro)
                return jax.tree_util.tree_map(jnp.add, carry, (g, s)), None
            zeros = (jax.tree_util.tree_map(jnp.zeros_like, state.prompt),
                     {"nll_sum": jnp.float32(0), "correct": jnp.float32(0), "num_tokens": jnp.float32(0)})
            (grads, sums), _ = jax.lax.scan(body, zeros, _split_microbatches(batch, grad_accum))
        denom = jnp.maximum(sums["num_tokens"], 1.0)
        grads = jax.tree_util.tree_map(lambda g: g / denom, grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.prompt)
        prompt = optax.apply_updates(state.prompt, updates)
        metrics = {
            "loss": sums["nll_sum"] / denom,
            "token_accuracy": sums["correct"] / denom,
            "grad_norm": optax.global_norm(grads),
            "num_tokens": sums["num_tokens"],
            **{f"lr_{name}": fn(state.step) for name, fn in schedules.items()},
        }
        return TrainState(state.step + 1, prompt, opt_state), metrics

    return step


def eval_loss_fn(model: PromptedT5) -> Callable[[Any, Any, Batch], dict[str, Array]]:
    """Teacher-forced loss and token accuracy sums on one batch (padding rows carry no tokens)."""
    def run(prompt: Any, backbone: Any, batch: Batch) -> dict[str, Array]:
        _, sums = _sums(model, prompt, backbone, batch)
        return sums
    return run


def jit_train_step(step: Callable, state_shardings: Any, backbone_shardings: Any, batch_sharding: Any,
                   replicated: Any) -> Callable:
    """``jax.jit`` with explicit shardings; the trainable state (argument 0) is donated."""
    return jax.jit(step, in_shardings=(state_shardings, backbone_shardings, batch_sharding),
                   out_shardings=(state_shardings, replicated), donate_argnums=(0,))
