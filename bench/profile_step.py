"""Where our train step's time and memory go (the speed-work measurements in docs/BENCHMARKS.md).

For one workload, in one process with interleaved repeats, it builds our real train step for
several variants and prints step time, XLA's FLOP count and XLA's compiled memory (arguments
and temporaries):

  pt              plain prompt tuning (no gated attention)
  talora          TA-LoRA as shipped (gated segment softmaxed on its own slice of keys)
  talora_2softmax TA-LoRA with the previous attention: two full-width masked softmaxes per
                  gated attention (kept here, monkeypatched in, to show what the fix bought)
  talora_bf16     TA-LoRA with bfloat16 compute (the trainer's default dtype on TPU)

plus the forward pass alone (loss only) of talora, to split forward from backward.

    python bench/profile_step.py --preset t5-small --batch 8 --src_len 128 --tgt_len 16
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench.common import QUICK, Workload, make_batch  # noqa: E402


def two_softmax_weights(scores, mask, gate=None, gated_len=0):
    """The attention_weights of talora_jax before the speed work (two full masked softmaxes)."""
    import jax.numpy as jnp
    from talora_jax.t5.layers import _masked_softmax
    if gated_len == 0 or gate is None:
        return _masked_softmax(scores, mask)
    key_in_gated = jnp.arange(scores.shape[-1]) < gated_len
    rest = _masked_softmax(scores, mask & ~key_in_gated)
    gated = _masked_softmax(scores, mask & key_in_gated)
    scale = jnp.tanh(gate.astype(jnp.float32))[None, :, None, None]
    return rest + scale * jnp.where(key_in_gated, gated, 0.0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Workload()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--preset", default=d.preset)
    parser.add_argument("--batch", type=int, default=d.batch)
    parser.add_argument("--src_len", type=int, default=d.src_len)
    parser.add_argument("--tgt_len", type=int, default=d.tgt_len)
    parser.add_argument("--prompt_len", type=int, default=d.prompt_len)
    parser.add_argument("--task_len", type=int, default=d.task_len)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants", default="pt,talora,talora_2softmax,talora_bf16")
    args = parser.parse_args(argv)
    work = Workload(**QUICK) if args.quick else Workload(args.preset, args.batch, args.src_len, args.tgt_len,
                                                         args.prompt_len, args.task_len)
    import jax
    import talora_jax.t5.layers as layers
    from talora_jax.model import PromptedT5
    from talora_jax.train.step import eval_loss_fn

    from bench.flops import train_step_flops
    from bench.throughput import build_ours, xla_flops, xla_memory

    batch = make_batch(work)
    sides = {}
    original = layers.attention_weights
    for variant in args.variants.split(","):
        method = variant.split("_")[0]
        w = dataclasses.replace(work, dtype="bfloat16") if variant.endswith("bf16") else work
        if variant.endswith("2softmax"):
            layers.attention_weights = two_softmax_weights
        try:
            side = build_ours(w, method, batch=batch)
        finally:
            layers.attention_weights = original
        sides[variant] = side
    # forward only (the loss, no gradient) of the shipped talora, same backbone and batch
    tal = sides.get("talora")
    if tal is not None:
        box = tal["box"]  # the live state (the step donates the previous one)
        fwd = jax.jit(eval_loss_fn(tal["model"])).lower(box["state"].prompt, tal["backbone"],
                                                        tal["batch"]).compile()
        sides["talora_forward"] = dict(run=lambda: float(fwd(box["state"].prompt, tal["backbone"], tal["batch"])
                                                         ["nll_sum"]), compiled=fwd, compile_s=0.0)
    for s in sides.values():
        s["run"]()
    times = {k: [] for k in sides}
    names = list(sides)
    for r in range(args.repeats):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            sides[k]["run"]()
            times[k].append(time.perf_counter() - t)
    model_flops = train_step_flops(
        __import__("bench.common", fromlist=["t5_config"]).t5_config(work), work.batch,
        work.prompt_len + work.src_len, work.tgt_len)
    ref = statistics.median(times["talora"]) if "talora" in times else None
    print(f"workload: {work}")
    print(f"FLOP model: train {model_flops['train'] / 1e9:.2f} GFLOP, forward {model_flops['forward'] / 1e9:.2f}")
    print(f"{'variant':>16} {'median ms':>9} {'min ms':>8} {'vs talora':>9} {'XLA GFLOP':>9} "
          f"{'args MiB':>8} {'temp MiB':>8} {'compile s':>9}")
    for k in names:
        med = statistics.median(times[k])
        mem = xla_memory(sides[k]["compiled"])
        print(f"{k:>16} {med * 1e3:9.1f} {min(times[k]) * 1e3:8.1f} {med / ref if ref else float('nan'):9.2f} "
              f"{xla_flops(sides[k]['compiled']) / 1e9:9.2f} {mem.get('arguments_mib', 0):8.0f} "
              f"{mem.get('temp_mib', 0):8.0f} {sides[k]['compile_s']:9.1f}")


if __name__ == "__main__":
    main()
