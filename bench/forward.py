"""Forward-pass time of our jitted Flax T5 against transformers' PyTorch T5, same weights.

Both sides run in one process on the same random weights (a t5-base-shaped
model by default), interleaved, so machine noise hits both alike; the ratio
is what to read, not the absolute seconds.

    python bench/forward.py --preset t5-base --batch 8 --src_len 256 --tgt_len 32
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from transformers import T5Config as HFConfig, T5ForConditionalGeneration

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
from talora_jax.t5 import T5, preset  # noqa: E402
from talora_jax.t5.weights import convert_state_dict  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="t5-base")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--src_len", type=int, default=256)
    parser.add_argument("--tgt_len", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    cfg = preset(args.preset)
    spec = cfg.to_hf_dict()
    tied = spec.pop("tie_word_embeddings")
    spec.pop("scale_decoder_outputs")
    torch.manual_seed(0)
    hf = T5ForConditionalGeneration(HFConfig(**spec, dropout_rate=0.0)).eval()
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items() if not k.endswith("embed_tokens.weight")}
    if tied:
        state.pop("lm_head.weight", None)
    else:  # transformers>=5 ties T5 heads; compare against the tied head, tied on our side too
        cfg = cfg.replace(tie_word_embeddings=True)
        state.pop("lm_head.weight", None)
    params = jax.device_put(convert_state_dict(cfg, state))

    rng = np.random.default_rng(0)
    ids = rng.integers(2, cfg.vocab_size, (args.batch, args.src_len)).astype(np.int32)
    dec = rng.integers(2, cfg.vocab_size, (args.batch, args.tgt_len)).astype(np.int32)
    mask, dmask = np.ones_like(ids), np.ones_like(dec)
    model = T5(cfg)
    forward = jax.jit(lambda p, *xs: model.apply({"params": p}, *xs))
    t_ids, t_dec, t_mask = (torch.tensor(x).long() for x in (ids, dec, mask))

    start = time.perf_counter()
    ours_logits = forward(params, ids, mask, dec, dmask).block_until_ready()
    compile_s = time.perf_counter() - start

    def run_ours():
        forward(params, ids, mask, dec, dmask).block_until_ready()

    def run_torch():
        with torch.inference_mode():
            return hf(input_ids=t_ids, attention_mask=t_mask, decoder_input_ids=t_dec).logits

    ref = run_torch().numpy()
    print(f"max |logit diff| = {np.max(np.abs(np.asarray(ours_logits) - ref)):.2e}")
    times = {"ours": [], "torch": []}
    for _ in range(args.repeats):
        for name, fn in (("ours", run_ours), ("torch", run_torch)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.preset} batch={args.batch} src={args.src_len} tgt={args.tgt_len} float32 "
          f"devices={jax.devices()[0].platform} torch_threads={torch.get_num_threads()}")
    print(f"compile (ours): {compile_s:.1f}s")
    for k in ("ours", "torch"):
        print(f"{k:>6}: median {med[k] * 1e3:.0f} ms  min {min(times[k]) * 1e3:.0f} ms")
    print(f"speedup_vs_torch={med['torch'] / med['ours']:.2f}")


if __name__ == "__main__":
    main()
