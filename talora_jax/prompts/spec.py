"""Validated, hashable description of a prompt method, built from an ml_collections config.

Users write a ``ConfigDict`` (defaults live in ``configs/prompt_defaults.py``).
Code never reads that dict directly: it is turned once into a frozen
``PromptSpec``, which checks every field against the method and the backbone
and fails with a ``PromptConfigError`` that says what was wrong and how to fix
it. Nothing here invents a default: a field the chosen method needs must be in
the config. Being frozen, a spec is hashable, so a module holding it can be a
static argument of ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Mapping, Optional, Sequence

from talora_jax.t5.config import T5Config

METHODS = ("none", "pt", "mpt", "talora")
PROMPT_INITS = ("vocab", "uniform", "label_words", "npy")
TASK_PROMPT_INITS = ("vocab", "uniform")
BASIS_INITS = ("vocab", "uniform")
_DEFAULTS_HINT = "Start from configs/prompt_defaults.py: get_prompt_config(method)."


class PromptConfigError(ValueError):
    """A prompt config that cannot describe a trainable prompt; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class InitSpec:
    """How fresh prompt parameters are drawn. ``None`` means the config did not set the field."""

    prompt: Optional[str] = None            # shared_prompt: vocab | uniform | label_words | npy
    vocab_range: Optional[tuple[int, int]] = None  # token ids [lo, hi) sampled by 'vocab'
    uniform_scale: Optional[float] = None    # 'uniform' draws from U(-scale, scale)
    label_token_ids: tuple[tuple[int, ...], ...] = ()  # 'label_words': one id sequence per label
    npy_path: Optional[str] = None           # 'npy': an array of shape [shared_len, d_model]
    task_prompt: Optional[str] = None        # pt task_prompts: vocab | uniform
    basis: Optional[str] = None              # talora basis B: vocab | uniform
    coeff_std: Optional[float] = None        # talora A_k ~ N(0, coeff_std)
    factor_std: Optional[float] = None       # mpt u_k, v_k ~ r^-1/2 + N(0, factor_std)


@dataclasses.dataclass(frozen=True)
class GateSpec:
    """Which layers gate the task-prompt keys; an empty tuple turns that attention's gates off."""

    encoder_layers: tuple[int, ...] = ()
    cross_layers: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class PromptSpec:
    """A checked prompt configuration (see DESIGN.md §2 for the meaning of l, m, r, K)."""

    method: str
    num_tasks: int = 0
    shared_len: int = 0
    task_len: int = 0
    rank: int = 0
    init: InitSpec = InitSpec()
    gates: GateSpec = GateSpec()

    @property
    def gated_len(self) -> int:
        """Static length of the gated key segment: m for talora, 0 for every other method."""
        return self.task_len if self.method == "talora" else 0

    @property
    def prompt_len(self) -> int:
        """Number of prompt positions prepended to the encoder input."""
        if self.method == "none":
            return 0
        if self.method == "mpt":
            return self.shared_len
        return self.shared_len + self.task_len

    @property
    def has_gates(self) -> bool:
        return self.gated_len > 0 and bool(self.gates.encoder_layers or self.gates.cross_layers)


def _as_dict(cfg: Any, what: str) -> dict:
    if hasattr(cfg, "to_dict"):  # ConfigDict / FrozenConfigDict
        return cfg.to_dict()
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise PromptConfigError(f"{what} must be an ml_collections ConfigDict or a dict, got {type(cfg).__name__}.")


def _require(cfg: Mapping, name: str, where: str, why: str) -> Any:
    value = cfg.get(name)
    if value is None:
        raise PromptConfigError(f"{where}.{name} is required ({why}) but is missing. {_DEFAULTS_HINT}")
    return value


