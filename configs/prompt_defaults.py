"""Default prompt configs per method; the only place prompt defaults live.

Usage inside a ``get_config()`` file::

    from configs.prompt_defaults import get_prompt_config
    config.prompt = get_prompt_config("talora")
    config.prompt.num_tasks = len(config.tasks)

Every config holds the same fields whatever the method, so ``--config.prompt.method=...``
overrides work on a locked config; fields a method does not use are ignored
(except ``task_len``, which must be 0 for mpt). ``num_tasks`` is a required
placeholder: the code refuses to guess it.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

# l (shared prompt), m (task prompt), r (rank) per method.
_SHAPES = {
    "talora": dict(shared_len=100, task_len=32, rank=8),
    "pt": dict(shared_len=100, task_len=0, rank=1),     # per-task pt: shared_len=0, task_len=100
    "mpt": dict(shared_len=100, task_len=0, rank=1),
    "none": dict(shared_len=0, task_len=0, rank=1),
}


def get_prompt_config(method: str = "talora") -> ml_collections.ConfigDict:
    """The default prompt config for ``method`` ('talora', 'pt', 'mpt' or 'none')."""
    if method not in _SHAPES:
        raise ValueError(f"No prompt defaults for method {method!r}; choose one of {', '.join(_SHAPES)}.")
    config = ml_collections.ConfigDict()
    config.method = method
    config.num_tasks = config_dict.placeholder(int)  # set from the task list
    config.update(_SHAPES[method])
    config.init = ml_collections.ConfigDict(dict(
        prompt="vocab",             # shared prompt: vocab | uniform | label_words | npy
        vocab_range=(3, 5000),      # sample ids here: skips pad/eos/unk, stays among frequent pieces
        uniform_scale=0.5,          # 'uniform': U(-0.5, 0.5), as in Lester et al.
        label_token_ids=(),         # 'label_words': one tuple of token ids per class label
        npy_path="",                # 'npy': array of shape [shared_len, d_model]
        task_prompt="vocab",        # pt per-task prompts: vocab | uniform
        basis="vocab",              # talora B: rows start as sampled token embeddings
        coeff_std=0.1,              # talora A_k ~ N(0, 0.1): small, but non-zero (invariant d)
        factor_std=0.02,            # mpt u_k, v_k ~ r^-1/2 + N(0, 0.02): u_k v_kᵀ ≈ 1 at start
    ))
    config.gates = ml_collections.ConfigDict(dict(
        encoder=True, cross=True,   # gate encoder self-attention / decoder cross-attention
        encoder_layers="all",       # "all", or layer indices as "0,3,5" (or a list)
        cross_layers="all",
    ))
    return config
