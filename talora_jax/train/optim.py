"""Fast/slow optimisation of the prompt tree (DESIGN.md section 2).

Per-task parameters (``fast``) and shared parameters (``slow``) get separate
learning rates and schedules through ``optax.multi_transform``. The optimizer
only ever sees the prompt tree, so the backbone can neither move nor hold
optimizer state (invariant e).

``optim_cfg`` fields (a ConfigDict; defaults belong in the config files, not here):

  optimizer      'adafactor' | 'adam'   (adam is optax.adamw)
  lr_fast        peak learning rate of the fast group (paper default 0.3)
  lr_slow        peak learning rate of the slow group (paper default 0.03)
  warmup_steps   linear warm-up from 0 to the peak, per group
  decay          'constant' | 'linear' (to 0 at total_steps) after warm-up
  clip_norm      global-norm gradient clipping over the trainable leaves; 0 disables
  weight_decay   adamw decoupled weight decay / adafactor weight_decay_rate; 0 disables
  freeze_slow    the slow group never moves and holds no optimizer moments (transfer)

Optional: ``warmup_steps_fast``/``_slow`` and ``decay_fast``/``_slow`` override the
shared schedule per group; ``b1``, ``b2``, ``eps`` (adam);
``multiply_by_parameter_scale`` (adafactor, default False: with it on, updates to
zero-initialised gates are scaled by a 1e-3 floor and the gates barely move).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import optax

FAST_PARAMS = frozenset({"task_coeffs", "task_u", "task_v", "task_prompts", "enc_gate", "cross_gate"})
SLOW_PARAMS = frozenset({"shared_prompt", "basis"})
OPTIMIZERS = ("adafactor", "adam")
DECAYS = ("constant", "linear")
REQUIRED_FIELDS = ("optimizer", "lr_fast", "lr_slow", "warmup_steps", "decay", "clip_norm",
                   "weight_decay", "freeze_slow")

Schedule = Callable[[Any], Any]


class OptimConfigError(ValueError):
    """A bad ``config.optim`` value; the message names the field and how to fix it."""


def _leaf_name(path: tuple) -> str:
    for key in reversed(path):
        name = getattr(key, "key", getattr(key, "name", None))
        if isinstance(name, str):
            return name
    raise OptimConfigError(f"Prompt parameter at {jax.tree_util.keystr(path)} has no name; "
                           "prompt params must be a (nested) dict keyed by parameter name.")


def param_labels(prompt_params: Any) -> Any:
    """``'fast'``/``'slow'`` for every prompt leaf, by its name (the last dict key).

    Unknown names raise instead of defaulting: a new prompt parameter silently put in
    the wrong group would train at a 10x wrong learning rate without any error.
    """
    def label(path: tuple, _: Any) -> str:
        name = _leaf_name(path)
        if name in FAST_PARAMS:
            return "fast"
        if name in SLOW_PARAMS:
            return "slow"
        raise OptimConfigError(
            f"Prompt parameter {name!r} (at {jax.tree_util.keystr(path)}) belongs to neither the "
            f"fast group {sorted(FAST_PARAMS)} nor the slow group {sorted(SLOW_PARAMS)}. Add it to "
            "FAST_PARAMS or SLOW_PARAMS in talora_jax/train/optim.py.")
    return jax.tree_util.tree_map_with_path(label, prompt_params)


def make_schedule(peak_lr: float, warmup_steps: int, total_steps: int, decay: str = "constant"
                  ) -> Schedule:
    """Linear warm-up 0 -> ``peak_lr`` over ``warmup_steps``, then constant or linear decay
    to 0 at ``total_steps``. Step ``t`` is the optimizer update count (0 for the first update).
    """
    if peak_lr < 0:
        raise OptimConfigError(f"Learning rate must be >= 0, got {peak_lr}.")
    if total_steps <= 0:
        raise OptimConfigError(f"total_steps must be positive, got {total_steps}; set train.num_steps.")
    if warmup_steps < 0 or warmup_steps > total_steps:
        raise OptimConfigError(
            f"warmup_steps={warmup_steps} must be between 0 and total_steps={total_steps}; lower "
            "optim.warmup_steps or raise the number of training steps.")
    if decay not in DECAYS:
        raise OptimConfigError(f"Unknown decay {decay!r}; choose one of {', '.join(DECAYS)}.")
    if decay == "constant":
        after: Schedule = optax.constant_schedule(peak_lr)
    else:
        after = optax.linear_schedule(peak_lr, 0.0, max(total_steps - warmup_steps, 1))
    if warmup_steps == 0:
        return after
    warm = optax.linear_schedule(0.0, peak_lr, warmup_steps)
    return optax.join_schedules([warm, after], [warmup_steps])


def _field(cfg: Any, name: str, default: Any = None) -> Any:
    value = cfg.get(name, default) if hasattr(cfg, "get") else getattr(cfg, name, default)
    return default if value is None else value


def _validate(cfg: Any) -> None:
    missing = [f for f in REQUIRED_FIELDS if _field(cfg, f) is None]
    if missing:
        raise OptimConfigError(f"config.optim is missing {', '.join(missing)}; add them to the "
                               f"config file (required: {', '.join(REQUIRED_FIELDS)}).")
    name = _field(cfg, "optimizer")
    if name not in OPTIMIZERS:
        raise OptimConfigError(f"Unknown optimizer {name!r}; set optim.optimizer to one of "
                               f"{', '.join(OPTIMIZERS)}.")
    for field in ("lr_fast", "lr_slow", "clip_norm", "weight_decay", "warmup_steps"):
        if float(_field(cfg, field)) < 0:
            raise OptimConfigError(f"optim.{field} must be >= 0, got {_field(cfg, field)}.")


def _base(cfg: Any, schedule: Schedule) -> optax.GradientTransformation:
    wd = float(_field(cfg, "weight_decay"))
    if _field(cfg, "optimizer") == "adam":
        return optax.adamw(schedule, b1=float(_field(cfg, "b1", 0.9)),
                           b2=float(_field(cfg, "b2", 0.999)), eps=float(_field(cfg, "eps", 1e-8)),
                           weight_decay=wd)
    scale = bool(_field(cfg, "multiply_by_parameter_scale", False))
    return optax.adafactor(schedule, weight_decay_rate=wd or None, multiply_by_parameter_scale=scale)


def make_optimizer(optim_cfg: Any, total_steps: int
                   ) -> tuple[optax.GradientTransformation, dict[str, Schedule]]:
    """The fast/slow optimizer for the prompt tree and the two lr schedules (for logging).

    Clipping is by the global norm of the *trainable* leaves: over both groups
    normally, over the fast group only when the slow group is frozen, so frozen
    gradients cannot shrink the fast updates.
    """
    _validate(optim_cfg)
    warmup, decay = _field(optim_cfg, "warmup_steps"), _field(optim_cfg, "decay")
    schedules = {
        group: make_schedule(float(_field(optim_cfg, f"lr_{group}")),
                             int(_field(optim_cfg, f"warmup_steps_{group}", warmup)), total_steps,
                             str(_field(optim_cfg, f"decay_{group}", decay)))
        for group in ("fast", "slow")
    }
    clip = float(_field(optim_cfg, "clip_norm"))
    fast = _base(optim_cfg, schedules["fast"])
    if bool(_field(optim_cfg, "freeze_slow")):
        slow = optax.set_to_zero()
        if clip > 0:
            fast = optax.chain(optax.clip_by_global_norm(clip), fast)
        tx = optax.multi_transform({"fast": fast, "slow": slow}, param_labels)
    else:
        tx = optax.multi_transform({"fast": fast, "slow": _base(optim_cfg, schedules["slow"])},
                                   param_labels)
        if clip > 0:
            tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    return tx, schedules


def group_sizes(prompt_params: Any) -> Mapping[str, int]:
    """Number of scalars per group, for the parameter-count log line."""
    sizes = {"fast": 0, "slow": 0}
    for lab, leaf in zip(jax.tree.leaves(param_labels(prompt_params)), jax.tree.leaves(prompt_params)):
        sizes[lab] += int(getattr(leaf, "size", 0))
    return sizes
