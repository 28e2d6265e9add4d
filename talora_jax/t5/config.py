"""T5 architecture description, built from a Hugging Face ``config.json``.

The dataclass is the single source of truth for shapes. Everything that builds
parameters (the Flax modules, the weight loader, the parameter accounting)
reads it, so a shape mismatch surfaces in one place: the loader.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Optional

import jax.numpy as jnp

SUPPORTED_MODEL_TYPES = ("t5", "mt5")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class T5ConfigError(ValueError):
    """A config.json or preset that does not describe a T5 we can build."""


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Shapes and variants of a T5 encoder-decoder.

    Field names follow Hugging Face's ``T5Config`` so that a ``config.json``
    maps one to one. ``dtype`` (compute) and ``param_dtype`` (storage of the
    frozen weights) are ours and never read from the file.
    """

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"
    tie_word_embeddings: bool = True
    # Original T5 multiplies decoder outputs by d_model**-0.5 before the (tied) head;
    # v1.1/FLAN do not. None means "same as tie_word_embeddings", the pre-v5 HF rule.
    scale_decoder_outputs: Optional[bool] = None
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0
    model_type: str = "t5"
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        if self.scale_decoder_outputs is None:
            object.__setattr__(self, "scale_decoder_outputs", self.tie_word_embeddings)
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                     "relative_attention_num_buckets", "relative_attention_max_distance"):
            if getattr(self, name) <= 0:
                raise T5ConfigError(f"T5Config.{name} must be positive, got {getattr(self, name)}.")
        if self.num_decoder_layers <= 0:
            raise T5ConfigError(
                f"T5Config.num_decoder_layers must be positive, got {self.num_decoder_layers}.")
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise T5ConfigError(
                f"model_type {self.model_type!r} is not supported; talora_jax builds "
                f"{' and '.join(SUPPORTED_MODEL_TYPES)} models only.")
        # Validates the activation spelling early, not at first forward pass.
        _ = self.activation
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in _DTYPES:
                raise T5ConfigError(
                    f"T5Config.{name}={getattr(self, name)!r}; choose one of {sorted(_DTYPES)}.")

    @property
    def is_gated_ffn(self) -> bool:
        """T5 v1.1, FLAN-T5 and mT5 use a gated feed-forward (``gated-gelu``)."""
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        act = self.feed_forward_proj.split("-")[-1]
        if act == "gelu" and self.is_gated_ffn:
            # HF maps "gated-gelu" to the tanh approximation ("gelu_new").
            act = "gelu_new"
        if act not in ("relu", "gelu", "gelu_new", "silu"):
            raise T5ConfigError(
                f"feed_forward_proj={self.feed_forward_proj!r} is not supported; use 'relu', "
                "'gelu', 'gated-gelu' or 'gated-silu'.")
        return act

    @property
    def inner_dim(self) -> int:
        """Attention width ``num_heads * d_kv``; may differ from ``d_model`` (e.g. t5-11b)."""
        return self.num_heads * self.d_kv

    @property
    def compute_dtype(self):
        return _DTYPES[self.dtype]

    @property
    def storage_dtype(self):
        return _DTYPES[self.param_dtype]

    def replace(self, **changes: Any) -> "T5Config":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], **overrides: Any) -> "T5Config":
        """Builds a config from HF ``config.json`` content; unknown HF keys are ignored."""
        model_type = raw.get("model_type", "t5")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise T5ConfigError(
                f"config.json has model_type={model_type!r}, but talora_jax only loads "
                f"{'/'.join(SUPPORTED_MODEL_TYPES)} checkpoints. Point it at a T5, T5 v1.1, "
                "FLAN-T5 or mT5 checkpoint.")
        # transformers>=5 rewrites tie_word_embeddings to True for every T5 and records the
        # v1.0/v1.1 difference in scale_decoder_outputs; older files only have the former.
        fields = {f.name for f in dataclasses.fields(cls)} - {"dtype", "param_dtype"}
        kwargs = {k: raw[k] for k in fields if k in raw and raw[k] is not None}
        if raw.get("num_decoder_layers") is None:
            kwargs["num_decoder_layers"] = raw.get("num_layers", cls.num_layers)
        if "decoder_start_token_id" not in kwargs:
            kwargs["decoder_start_token_id"] = kwargs.get("pad_token_id", 0)
        kwargs.update(overrides)
        return cls(**kwargs)

    @classmethod
    def from_json_file(cls, path: str, **overrides: Any) -> "T5Config":
        try:
            with open(path) as f:
                raw = json.load(f)
        except json.JSONDecodeError as e:
            raise T5ConfigError(f"{path} is not valid JSON ({e}). Re-download the checkpoint.") from e
        return cls.from_dict(raw, **overrides)

    def to_hf_dict(self) -> dict[str, Any]:
        """The HF ``config.json`` fields (used by tests to build reference models)."""
        d = dataclasses.asdict(self)
        d.pop("dtype")
        d.pop("param_dtype")
        d["is_encoder_decoder"] = True
        return d


def _preset(d_model, d_kv, d_ff, layers, heads, ffn, tied, vocab=32128):
    return dict(vocab_size=vocab, d_model=d_model, d_kv=d_kv, d_ff=d_ff, num_layers=layers,
                num_decoder_layers=layers, num_heads=heads, feed_forward_proj=ffn,
                tie_word_embeddings=tied, scale_decoder_outputs=tied)


# Published dimensions, so shapes (and parameter counts) are known without a download.
PRESETS: dict[str, dict[str, Any]] = {
    "t5-small": _preset(512, 64, 2048, 6, 8, "relu", True),
    "t5-base": _preset(768, 64, 3072, 12, 12, "relu", True),
    "t5-large": _preset(1024, 64, 4096, 24, 16, "relu", True),
    "t5-3b": _preset(1024, 128, 16384, 24, 32, "relu", True),
    "t5-11b": _preset(1024, 128, 65536, 24, 128, "relu", True),
}
for _prefix in ("google/t5-v1_1", "google/flan-t5"):
    PRESETS.update({
        f"{_prefix}-small": _preset(512, 64, 1024, 8, 6, "gated-gelu", False),
        f"{_prefix}-base": _preset(768, 64, 2048, 12, 12, "gated-gelu", False),
        f"{_prefix}-large": _preset(1024, 64, 2816, 24, 16, "gated-gelu", False),
        f"{_prefix}-xl": _preset(2048, 64, 5120, 24, 32, "gated-gelu", False),
        f"{_prefix}-xxl": _preset(4096, 64, 10240, 24, 64, "gated-gelu", False),
    })
# Hub aliases: the v1.0 checkpoints also live under google-t5/.
for _size in ("small", "base", "large", "3b", "11b"):
    PRESETS[f"google-t5/t5-{_size}"] = PRESETS[f"t5-{_size}"]


def preset(name: str, **overrides: Any) -> T5Config:
    """Returns the published config for ``name`` (e.g. ``'t5-base'``, ``'google/flan-t5-xl'``)."""
    if name not in PRESETS:
        import difflib
        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise T5ConfigError(f"Unknown T5 preset {name!r}.{hint} Known: {', '.join(sorted(PRESETS))}.")
    return T5Config(**{**PRESETS[name], **overrides})


def config_path(model_dir: str) -> str:
    return os.path.join(model_dir, "config.json")
