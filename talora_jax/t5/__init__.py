"""Our Flax linen T5 backbone: config, layers, model, HF weight loading and tokenizer."""

from talora_jax.t5.config import PRESETS, T5Config, T5ConfigError, preset
from talora_jax.t5.hub import ModelNotFoundError
from talora_jax.t5.model import T5, abstract_params, init_params, logical_axes
from talora_jax.t5.tokenizer import load_tokenizer, tokenizer_fingerprint
from talora_jax.t5.weights import CheckpointError, load_pretrained, save_pretrained

__all__ = [
    "PRESETS", "T5", "T5Config", "T5ConfigError", "CheckpointError", "ModelNotFoundError",
    "abstract_params", "init_params", "load_pretrained", "load_tokenizer", "logical_axes", "preset",
    "save_pretrained", "tokenizer_fingerprint",
]
