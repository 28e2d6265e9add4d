"""Loads Hugging Face T5 checkpoints (safetensors only) into our Flax parameter tree.

The mapping from HF tensor names to our parameter paths is generated from the
config, then checked both ways: every expected tensor must be present with
the right shape, and every tensor in the files must be consumed (or be one of
HF's documented aliases). A checkpoint that does not match is an error naming
the tensor, never a silent random init.

We read the safetensors format directly (an 8-byte header length, a JSON
header, raw little-endian buffers) through a memory map. That keeps bf16
checkpoints exact without torch, and never unpickles anything.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Callable, Iterable, Optional

import ml_dtypes
import numpy as np

from talora_jax.t5.config import T5Config, T5ConfigError, config_path
from talora_jax.t5.hub import ModelNotFoundError, resolve_model_dir

_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
# Tensors HF checkpoints may carry that duplicate the shared embedding.
_EMBEDDING_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
# Created by HF's T5Attention for every cross-attention but never used; HF ignores it too.
_IGNORED = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)


class CheckpointError(ValueError):
    """A checkpoint whose tensors do not match the T5 its config.json describes."""


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Memory-maps one ``.safetensors`` file into numpy arrays (bf16 via ml_dtypes)."""
    with open(path, "rb") as f:
        raw_len = f.read(8)
        if len(raw_len) < 8:
            raise CheckpointError(f"{path} is truncated (no safetensors header). Re-download it.")
        (header_len,) = struct.unpack("<Q", raw_len)
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path} has a corrupt safetensors header ({e}). Re-download it.") from e
    buffer = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _ST_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}.")
        begin, end = info["data_offsets"]
        tensors[name] = buffer[begin:end].view(_ST_DTYPES[info["dtype"]]).reshape(info["shape"])
    return tensors


