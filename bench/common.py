"""The one workload description both sides of every benchmark are built from.

A ``Workload`` fixes the T5 shape, batch, input/target lengths and the total
prompt length. From it come, with no torch or peft import:

- our side: ``t5_config`` (talora_jax ``T5Config``) and ``prompt_config`` (the
  ``configs/prompt_defaults`` ConfigDict for talora / pt / mpt);
- PEFT's side: ``hf_config_kwargs`` (transformers ``T5Config`` kwargs) and
  ``peft_config_kwargs`` (``PromptTuningConfig`` / ``MultitaskPromptTuningConfig``
  kwargs);
- one numpy ``make_batch`` that both sides consume (torch via ``torch.from_numpy``);
- ``describe_ours`` / ``describe_peft``: the shapes each side will run, derived from
  those configs, so a test can assert they agree (tests/test_bench.py) and
  ``throughput.py`` can assert the real run matches (forward hooks on PEFT's side).

PEFT detail that matters for equal work: for ``SEQ_2_SEQ_LM`` PEFT defaults to
``num_transformer_submodules=2``, which makes MultitaskPromptTuning prepend the
prompt to the *decoder* input as well (and allocates 2x prompt rows for plain
prompt tuning). We set it to 1: the prompt goes in front of the encoder input
only, exactly like ours (and like Lester et al. / MPT on T5).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout: python bench/<script>.py
    sys.path.insert(0, ROOT)

METHODS = ("talora", "pt", "mpt")
PEFT_METHODS = {"pt": "PromptTuningConfig", "mpt": "MultitaskPromptTuningConfig"}


@dataclasses.dataclass(frozen=True)
class Workload:
    preset: str = "t5-small"
    batch: int = 8
    src_len: int = 128
    tgt_len: int = 16
    prompt_len: int = 100   # total prompt positions in front of the encoder input
    task_len: int = 20      # talora's m (part of prompt_len); shared_len = prompt_len - task_len
    rank: int = 8           # talora's r
    num_tasks: int = 4
    dtype: str = "float32"
    shrink: bool = False    # --quick: a tiny model of the same family, not the preset's size

    @property
    def shared_len(self) -> int:
        return self.prompt_len - self.task_len

    @property
    def tokens_per_step(self) -> int:
        """Real (non-prompt) tokens per step: what tokens/s counts on both sides."""
        return self.batch * (self.src_len + self.tgt_len)


QUICK = dict(preset="t5-small", batch=4, src_len=32, tgt_len=8, prompt_len=20, task_len=4, rank=4,
             shrink=True)


def t5_config(work: Workload):
    """Our backbone config. Heads are tied (transformers>=5 always ties T5's lm_head)."""
    from talora_jax.t5 import preset
    cfg = preset(work.preset, dtype=work.dtype, param_dtype="float32")
    if work.shrink:
        cfg = cfg.replace(vocab_size=2048, d_model=128, d_kv=32, d_ff=256, num_layers=2, num_decoder_layers=2,
                          num_heads=4)
    if not cfg.tie_word_embeddings:
        cfg = cfg.replace(tie_word_embeddings=True)
    return cfg


def hf_config_kwargs(work: Workload) -> dict[str, Any]:
    """kwargs for transformers' ``T5Config``; dropout off (our T5 has none)."""
    spec = t5_config(work).to_hf_dict()
    spec.pop("tie_word_embeddings")
    spec.pop("scale_decoder_outputs")
    return dict(spec, dropout_rate=0.0)


def prompt_config(work: Workload, method: str):
    """Our prompt ConfigDict with the same total prompt length as PEFT's num_virtual_tokens."""
    from configs.prompt_defaults import get_prompt_config
    cfg = get_prompt_config(method)
    cfg.num_tasks = work.num_tasks
    if method == "talora":
        cfg.shared_len, cfg.task_len, cfg.rank = work.shared_len, work.task_len, work.rank
    elif method == "pt":
        cfg.shared_len, cfg.task_len = work.prompt_len, 0
    elif method == "mpt":
        cfg.shared_len, cfg.task_len, cfg.rank = work.prompt_len, 0, 1
    else:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    return cfg


def peft_config_kwargs(work: Workload, method: str) -> dict[str, Any]:
    """kwargs for PEFT's config class ``PEFT_METHODS[method]`` (task_type added by the caller)."""
    kw = dict(num_virtual_tokens=work.prompt_len, num_transformer_submodules=1,
              token_dim=t5_config(work).d_model)
    if method == "mpt":
        kw.update(num_tasks=work.num_tasks, num_ranks=1)
    elif method != "pt":
        raise ValueError(f"PEFT side has {sorted(PEFT_METHODS)}, not {method!r}")
    return kw


def shift_right(labels: np.ndarray, start_id: int = 0) -> np.ndarray:
    out = np.full_like(labels, start_id)
    out[:, 1:] = labels[:, :-1]
    return out


def make_batch(work: Workload, seed: int = 0) -> dict[str, np.ndarray]:
    """One training batch, no padding (every input and target position is real)."""
    vocab = t5_config(work).vocab_size
    rng = np.random.default_rng(seed)
    labels = rng.integers(2, vocab, (work.batch, work.tgt_len)).astype(np.int32)
    return {
        "task_ids": (np.arange(work.batch) % work.num_tasks).astype(np.int32),
        "input_ids": rng.integers(2, vocab, (work.batch, work.src_len)).astype(np.int32),
        "attention_mask": np.ones((work.batch, work.src_len), np.int32),
        "decoder_input_ids": shift_right(labels),
        "decoder_attention_mask": np.ones((work.batch, work.tgt_len), np.int32),
        "labels": labels,
    }


def _dims(cfg) -> dict[str, int]:
    return dict(d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff, heads=cfg.num_heads,
                enc_layers=cfg.num_layers, dec_layers=cfg.num_decoder_layers, vocab=cfg.vocab_size)


def describe_ours(work: Workload, method: str, batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """Shapes our step runs, read from our prompt spec and the batch arrays."""
    from talora_jax.prompts.spec import resolve_prompt_spec
    cfg = t5_config(work)
    spec = resolve_prompt_spec(prompt_config(work, method), cfg)
    b, n = batch["input_ids"].shape
    return dict(batch=b, encoder_len=spec.prompt_len + n, decoder_len=batch["decoder_input_ids"].shape[1],
                prompt_positions=spec.prompt_len, dtype=cfg.dtype, **_dims(cfg))


def describe_peft(work: Workload, method: str, batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """Shapes PEFT's step runs, from the config kwargs we hand it (PEFT's own rule:
    encoder input = ``[prompt[:num_virtual_tokens] ; E(x)]``; the decoder input is
    prefixed too only when ``num_transformer_submodules == 2``)."""
    from talora_jax.t5 import T5Config
    hf, kw = hf_config_kwargs(work), peft_config_kwargs(work, method)  # module lookup: tests patch it
    cfg = T5Config.from_dict(hf, dtype=work.dtype)
    b, n = batch["input_ids"].shape
    t = batch["labels"].shape[1]
    prefix_decoder = method == "mpt" and kw["num_transformer_submodules"] == 2
    return dict(batch=b, encoder_len=kw["num_virtual_tokens"] + n,
                decoder_len=t + (kw["num_virtual_tokens"] if prefix_decoder else 0),
                prompt_positions=kw["num_virtual_tokens"], dtype=work.dtype, **_dims(cfg))


def peak_rss_probe():
    """(reset, read) for the Linux high-water mark of this process's RSS, in MiB.

    ``reset()`` writes 5 to /proc/self/clear_refs (resets VmHWM, Linux >= 4.0);
    ``read()`` returns (VmRSS, VmHWM). Measures every allocator alike (XLA's,
    torch's, malloc), unlike tracemalloc, which sees only Python objects.
    """
    def read() -> tuple[float, float]:
        vals = {}
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS", "VmHWM")):
                    vals[line.split(":")[0]] = int(line.split()[1]) / 1024
        return vals["VmRSS"], vals["VmHWM"]

    def reset() -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    return reset, read
