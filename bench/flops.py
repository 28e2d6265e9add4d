"""FLOP model of a prompt-tuning train step over a frozen T5, and a matmul peak.

Counted per matmul from the T5 config (2·m·k·n FLOPs each), for a batch of B
examples with encoder length S (prompt positions included) and decoder length T:

  forward   every projection, the FFN, the attention score (QKᵀ) and context (AV)
            matmuls of encoder self-, decoder self- and cross-attention, and the
            LM head.
  backward  gradients w.r.t. the prompt only. The backbone is frozen, so a weight
            matmul ``y = x W`` costs one matmul (dx = dy Wᵀ) instead of two (no
            dW), and an activation-activation matmul (QKᵀ, AV) costs one matmul
            per operand that depends on the prompt. Decoder layer 0's
            self-attention sees only target embeddings, so nothing in it needs a
            gradient; its cross-attention query does not either. JAX's autodiff
            drops those (symbolic-zero tangents), and so does this count.

So a frozen-backbone step is ~2x the forward (about 4N FLOPs per token, N the
matmul parameters a token passes through) instead of ~3x (6N) for full
fine-tuning. Norms, softmax, masks and the loss are not matmuls and are not
counted (XLA's own ``cost_analysis`` counts them; throughput.py prints both).

    python bench/flops.py --preset t5-small --batch 8 --src_len 128 --tgt_len 16 --prompt_len 100
"""

from __future__ import annotations

import argparse
import time
from typing import Any


def _mm(m: int, k: int, n: int) -> int:
    return 2 * m * k * n


def matmul_table(cfg: Any, batch: int, enc_len: int, dec_len: int) -> list[dict[str, Any]]:
    """Every matmul of one step: name, forward FLOPs, and backward FLOPs (frozen vs full)."""
    B, S, T = batch, enc_len, dec_len
    d, f, H, k, V = cfg.d_model, cfg.d_ff, cfg.num_heads, cfg.d_kv, cfg.vocab_size
    inner = H * k
    n_in = 2 if cfg.is_gated_ffn else 1
    rows: list[dict[str, Any]] = []

    def weight(name: str, fwd: int, needs_dx: bool = True) -> None:
        # frozen: dx only (if the input depends on the prompt); full fine-tuning: dx + dW.
        rows.append(dict(name=name, fwd=fwd, bwd=fwd if needs_dx else 0, bwd_full=2 * fwd))

    def act(name: str, fwd: int, grad_operands: int) -> None:
        rows.append(dict(name=name, fwd=fwd, bwd=grad_operands * fwd, bwd_full=2 * fwd))

    def ffn(prefix: str, tokens: int) -> None:
        weight(f"{prefix}.ffn_in", n_in * _mm(tokens, d, f))
        weight(f"{prefix}.ffn_out", _mm(tokens, f, d))

    for i in range(cfg.num_layers):
        p = f"enc{i}"
        weight(f"{p}.qkv", 3 * _mm(B * S, d, inner))
        act(f"{p}.scores", B * H * _mm(S, k, S), 2)
        act(f"{p}.context", B * H * _mm(S, S, k), 2)
        weight(f"{p}.out", _mm(B * S, inner, d))
        ffn(p, B * S)
    for i in range(cfg.num_decoder_layers):
        p = f"dec{i}"
        first = i == 0  # layer 0's self-attention and cross query see only the target embeddings
        weight(f"{p}.self_qkv", 3 * _mm(B * T, d, inner), needs_dx=not first)
        act(f"{p}.self_scores", B * H * _mm(T, k, T), 0 if first else 2)
        act(f"{p}.self_context", B * H * _mm(T, T, k), 0 if first else 2)
        weight(f"{p}.self_out", _mm(B * T, inner, d), needs_dx=not first)
        weight(f"{p}.cross_q", _mm(B * T, d, inner), needs_dx=not first)
        weight(f"{p}.cross_kv", 2 * _mm(B * S, d, inner))
        act(f"{p}.cross_scores", B * H * _mm(T, k, S), 1 if first else 2)
        act(f"{p}.cross_context", B * H * _mm(T, S, k), 2)
        weight(f"{p}.cross_out", _mm(B * T, inner, d))
        ffn(p, B * T)
    weight("lm_head", _mm(B * T, d, V))
    return rows


