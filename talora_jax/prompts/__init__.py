"""Prompt methods over the frozen T5: ``pt``, ``mpt`` and ``talora`` behind one protocol.

Never imports ``talora_jax.data``: label-word init takes token ids from the caller.
"""

from talora_jax.prompts.accounting import ParamCounts, count_prompt_params, count_tree
from talora_jax.prompts.base import NoPrompt, PromptModule, PromptOutput
from talora_jax.prompts.mpt import MultitaskPromptTuning
from talora_jax.prompts.pt import PromptTuning
from talora_jax.prompts.registry import (PROMPT_MODULES, abstract_prompt_params, build_prompt_module,
                                         init_prompt_params)
from talora_jax.prompts.spec import METHODS, PromptConfigError, PromptSpec, resolve_prompt_spec
from talora_jax.prompts.talora import TaLoRAPrompt
from talora_jax.prompts.transfer import TRANSFER_INITS, transfer_init

__all__ = [
    "METHODS", "PROMPT_MODULES", "TRANSFER_INITS", "MultitaskPromptTuning", "NoPrompt", "ParamCounts",
    "PromptConfigError", "PromptModule", "PromptOutput", "PromptSpec", "PromptTuning", "TaLoRAPrompt",
    "abstract_prompt_params", "build_prompt_module", "count_prompt_params", "count_tree",
    "init_prompt_params", "resolve_prompt_spec", "transfer_init",
]
