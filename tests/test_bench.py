"""The benchmark is checked: its FLOP model against a hand count, and both sides' shapes.

peft is imported only inside the test that runs the real PEFT models (requirements-test.txt
pins it), so the rest of this file also runs where only torch is installed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bench import flops
from bench.common import (QUICK, Workload, describe_ours, describe_peft, hf_config_kwargs, make_batch,
                          peft_config_kwargs, t5_config)
from talora_jax.t5 import T5Config


def _tiny(**kw) -> T5Config:
    base = dict(vocab_size=10, d_model=4, d_kv=2, num_heads=2, d_ff=6, num_layers=1, num_decoder_layers=1,
                feed_forward_proj="relu")
    return T5Config(**{**base, **kw})


def test_flop_model_matches_hand_count_one_layer():
    # B=2 examples, encoder 5 positions (2 prompt + 3 tokens), decoder 3; d=4, H=2, d_kv=2 (inner 4), f=6, V=10.
    # Every matmul is 2*m*k*n, written out by hand.
    enc_fwd = (3 * 2 * 10 * 4 * 4      # q, k, v: [10 tokens, 4] x [4, 4]
               + 2 * 2 * 2 * 5 * 5 * 2  # scores: B*H x [5, 2] x [2, 5]
               + 2 * 2 * 2 * 5 * 5 * 2  # context: B*H x [5, 5] x [5, 2]
               + 2 * 10 * 4 * 4         # out
               + 2 * 10 * 4 * 6         # wi
               + 2 * 10 * 6 * 4)        # wo
    dec_fwd = (3 * 2 * 6 * 4 * 4        # self q, k, v: [6 tokens, 4] x [4, 4]
               + 2 * 2 * 2 * 3 * 3 * 2 * 2  # self scores + context
               + 2 * 6 * 4 * 4          # self out
               + 2 * 6 * 4 * 4          # cross q
               + 2 * 2 * 10 * 4 * 4     # cross k, v over the 10 encoder positions
               + 2 * 2 * 2 * 3 * 5 * 2 * 2  # cross scores + context
               + 2 * 6 * 4 * 4          # cross out
               + 2 * 6 * 4 * 6 + 2 * 6 * 6 * 4)  # wi, wo
    head_fwd = 2 * 6 * 4 * 10
    assert enc_fwd == 3040 and dec_fwd == 3136 and head_fwd == 480
    # Backward w.r.t. the prompt only: dx for weight matmuls, one matmul per prompt-dependent operand of
    # QK^T / AV. Encoder: everything, both operands. Decoder layer 0: its self-attention and the cross query
    # see only target embeddings (no gradient); cross K/V, out, FFN and the scores' K side need one.
    enc_bwd = (960 + 320 + 480 + 480) + 2 * (400 + 400)
    dec_bwd = 640 + 240 + 2 * 240 + 192 + (288 + 288)
    head_bwd = 480
    got = flops.train_step_flops(_tiny(), batch=2, enc_len=5, dec_len=3)
    assert got["forward"] == enc_fwd + dec_fwd + head_fwd == 6656
    assert got["backward"] == enc_bwd + dec_bwd + head_bwd == 6448
    assert got["train"] == 13104
    assert got["train_full"] == 3 * got["forward"]  # full fine-tuning: dx and dW everywhere


def test_flop_model_later_decoder_layers_get_full_backward_and_gated_ffn():
    one = flops.train_step_flops(_tiny(), 2, 5, 3)
    two = flops.train_step_flops(_tiny(num_decoder_layers=2), 2, 5, 3)
    dec_layer_fwd = 3136
    assert two["forward"] - one["forward"] == dec_layer_fwd
    # Layer 1's input depends on the prompt: dx for every weight matmul, both operands of QK^T and AV.
    weights = 576 + 192 + 192 + 640 + 192 + 288 + 288
    acts = 144 + 144 + 240 + 240
    assert two["backward"] - one["backward"] == weights + 2 * acts
    gated = flops.train_step_flops(_tiny(feed_forward_proj="gated-gelu"), 2, 5, 3)
    assert gated["forward"] - one["forward"] == 2 * 10 * 4 * 6 + 2 * 6 * 4 * 6  # wi_1, encoder + decoder


def test_flop_model_close_to_4n_and_to_xla_for_our_step():
    work = Workload(**QUICK)
    cfg = t5_config(work)
    enc = work.prompt_len + work.src_len
    model = flops.train_step_flops(cfg, work.batch, enc, work.tgt_len)
    assert 1.9 < model["train"] / model["forward"] < 2.2  # ~4N, not 6N
    approx = flops.approx_4n(cfg, work.batch, enc, work.tgt_len)
    assert 0.7 < approx / model["train"] < 1.1
    # XLA's own count for the compiled step (matmuls + elementwise) must not be far above the model:
    # a step that computed backbone weight gradients would be ~1.5x it.
    from bench.throughput import build_ours, xla_flops
    xla = xla_flops(build_ours(work, "talora")["compiled"])
    assert 1.0 <= xla / model["train"] < 1.25, (xla, model)


@pytest.mark.parametrize("method", ["pt", "mpt"])
def test_both_sides_run_the_same_shapes(method):
    work = Workload(**QUICK)
    batch = make_batch(work)
    ours, peft = describe_ours(work, method, batch), describe_peft(work, method, batch)
    assert ours == peft
    assert ours["encoder_len"] == work.prompt_len + work.src_len and ours["decoder_len"] == work.tgt_len
    # talora's [T_k ; P0] has the same total prompt length as PEFT's virtual tokens.
    assert describe_ours(work, "talora", batch)["encoder_len"] == peft["encoder_len"]
    for key in ("input_ids", "attention_mask"):
        assert batch[key].shape == (work.batch, work.src_len)
    np.testing.assert_array_equal(batch["decoder_input_ids"][:, 1:], batch["labels"][:, :-1])
    assert (batch["decoder_input_ids"][:, 0] == t5_config(work).decoder_start_token_id).all()


def test_shape_check_catches_peft_prefixing_the_decoder():
    # PEFT's default num_transformer_submodules=2 would also prefix MPT's decoder input: not the same work.
    work = Workload(**QUICK)
    batch = make_batch(work)
    import bench.common as common
    real = common.peft_config_kwargs
    try:
        common.peft_config_kwargs = lambda w, m: dict(real(w, m), num_transformer_submodules=2)
        assert common.describe_peft(work, "mpt", batch) != describe_ours(work, "mpt", batch)
    finally:
        common.peft_config_kwargs = real


def test_hf_side_config_and_shapes_match_ours():
    import torch
    from transformers import T5Config as HFConfig, T5ForConditionalGeneration
    work = Workload(**QUICK)
    ours = t5_config(work)
    hf = HFConfig(**hf_config_kwargs(work))
    for f in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
              "relative_attention_num_buckets", "relative_attention_max_distance"):
        assert getattr(hf, f) == getattr(ours, f), f
    assert hf.dropout_rate == 0.0  # our T5 has no dropout: equal work
    assert peft_config_kwargs(work, "pt")["num_virtual_tokens"] == work.prompt_len
    model = T5ForConditionalGeneration(hf).eval()
    batch = make_batch(work)
    enc_len = describe_ours(work, "pt", batch)["encoder_len"]
    with torch.no_grad():
        out = model(inputs_embeds=torch.zeros(work.batch, enc_len, ours.d_model),
                    decoder_input_ids=torch.from_numpy(batch["decoder_input_ids"]).long())
    assert out.logits.shape == (work.batch, work.tgt_len, ours.vocab_size)
    assert out.encoder_last_hidden_state.shape == (work.batch, enc_len, ours.d_model)


def test_real_peft_models_run_the_described_shapes():
    import copy
    from bench.throughput import build_peft, hf_base, peft_shapes
    work = dataclasses.replace(Workload(**QUICK), batch=2)
    batch = make_batch(work)
    base = hf_base(work)
    for method in ("pt", "mpt"):
        side = build_peft(work, method, copy.deepcopy(base), batch)
        want = describe_peft(work, method, batch)
        seen = peft_shapes(side)
        assert seen == {"encoder": (2, want["encoder_len"]), "decoder": (2, want["decoder_len"])}
