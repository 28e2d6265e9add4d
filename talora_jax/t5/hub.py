"""Resolves a model reference (local directory or Hugging Face hub name) to a local directory.

One function owns the "is this a path or a hub name" decision so the weight
loader and the tokenizer loader agree on it, and so a user who mistypes a
local path gets "no such directory", not a confusing download error.
"""

from __future__ import annotations

import os

# Only what we read: never pickled weights, never the TF/Flax variants.
_HUB_PATTERNS = ("config.json", "*.safetensors", "*.safetensors.index.json", "spiece.model",
                 "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class ModelNotFoundError(FileNotFoundError):
    """A model directory or hub repository that cannot be found or fetched."""


def _looks_like_path(ref: str) -> bool:
    return (ref.startswith(("/", "./", "../", "~")) or ref.count("/") > 1 or os.sep != "/" and os.sep in ref)


def resolve_model_dir(name_or_path: str) -> str:
    """Returns a local directory holding the model's files, downloading from the hub if needed.

    Raises:
      ModelNotFoundError: the path does not exist, or the hub download failed (offline,
        unknown repo, gated repo). The message says which and what to do.
    """
    expanded = os.path.expanduser(name_or_path)
    if os.path.isdir(expanded):
        return expanded
    if os.path.exists(expanded):
        raise ModelNotFoundError(
            f"{name_or_path!r} is a file, not a model directory. Pass the directory that holds "
            "config.json and the *.safetensors weights.")
    if _looks_like_path(name_or_path):
        raise ModelNotFoundError(
            f"Model directory {name_or_path!r} does not exist. Check the path, or pass a hub name "
            "such as 't5-base' or 'google/flan-t5-base'.")
    try:
        import huggingface_hub
        return huggingface_hub.snapshot_download(name_or_path, allow_patterns=list(_HUB_PATTERNS))
    except Exception as e:  # the hub raises many types (offline, 404, gated, timeouts)
        raise ModelNotFoundError(
            f"Could not fetch {name_or_path!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
            "On a machine without internet, download it elsewhere with "
            f"`hf download {name_or_path} --include '*.safetensors' --include '*.json' --include spiece.model "
            "--local-dir DIR`, copy DIR over and pass DIR instead of the hub name.") from e
