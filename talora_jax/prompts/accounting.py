"""Trainable parameter counts per method: shared by all tasks, and per task.

Counts are computed from the spec and the backbone config alone (no arrays),
so the paper-style tables can be produced for any T5 size. A gate entry
counts only if its layer is gated: rows of ungated layers exist in the
``[L, H]`` table but never affect the output. ``count_tree`` counts a real
parameter tree the same way, which the tests use to cross-check.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from talora_jax.prompts.registry import PROMPT_MODULES
from talora_jax.prompts.spec import PromptSpec, resolve_prompt_spec
from talora_jax.t5.config import T5Config


@dataclasses.dataclass(frozen=True)
class ParamCounts:
    """``total = shared + per_task * num_tasks``; ``leaves`` gives each leaf's live entries (all tasks)."""

    method: str
    num_tasks: int
    shared: int
    per_task: int
    leaves: tuple[tuple[str, int], ...]

    @property
    def total(self) -> int:
        return self.shared + self.per_task * self.num_tasks

    def summary(self) -> str:
        """One line for logs, e.g. ``talora: shared 82,176 + 256/task x 6 tasks = 83,712``."""
        return (f"{self.method}: shared {self.shared:,} + {self.per_task:,}/task x {self.num_tasks} tasks "
                f"= {self.total:,} trainable")

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "num_tasks": self.num_tasks, "shared": self.shared,
                "per_task": self.per_task, "total": self.total, "leaves": dict(self.leaves)}


def _leaf_shapes(spec: PromptSpec, cfg: T5Config) -> dict[str, tuple[int, ...]]:
    d, k, l, m, r = cfg.d_model, spec.num_tasks, spec.shared_len, spec.task_len, spec.rank
    shapes: dict[str, tuple[int, ...]] = {}
    if spec.method != "none" and l > 0:
        shapes["shared_prompt"] = (l, d)
    if spec.method == "pt" and m > 0:
        shapes["task_prompts"] = (k, m, d)
    if spec.method == "mpt":
        shapes.update(task_u=(k, l, r), task_v=(k, d, r))
    if spec.method == "talora" and m > 0:
        shapes.update(basis=(r, d), task_coeffs=(k, m, r))
        if spec.gates.encoder_layers:
            shapes["enc_gate"] = (len(spec.gates.encoder_layers), cfg.num_heads)
        if spec.gates.cross_layers:
            shapes["cross_gate"] = (len(spec.gates.cross_layers), cfg.num_heads)
    return shapes


def _counts(spec: PromptSpec, live: Mapping[str, int]) -> ParamCounts:
    per_task_leaves = PROMPT_MODULES[spec.method].per_task_leaves
    shared = sum(n for name, n in live.items() if name not in per_task_leaves)
    per_task = sum(n // spec.num_tasks for name, n in live.items() if name in per_task_leaves)
    return ParamCounts(spec.method, spec.num_tasks, shared, per_task, tuple(sorted(live.items())))


def count_prompt_params(prompt_config: Any, t5_config: T5Config) -> ParamCounts:
    """Analytic counts for a prompt config over a backbone of ``t5_config``'s dimensions."""
    spec = resolve_prompt_spec(prompt_config, t5_config)
    return _counts(spec, {name: math.prod(s) for name, s in _leaf_shapes(spec, t5_config).items()})


def count_tree(prompt_params: Mapping[str, Any], prompt_config: Any, t5_config: T5Config) -> ParamCounts:
    """Counts a real prompt parameter tree (gate rows of ungated layers excluded)."""
    spec = resolve_prompt_spec(prompt_config, t5_config)
    live = {}
    for name, leaf in prompt_params.items():
        shape = tuple(leaf.shape)
        if name == "enc_gate":
            shape = (len(spec.gates.encoder_layers),) + shape[1:]
        elif name == "cross_gate":
            shape = (len(spec.gates.cross_layers),) + shape[1:]
        live[name] = math.prod(shape)
    return _counts(spec, live)