def _weight_files(model_dir: str) -> list[str]:
    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.isfile(single):
        return [single]
    if os.path.isfile(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        missing = [s for s in shards if not os.path.isfile(os.path.join(model_dir, s))]
        if missing:
            raise CheckpointError(
                f"{index} lists shard(s) {missing} that are not in {model_dir}. Download every shard.")
        return [os.path.join(model_dir, s) for s in shards]
    pickled = [n for n in os.listdir(model_dir) if n.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    if pickled:
        raise CheckpointError(
            f"{model_dir} holds only pickled PyTorch weights ({', '.join(sorted(pickled))}); talora_jax "
            "never unpickles files. Convert them once with transformers: python -c \"from transformers "
            "import T5ForConditionalGeneration as M; "
            f"M.from_pretrained('{model_dir}').save_pretrained('OUT_DIR', safe_serialization=True)\" "
            "and load OUT_DIR.")
    raise CheckpointError(
        f"No weights in {model_dir}: expected model.safetensors or model.safetensors.index.json with its shards.")


def _linear(shape_after_transpose: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """torch Linear stores ``[out, in]``; we store ``[in, ...]``, reshaped per head where needed."""
    return lambda w: np.ascontiguousarray(w.T).reshape(shape_after_transpose)


def _identity(w: np.ndarray) -> np.ndarray:
    return w


def parameter_map(cfg: T5Config) -> dict[tuple[str, ...], tuple[str, tuple[int, ...], Callable]]:
    """Our parameter path -> (HF tensor name, HF shape, conversion), generated from the config."""
    d, h, k, f = cfg.d_model, cfg.num_heads, cfg.d_kv, cfg.d_ff
    out: dict[tuple[str, ...], tuple[str, tuple[int, ...], Callable]] = {}

    def attention(path, hf):
        for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v")):
            out[path + (ours,)] = (f"{hf}.{theirs}.weight", (h * k, d), _linear((d, h, k)))
        out[path + ("out",)] = (f"{hf}.o.weight", (d, h * k), _linear((h, k, d)))

    def mlp(path, hf):
        names = ("wi_0", "wi_1") if cfg.is_gated_ffn else ("wi",)
        for name in names:
            out[path + (name,)] = (f"{hf}.DenseReluDense.{name}.weight", (f, d), _linear((d, f)))
        out[path + ("wo",)] = (f"{hf}.DenseReluDense.wo.weight", (d, f), _linear((f, d)))

    def norm(path, hf):
        out[path + ("scale",)] = (hf, (d,), _identity)

    out[("shared", "embedding")] = ("shared.weight", (cfg.vocab_size, d), _identity)
    for stack, depth in (("encoder", cfg.num_layers), ("decoder", cfg.num_decoder_layers)):
        out[(stack, "relpos_bias", "embedding")] = (
            f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            (cfg.relative_attention_num_buckets, h), _identity)
        norm((stack, "final_norm"), f"{stack}.final_layer_norm.weight")
        for i in range(depth):
            p, hf = (stack, f"layers_{i}"), f"{stack}.block.{i}.layer"
            if stack == "encoder":
                attention(p + ("attention",), f"{hf}.0.SelfAttention")
                norm(p + ("pre_attention_norm",), f"{hf}.0.layer_norm.weight")
                mlp(p + ("mlp",), f"{hf}.1")
                norm(p + ("pre_mlp_norm",), f"{hf}.1.layer_norm.weight")
            else:
                attention(p + ("self_attention",), f"{hf}.0.SelfAttention")
                norm(p + ("pre_self_attention_norm",), f"{hf}.0.layer_norm.weight")
                attention(p + ("cross_attention",), f"{hf}.1.EncDecAttention")
                norm(p + ("pre_cross_attention_norm",), f"{hf}.1.layer_norm.weight")
                mlp(p + ("mlp",), f"{hf}.2")
                norm(p + ("pre_mlp_norm",), f"{hf}.2.layer_norm.weight")
    if not cfg.tie_word_embeddings:
        out[("lm_head", "kernel")] = ("lm_head.weight", (cfg.vocab_size, d), _linear((d, cfg.vocab_size)))
    return out


def _set(tree: dict, path: Iterable[str], value: Any) -> None:
    *parents, leaf = path
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def convert_state_dict(cfg: T5Config, tensors: dict[str, np.ndarray], source: str = "checkpoint",
                       dtype: Optional[Any] = None) -> dict:
    """Converts HF-named tensors into our nested parameter dict, checking names and shapes."""
    dtype = dtype or cfg.storage_dtype
    tensors = dict(tensors)
    if "shared.weight" not in tensors:  # some exports keep only an alias of the embedding
        for alias in _EMBEDDING_ALIASES:
            if alias in tensors:
                tensors["shared.weight"] = tensors[alias]
                break
    mapping = parameter_map(cfg)
    missing = [hf for hf, _, _ in mapping.values() if hf not in tensors]
    if missing:
        raise CheckpointError(
            f"{source} is missing {len(missing)} tensor(s) the config.json architecture needs, e.g. "
            f"{missing[:3]}. The weights and config.json are from different models, or the download is "
            "incomplete: re-download both from the same checkpoint.")
    params: dict = {}
    for path, (hf, shape, convert) in mapping.items():
        value = tensors.pop(hf)
        if tuple(value.shape) != shape:
            raise CheckpointError(
                f"{source}: tensor {hf!r} has shape {tuple(value.shape)} but config.json implies {shape}. "
                "The weights and config.json are from different models; re-download them together.")
        _set(params, path, np.asarray(convert(value), dtype=dtype))
    shared = params["shared"]["embedding"]
    for alias in _EMBEDDING_ALIASES + (("lm_head.weight",) if cfg.tie_word_embeddings else ()):
        if alias in tensors:
            value = tensors.pop(alias)
            if tuple(value.shape) != shared.shape or not np.array_equal(np.asarray(value, dtype), shared):
                raise CheckpointError(
                    f"{source}: {alias!r} should be a copy of shared.weight (config.json ties the "
                    "embeddings) but differs. Set tie_word_embeddings=false in config.json if this "
                    "checkpoint has its own output head.")
    for name in _IGNORED:
        tensors.pop(name, None)
    if tensors:
        raise CheckpointError(
            f"{source} has {len(tensors)} tensor(s) that this T5 architecture does not use, e.g. "
            f"{sorted(tensors)[:3]}. It is not a plain T5ForConditionalGeneration checkpoint, or "
            "config.json describes fewer layers than the weights hold.")
    return params


def _inverse(hf_shape: tuple[int, ...], convert: Callable) -> Callable[[np.ndarray], np.ndarray]:
    if convert is _identity:
        return np.ascontiguousarray
    # Every non-identity conversion is "transpose a torch Linear, then reshape"; undo both.
    return lambda v: np.ascontiguousarray(np.reshape(v, (-1, hf_shape[0])).T).reshape(hf_shape)


def save_pretrained(config: T5Config, params: dict, out_dir: str) -> None:
    """Writes ``config.json`` + ``model.safetensors`` in the Hugging Face T5 layout.

    The inverse of ``load_pretrained``: transformers' ``T5ForConditionalGeneration``
    loads the result, so a backbone made here (e.g. the demo's stand-in) is a real
    checkpoint for every tool, not a private format.
    """
    from safetensors.numpy import save_file

    os.makedirs(out_dir, exist_ok=True)
    tensors = {}
    for path, (hf, hf_shape, convert) in parameter_map(config).items():
        value = params
        for key in path:
            value = value[key]
        tensors[hf] = _inverse(hf_shape, convert)(np.asarray(value, np.float32))
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    hf_config = config.to_hf_dict()
    hf_config.update(architectures=["T5ForConditionalGeneration"], model_type=config.model_type)
    with open(config_path(out_dir), "w") as f:
        json.dump(hf_config, f, indent=2)


def load_pretrained(name_or_path: str, dtype: str = "float32",
                    param_dtype: str = "float32") -> tuple[T5Config, dict]:
    """Loads a T5 checkpoint from a local directory or a hub name.

    Args:
      name_or_path: a directory with ``config.json`` and ``model.safetensors`` (or
        sharded safetensors with their index), or a hub name such as ``'t5-base'``.
      dtype: compute dtype (``'float32'`` or ``'bfloat16'``).
      param_dtype: storage dtype of the frozen weights; ``'bfloat16'`` halves memory.

    Returns:
      ``(config, params)``: params is a nested dict of host numpy arrays for
      ``T5(config).apply({'params': params}, ...)``.
    """
    model_dir = resolve_model_dir(name_or_path)
    cfg_file = config_path(model_dir)
    if not os.path.isfile(cfg_file):
        raise ModelNotFoundError(
            f"{model_dir} has no config.json. A model directory needs config.json beside the "
            "*.safetensors weights (transformers' save_pretrained writes both).")
    try:
        cfg = T5Config.from_json_file(cfg_file, dtype=dtype, param_dtype=param_dtype)
    except T5ConfigError as e:
        raise T5ConfigError(f"{cfg_file}: {e}") from None
    tensors: dict[str, np.ndarray] = {}
    for path in _weight_files(model_dir):
        tensors.update(read_safetensors(path))
    return cfg, convert_state_dict(cfg, tensors, source=model_dir)