def _int(value: Any, name: str, minimum: int, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PromptConfigError(f"prompt.{name}={value!r} must be an integer.{hint}")
    if value < minimum:
        bound = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise PromptConfigError(f"prompt.{name}={value} must be {bound}.{hint}")
    return value


_RANK_HINT = (" It is the rank r of the task factors (T_k = A_k·B for talora, u_k v_kᵀ for mpt);"
              " the defaults are r=8 for talora and r=1 for mpt.")


def _choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise PromptConfigError(f"prompt.init.{name}={value!r} is unknown; choose one of {', '.join(choices)}.")
    return value


def _positive_float(value: Any, name: str, why: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise PromptConfigError(f"prompt.init.{name}={value!r} must be a positive number ({why}).")
    return float(value)


def _label_ids(raw: Any) -> tuple[tuple[int, ...], ...]:
    if raw is None:
        return ()
    labels = []
    for label in raw:
        ids = (label,) if isinstance(label, int) else tuple(label)
        if not ids or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise PromptConfigError(
                f"prompt.init.label_token_ids has an entry {label!r}; each label must be a non-empty "
                "sequence of token ids (tokenize the label words with the backbone's tokenizer).")
        labels.append(ids)
    return tuple(labels)


def _init_spec(spec_init: Mapping, method: str, shared_len: int, task_len: int) -> InitSpec:
    where = "prompt.init"
    fields: dict[str, Any] = {}
    if shared_len > 0:
        prompt = _choice(_require(spec_init, "prompt", where, "the shared_prompt init strategy"), "prompt",
                         PROMPT_INITS)
        fields["prompt"] = prompt
        if prompt in ("vocab", "label_words"):
            fields["vocab_range"] = _vocab_range(_require(spec_init, "vocab_range", where,
                                                          "token ids to sample embeddings from"))
        if prompt == "uniform":
            fields["uniform_scale"] = _positive_float(
                _require(spec_init, "uniform_scale", where, "the U(-s, s) range"), "uniform_scale", "U(-s, s)")
        if prompt == "label_words":
            labels = _label_ids(spec_init.get("label_token_ids"))
            if not labels:
                raise PromptConfigError(
                    "prompt.init.prompt='label_words' needs prompt.init.label_token_ids: the token ids of "
                    "each class label, tokenized by the caller (e.g. [[1465], [2841]]).")
            if len(labels) > shared_len:
                raise PromptConfigError(
                    f"prompt.init.label_token_ids has {len(labels)} labels but shared_len={shared_len}; "
                    "use at most one label per prompt position or raise shared_len.")
            fields["label_token_ids"] = labels
        if prompt == "npy":
            path = _require(spec_init, "npy_path", where, "the .npy file holding the prompt")
            if not isinstance(path, str) or not path:
                raise PromptConfigError("prompt.init.npy_path must be the path of a .npy file.")
            fields["npy_path"] = path
    if method == "pt" and task_len > 0:
        task_prompt = _choice(_require(spec_init, "task_prompt", where, "the per-task prompt init strategy"),
                              "task_prompt", TASK_PROMPT_INITS)
        fields["task_prompt"] = task_prompt
        fields.update(_sampling_fields(spec_init, task_prompt, fields))
    if method == "talora" and task_len > 0:
        basis = _choice(_require(spec_init, "basis", where, "the basis B init strategy"), "basis", BASIS_INITS)
        fields["basis"] = basis
        fields.update(_sampling_fields(spec_init, basis, fields))
        fields["coeff_std"] = _positive_float(
            _require(spec_init, "coeff_std", where, "std of A_k"), "coeff_std",
            "A_k must start non-zero, or no gradient reaches the gates at step 0")
    if method == "mpt":
        std = _require(spec_init, "factor_std", where, "noise on u_k, v_k")
        if isinstance(std, bool) or not isinstance(std, (int, float)) or std < 0:
            raise PromptConfigError(f"prompt.init.factor_std={std!r} must be a number >= 0.")
        fields["factor_std"] = float(std)
    return InitSpec(**fields)


def _sampling_fields(spec_init: Mapping, strategy: str, have: Mapping) -> dict:
    where = "prompt.init"
    if strategy == "vocab" and "vocab_range" not in have:
        return {"vocab_range": _vocab_range(_require(spec_init, "vocab_range", where, "token ids to sample"))}
    if strategy == "uniform" and "uniform_scale" not in have:
        return {"uniform_scale": _positive_float(_require(spec_init, "uniform_scale", where, "U(-s, s)"),
                                                 "uniform_scale", "U(-s, s)")}
    return {}


def _vocab_range(raw: Any) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in raw)
    except (TypeError, ValueError):
        raise PromptConfigError(f"prompt.init.vocab_range={raw!r} must be two token ids (lo, hi).") from None
    if not 0 <= lo < hi:
        raise PromptConfigError(f"prompt.init.vocab_range=({lo}, {hi}) must satisfy 0 <= lo < hi.")
    return lo, hi


def _layers(gates: Mapping, on_key: str, layers_key: str, num_layers: int, kind: str) -> tuple[int, ...]:
    where = "prompt.gates"
    on = _require(gates, on_key, where, f"whether {kind} attention is gated")
    if not isinstance(on, bool):
        raise PromptConfigError(f"{where}.{on_key}={on!r} must be True or False.")
    if not on:
        return ()
    raw = _require(gates, layers_key, where, f"which {kind} layers are gated: 'all' or a list of indices")
    if raw == "all":
        return tuple(range(num_layers))
    if isinstance(raw, str):  # '0,3,5': the form a command-line override takes
        try:
            raw = [int(part) for part in raw.split(",") if part.strip()]
        except ValueError:
            raw = None
    if raw is None or isinstance(raw, int):
        raise PromptConfigError(f"{where}.{layers_key} must be 'all', a list of layer indices or a "
                                "comma-separated string such as '0,3,5'.")
    layers = tuple(raw)
    for i in layers:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < num_layers:
            raise PromptConfigError(
                f"{where}.{layers_key} contains {i!r}, but the backbone has {num_layers} {kind} layers "
                f"(valid indices 0..{num_layers - 1}). Fix the index or use 'all'.")
    if len(set(layers)) != len(layers) or not layers:
        raise PromptConfigError(
            f"{where}.{layers_key}={list(layers)} must list distinct layers; to turn {kind} gates off "
            f"set {where}.{on_key}=False.")
    return tuple(sorted(layers))


def resolve_prompt_spec(prompt_config: Any, t5_config: T5Config) -> PromptSpec:
    """Checks ``prompt_config`` against its method and the backbone and returns a frozen spec."""
    if isinstance(prompt_config, PromptSpec):
        return prompt_config
    cfg = _as_dict(prompt_config, "prompt_config")
    method = cfg.get("method")
    if method not in METHODS:
        close = difflib.get_close_matches(str(method), METHODS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise PromptConfigError(
            f"prompt.method={method!r} is unknown.{hint} Choose 'pt', 'mpt' or 'talora' "
            "(or 'none' for the frozen T5 with no prompt).")
    if method == "none":
        return PromptSpec(method="none")
    where = "prompt"
    num_tasks = _int(_require(cfg, "num_tasks", where, "the number of tasks K; set it from the task list"),
                     "num_tasks", 1)
    shared_len = _int(_require(cfg, "shared_len", where, "the shared prompt length l"), "shared_len", 0)
    task_len = 0
    if method in ("pt", "talora"):
        task_len = _int(_require(cfg, "task_len", where, "the task prompt length m"), "task_len", 0)
    elif cfg.get("task_len"):
        raise PromptConfigError(
            f"prompt.task_len={cfg['task_len']} but mpt has no separate task prompt: its per-task prompt is "
            "P* ∘ (u_k v_kᵀ) of length shared_len. Set prompt.task_len=0.")
    rank = 0
    if method == "mpt" or (method == "talora" and task_len > 0):
        rank = _int(_require(cfg, "rank", where, "the rank r of the task factors"), "rank", 1, _RANK_HINT)
    elif cfg.get("rank") is not None:
        _int(cfg["rank"], "rank", 1, _RANK_HINT)
    if shared_len + task_len == 0:
        fix = "shared_len > 0" if method == "mpt" else "shared_len > 0 and/or task_len > 0"
        raise PromptConfigError(
            f"prompt.method={method!r} with shared_len=0 and task_len=0 has no trainable prompt at all. "
            f"Set {fix}, or method='none' to evaluate the frozen T5 without a prompt.")
    init = _init_spec(_as_dict(_require(cfg, "init", where, "init strategies"), "prompt.init"),
                      method, shared_len, task_len)
    gates = GateSpec()
    if method == "talora" and task_len > 0:
        raw = _as_dict(_require(cfg, "gates", where, "which attentions gate the task prompt"), "prompt.gates")
        gates = GateSpec(
            encoder_layers=_layers(raw, "encoder", "encoder_layers", t5_config.num_layers, "encoder"),
            cross_layers=_layers(raw, "cross", "cross_layers", t5_config.num_decoder_layers, "decoder"))
    return PromptSpec(method=method, num_tasks=num_tasks, shared_len=shared_len, task_len=task_len,
                      rank=rank, init=init, gates=gates)