def train_step_flops(cfg: Any, batch: int, enc_len: int, dec_len: int) -> dict[str, int]:
    """Totals: ``forward``, ``backward`` (frozen backbone), ``train`` = their sum, and
    ``train_full`` (what full fine-tuning would cost, for comparison)."""
    rows = matmul_table(cfg, batch, enc_len, dec_len)
    fwd = sum(r["fwd"] for r in rows)
    bwd = sum(r["bwd"] for r in rows)
    full = sum(r["bwd_full"] for r in rows)
    return dict(forward=fwd, backward=bwd, train=fwd + bwd, train_full=fwd + full)


def matmul_params(cfg: Any) -> dict[str, int]:
    """Matmul parameters a token passes through: encoder stack, decoder stack, LM head."""
    d, f, inner = cfg.d_model, cfg.d_ff, cfg.num_heads * cfg.d_kv
    ffn = (3 if cfg.is_gated_ffn else 2) * d * f
    return dict(encoder=cfg.num_layers * (4 * d * inner + ffn),
                decoder=cfg.num_decoder_layers * (8 * d * inner + ffn), lm_head=d * cfg.vocab_size)


def approx_4n(cfg: Any, batch: int, enc_len: int, dec_len: int) -> int:
    """The rule of thumb: 4·N per token, ignoring attention scores and the layer-0 pruning
    (cross-attention K/V are per encoder token, so they are charged to encoder tokens)."""
    d, inner = cfg.d_model, cfg.num_heads * cfg.d_kv
    p = matmul_params(cfg)
    cross_kv = cfg.num_decoder_layers * 2 * d * inner
    enc_tokens, dec_tokens = batch * enc_len, batch * dec_len
    return 4 * (enc_tokens * (p["encoder"] + cross_kv) + dec_tokens * (p["decoder"] - cross_kv + p["lm_head"]))


def matmul_peak(n: int = 1024, repeats: int = 10, dtype: str = "float32") -> dict[str, float]:
    """Best-of-``repeats`` FLOP/s of one jitted n x n x n matmul (the machine's practical peak)."""
    import jax
    import jax.numpy as jnp
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
    mm = jax.jit(jnp.matmul)
    mm(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        mm(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return dict(n=n, seconds=best, flops_per_s=_mm(n, n, n) / best)


def torch_matmul_peak(n: int = 1024, repeats: int = 10) -> dict[str, float]:
    """The same micro-benchmark through torch (its BLAS can differ from XLA's)."""
    import torch
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return dict(n=n, seconds=best, flops_per_s=_mm(n, n, n) / best)


def main() -> None:
    import os
    import sys
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from bench.common import Workload, t5_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="t5-small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--src_len", type=int, default=128)
    parser.add_argument("--tgt_len", type=int, default=16)
    parser.add_argument("--prompt_len", type=int, default=100)
    parser.add_argument("--peak", action="store_true", help="also measure the matmul peak here")
    args = parser.parse_args()
    work = Workload(args.preset, args.batch, args.src_len, args.tgt_len, args.prompt_len)
    cfg = t5_config(work)
    enc = args.prompt_len + args.src_len
    totals = train_step_flops(cfg, args.batch, enc, args.tgt_len)
    print(f"{args.preset}: batch {args.batch}, encoder {enc} (prompt {args.prompt_len}), decoder {args.tgt_len}")
    for key, val in totals.items():
        print(f"  {key:>10}: {val / 1e9:10.2f} GFLOP")
    print(f"  train/forward = {totals['train'] / totals['forward']:.2f} (full fine-tuning: "
          f"{totals['train_full'] / totals['forward']:.2f});  4N rule of thumb: "
          f"{approx_4n(cfg, args.batch, enc, args.tgt_len) / 1e9:.2f} GFLOP")
    if args.peak:
        peak = matmul_peak()
        print(f"  matmul peak (jax, f32, n={peak['n']}): {peak['flops_per_s'] / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
