"""TA-LoRA (DESIGN.md §2): shared prompt P0, low-rank task prompt ``T_k = A_k·B``, zero-init gates.

Encoder input ``[T_k ; P0 ; E(x)]``. The first m key positions (T_k) get
their own softmax in every gated attention, scaled by ``tanh(gate[layer, head])``.
Gates start at exactly 0, so at step 0 the model *is* prompt tuning with P0
(invariant a) and the immature low-rank prompt cannot disturb it; the
gradient still reaches the gates (d tanh/dg = 1 at 0) because A and B start
non-zero. Slow weights: P0, B. Fast weights: A, gates.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from talora_jax.prompts.base import PromptOutput, broadcast_shared, layer_gates, prompt_param
from talora_jax.prompts.init import embedding_initializer, normal_initializer, zeros_initializer
from talora_jax.prompts.spec import PromptSpec
from talora_jax.t5.config import T5Config

Array = jax.Array


class TaLoRAPrompt(nn.Module):
    """Leaves: ``shared_prompt [l, d]``, ``basis [r, d]``, ``task_coeffs [K, m, r]``,
    ``enc_gate [L_e, H]`` and ``cross_gate [L_d, H]``.

    With m = 0 only ``shared_prompt`` exists (plain prompt tuning, invariant b).
    A gate table exists when its attention is gated; rows of layers not listed
    in ``gates.*_layers`` are never read (those layers use the plain joint softmax).
    """

    spec: PromptSpec
    t5_config: T5Config
    per_task_leaves: ClassVar[tuple[str, ...]] = ("task_coeffs",)

    @nn.compact
    def __call__(self, task_ids: Array, embedding: Optional[Any] = None) -> PromptOutput:
        spec, cfg = self.spec, self.t5_config
        d, m, r = cfg.d_model, spec.task_len, spec.rank
        parts = []
        enc_gates = cross_gates = None
        if m > 0:
            basis_init = embedding_initializer(spec.init.basis, spec.init, "basis")
            basis = prompt_param(self, "basis", basis_init, (r, d), embedding)
            coeff_init = normal_initializer(spec.init.coeff_std)
            coeffs = prompt_param(self, "task_coeffs", coeff_init, (spec.num_tasks, m, r), embedding)
            parts.append(jnp.einsum("bmr,rd->bmd", jnp.take(coeffs, task_ids, axis=0), basis))
            if spec.gates.encoder_layers:
                shape = (cfg.num_layers, cfg.num_heads)
                enc_gate = prompt_param(self, "enc_gate", zeros_initializer, shape, embedding)
                enc_gates = layer_gates(enc_gate, spec.gates.encoder_layers, cfg.num_layers)
            if spec.gates.cross_layers:
                shape = (cfg.num_decoder_layers, cfg.num_heads)
                cross_gate = prompt_param(self, "cross_gate", zeros_initializer, shape, embedding)
                cross_gates = layer_gates(cross_gate, spec.gates.cross_layers, cfg.num_decoder_layers)
        if spec.shared_len > 0:
            shared_init = embedding_initializer(spec.init.prompt, spec.init, "shared_prompt")
            shared = prompt_param(self, "shared_prompt", shared_init, (spec.shared_len, d), embedding)
            parts.append(broadcast_shared(shared, task_ids.shape[0]))
        return PromptOutput(jnp.concatenate(parts, axis=1), m, enc_gates, cross_gates)
