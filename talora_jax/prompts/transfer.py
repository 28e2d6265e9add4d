"""Initialise prompt parameters for new target tasks from a source (multi-task) run.

Shared leaves (P0, B, gates; P* for mpt) are copied. Each per-task leaf
(``task_coeffs``; ``task_u``/``task_v``; ``task_prompts``) gets a fresh
target axis, filled for every target task from the mean over the source tasks
(the default: the source tasks' common knowledge), from one named source task,
or at random with the method's own init. Several targets can be initialised at
once (multi-target transfer).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp

from talora_jax.prompts.registry import abstract_prompt_params, build_prompt_module, init_prompt_params
from talora_jax.prompts.spec import PromptConfigError, resolve_prompt_spec
from talora_jax.t5.config import T5Config

TRANSFER_INITS = ("mean", "task", "random")


def transfer_init(source_params: Mapping[str, Any], target_config: Any, t5_config: T5Config, *,
                  strategy: str = "mean", source_tasks: Sequence[str] = (), source_task: Optional[str] = None,
                  rng: Optional[jax.Array] = None, embedding: Optional[Any] = None) -> dict:
    """Prompt params for ``target_config.num_tasks`` target tasks, seeded from ``source_params``.

    Args:
      source_params: the source run's ``params['prompt']``.
      target_config: the prompt config of the target run (same method and shapes
        as the source, ``num_tasks`` = number of target tasks).
      t5_config: the backbone config.
      strategy: 'mean' (average the source tasks), 'task' (copy ``source_task``), or
        'random' (fresh init, which needs ``rng`` and, for vocabulary init, ``embedding``).
      source_tasks: source task names in task-id order (needed by 'task').
      source_task: the name of the source task to copy.
    """
    if strategy not in TRANSFER_INITS:
        raise PromptConfigError(f"transfer init {strategy!r} is unknown; choose one of {', '.join(TRANSFER_INITS)}.")
    spec = resolve_prompt_spec(target_config, t5_config)
    module = build_prompt_module(spec, t5_config)
    per_task = set(module.per_task_leaves)
    # With 'random', the fresh draw also provides the target shapes; otherwise only shapes are needed.
    if strategy == "random":
        if rng is None:
            raise PromptConfigError("transfer init 'random' needs an rng key.")
        fresh = init_prompt_params(spec, t5_config, rng, embedding)
    else:
        fresh = abstract_prompt_params(spec, t5_config)
    _check_leaves(source_params, fresh, per_task)
    index = _source_index(strategy, source_tasks, source_task, source_params, per_task)
    out = {}
    for name, target in fresh.items():
        source = jnp.asarray(source_params[name], jnp.float32)
        if name not in per_task:
            out[name] = source
        elif strategy == "random":
            out[name] = target
        else:
            row = jnp.mean(source, axis=0) if strategy == "mean" else source[index]
            out[name] = jnp.broadcast_to(row[None], target.shape)
    return out


def _check_leaves(source: Mapping[str, Any], target: Mapping[str, Any], per_task: set) -> None:
    if set(source) != set(target):
        raise PromptConfigError(
            f"the source prompt has leaves {sorted(source)} but the target config builds {sorted(target)}; "
            "use the source run's prompt config (method, task_len, gates) for the target run.")
    for name, t in target.items():
        s_shape, t_shape = tuple(jnp.shape(source[name])), tuple(t.shape)
        same = s_shape[1:] == t_shape[1:] if name in per_task else s_shape == t_shape
        if not same:
            raise PromptConfigError(
                f"source {name} has shape {s_shape} but the target needs {t_shape}"
                f"{' (after the task axis)' if name in per_task else ''}; shared_len, task_len, rank and the "
                "backbone must match the source run.")


def _source_index(strategy: str, source_tasks: Sequence[str], source_task: Optional[str],
                  source_params: Mapping[str, Any], per_task: set) -> Optional[int]:
    if strategy != "task":
        return None
    names = list(source_tasks)
    if source_task not in names:
        raise PromptConfigError(
            f"transfer init 'task' copies source task {source_task!r}, which is not among the source tasks "
            f"{names}; pass source_tasks in task-id order and one of them as source_task.")
    counts = {jnp.shape(source_params[n])[0] for n in per_task if n in source_params}
    if counts and counts != {len(names)}:
        raise PromptConfigError(f"source_tasks lists {len(names)} tasks but the source params hold {counts.pop()}.")
    return names.index(source_task)
