"""Method name -> prompt module, and standalone init of the prompt parameters.

``init_prompt_params`` initialises the prompt subtree on its own (no random
backbone is built): the tree it returns is exactly ``params['prompt']`` of
``talora_jax.model.PromptedT5`` for the same configs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from talora_jax.prompts.base import NoPrompt
from talora_jax.prompts.mpt import MultitaskPromptTuning
from talora_jax.prompts.pt import PromptTuning
from talora_jax.prompts.spec import PromptSpec, resolve_prompt_spec
from talora_jax.prompts.talora import TaLoRAPrompt
from talora_jax.t5.config import T5Config

PROMPT_MODULES: dict[str, type[nn.Module]] = {
    "none": NoPrompt, "pt": PromptTuning, "mpt": MultitaskPromptTuning, "talora": TaLoRAPrompt,
}


def build_prompt_module(prompt_config: Any, t5_config: T5Config, name: Optional[str] = None) -> nn.Module:
    """The prompt module for a (validated) config; raises PromptConfigError on a bad config."""
    spec = resolve_prompt_spec(prompt_config, t5_config)
    return PROMPT_MODULES[spec.method](spec, t5_config, name=name)


def init_prompt_params(prompt_config: Any, t5_config: T5Config, rng: jax.Array,
                       embedding: Optional[Any] = None) -> dict:
    """Fresh prompt parameters.

    Args:
      prompt_config: ConfigDict / dict / PromptSpec.
      t5_config: the frozen backbone's config.
      rng: PRNG key.
      embedding: the backbone's token table ``backbone_params['shared']['embedding']``;
        needed by vocabulary and label-word init.
    """
    module = build_prompt_module(prompt_config, t5_config)
    variables = module.init(rng, jnp.zeros((1,), jnp.int32), embedding)
    return dict(variables.get("params", {}))


def abstract_prompt_params(prompt_config: Any, t5_config: T5Config) -> dict:
    """Shapes of the prompt parameters (``jax.ShapeDtypeStruct`` leaves), without drawing them."""
    spec = resolve_prompt_spec(prompt_config, t5_config)
    table = jax.ShapeDtypeStruct((t5_config.vocab_size, t5_config.d_model), jnp.float32)
    if spec.init.prompt == "npy":  # shapes only: never read the file here
        spec = _with_prompt_init(spec, "uniform")
    return jax.eval_shape(lambda e: init_prompt_params(spec, t5_config, jax.random.PRNGKey(0), e), table)


def _with_prompt_init(spec: PromptSpec, strategy: str) -> PromptSpec:
    return dataclasses.replace(spec, init=dataclasses.replace(spec.init, prompt=strategy, uniform_scale=1.0))
