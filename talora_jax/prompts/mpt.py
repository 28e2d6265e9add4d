"""Multitask prompt tuning (Wang et al., ICLR 2023): ``prompt_k = P* ∘ (u_k v_kᵀ)``.

The shared prompt P* is the slow weight; the per-task rank-r factors
``u_k [l, r]`` and ``v_k [d, r]`` rescale it element-wise (fast weights). The
factors start near ``u_k v_kᵀ = 1``, so every task starts from P*.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from talora_jax.prompts.base import PromptOutput, prompt_param
from talora_jax.prompts.init import embedding_initializer, factor_initializer
from talora_jax.prompts.spec import PromptSpec
from talora_jax.t5.config import T5Config

Array = jax.Array


class MultitaskPromptTuning(nn.Module):
    """Leaves: ``shared_prompt [l, d]``, ``task_u [K, l, r]``, ``task_v [K, d, r]``."""

    spec: PromptSpec
    t5_config: T5Config
    per_task_leaves: ClassVar[tuple[str, ...]] = ("task_u", "task_v")

    @nn.compact
    def __call__(self, task_ids: Array, embedding: Optional[Any] = None) -> PromptOutput:
        spec, d = self.spec, self.t5_config.d_model
        k, l, r = spec.num_tasks, spec.shared_len, spec.rank
        shared_init = embedding_initializer(spec.init.prompt, spec.init, "shared_prompt")
        shared = prompt_param(self, "shared_prompt", shared_init, (l, d), embedding)
        factors = factor_initializer(r, spec.init.factor_std)
        task_u = prompt_param(self, "task_u", factors, (k, l, r), embedding)
        task_v = prompt_param(self, "task_v", factors, (k, d, r), embedding)
        u = jnp.take(task_u, task_ids, axis=0)
        v = jnp.take(task_v, task_ids, axis=0)
        return PromptOutput(shared[None] * jnp.einsum("blr,bdr->bld", u, v), 0, None, None)
