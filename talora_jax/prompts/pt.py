"""Prompt tuning (Lester et al.): a trainable prompt, shared by all tasks and/or one per task.

Encoder input ``[task_prompt_k ; shared_prompt ; E(x)]``; either part may be
absent (length 0). Nothing is gated, so ``gated_len`` is 0.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from talora_jax.prompts.base import PromptOutput, broadcast_shared, prompt_param
from talora_jax.prompts.init import embedding_initializer
from talora_jax.prompts.spec import PromptSpec
from talora_jax.t5.config import T5Config

Array = jax.Array


class PromptTuning(nn.Module):
    """Leaves: ``shared_prompt [l, d]`` (if l > 0) and ``task_prompts [K, m, d]`` (if m > 0)."""

    spec: PromptSpec
    t5_config: T5Config
    per_task_leaves: ClassVar[tuple[str, ...]] = ("task_prompts",)

    @nn.compact
    def __call__(self, task_ids: Array, embedding: Optional[Any] = None) -> PromptOutput:
        spec, d = self.spec, self.t5_config.d_model
        parts = []
        if spec.task_len > 0:
            task_init = embedding_initializer(spec.init.task_prompt, spec.init, "task_prompts")
            shape = (spec.num_tasks, spec.task_len, d)
            task_prompts = prompt_param(self, "task_prompts", task_init, shape, embedding)
            parts.append(jnp.take(task_prompts, task_ids, axis=0))
        if spec.shared_len > 0:
            shared_init = embedding_initializer(spec.init.prompt, spec.init, "shared_prompt")
            shared = prompt_param(self, "shared_prompt", shared_init, (spec.shared_len, d), embedding)
            parts.append(broadcast_shared(shared, task_ids.shape[0]))
        return PromptOutput(jnp.concatenate(parts, axis=1), 0, None, None)
