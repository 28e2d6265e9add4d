"""Prompt modules, init strategies, transfer init, config errors, accounting and the gating formula.

Everything here runs on tiny shapes without a backbone forward pass, except the
single-attention check against a direct NumPy implementation of DESIGN.md §2.
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.prompt_defaults import get_prompt_config
from talora_jax.prompts import (PromptConfigError, abstract_prompt_params, build_prompt_module,
                                count_prompt_params, count_tree, init_prompt_params, resolve_prompt_spec,
                                transfer_init)
from talora_jax.t5 import T5Config, preset
from talora_jax.t5.layers import Attention, attention_weights

CFG = T5Config(vocab_size=50, d_model=8, d_kv=3, d_ff=12, num_layers=2, num_decoder_layers=3, num_heads=2,
               relative_attention_num_buckets=8, relative_attention_max_distance=20)


def prompt_config(base_method, **overrides):
    method = base_method
    cfg = get_prompt_config(method)
    cfg.num_tasks = 3
    cfg.shared_len, cfg.task_len, cfg.rank = 4, (3 if method in ("talora", "pt") else 0), 2
    for key, value in overrides.items():
        node = cfg
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = value
    return cfg


@pytest.fixture(scope="module")
def table():
    return np.random.default_rng(0).normal(size=(CFG.vocab_size, CFG.d_model)).astype(np.float32)


# ---------------------------------------------------------------- gating formula (DESIGN.md §2)

def numpy_gated_weights(scores, mask, gate, gated_len):
    """a = softmax over valid non-gated keys; tanh(g_h) * softmax over valid gated keys."""
    b, h, q, k = scores.shape
    mask = np.broadcast_to(mask, scores.shape)
    out = np.zeros_like(scores, dtype=np.float64)
    for bi in range(b):
        for hi in range(h):
            for qi in range(q):
                for segment, scale in ((range(gated_len, k), 1.0), (range(gated_len), np.tanh(gate[hi]))):
                    keys = [j for j in segment if mask[bi, hi, qi, j]]
                    if not keys:
                        continue
                    s = scores[bi, hi, qi, keys].astype(np.float64)
                    e = np.exp(s - s.max())
                    out[bi, hi, qi, keys] = scale * e / e.sum()
    return out


def padded_key_mask(batch, keys, gated_len):
    mask = np.ones((batch, 1, 1, keys), bool)
    mask[1, ..., keys - 3:] = False     # right padding of the input
    mask[0, ..., 1] = False             # a padded key inside the gated segment
    mask[2, ..., gated_len + 1] = False  # a padded key right after it
    return mask


def test_attention_weights_match_numpy_formula():
    rng = np.random.default_rng(1)
    scores = rng.normal(scale=3.0, size=(3, 2, 4, 9)).astype(np.float32)
    gate = rng.uniform(-2, 2, size=(2,)).astype(np.float32)
    mask = padded_key_mask(3, 9, 3)
    got = np.asarray(attention_weights(jnp.asarray(scores), jnp.asarray(mask), jnp.asarray(gate), 3))
    np.testing.assert_allclose(got, numpy_gated_weights(scores, mask, gate, 3), atol=1e-6)
    # gated_len 0, or no gate for the layer: plain masked softmax over every valid key
    plain = numpy_gated_weights(scores, mask, gate, 0)
    np.testing.assert_allclose(np.asarray(attention_weights(jnp.asarray(scores), jnp.asarray(mask), None, 3)),
                               plain, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(attention_weights(jnp.asarray(scores), jnp.asarray(mask), jnp.asarray(gate), 0)), plain, atol=1e-6)


def test_gated_attention_call_matches_numpy():
    rng = np.random.default_rng(2)
    b, q_len, k_len, m = 3, 4, 9, 3
    x_q = rng.normal(size=(b, q_len, CFG.d_model)).astype(np.float32)
    x_kv = rng.normal(size=(b, k_len, CFG.d_model)).astype(np.float32)
    bias = rng.normal(size=(1, CFG.num_heads, q_len, k_len)).astype(np.float32)
    gate = np.array([0.7, -1.3], np.float32)
    mask = padded_key_mask(b, k_len, m)
    attn = Attention(CFG)
    params = attn.init(jax.random.PRNGKey(0), x_q, x_kv, mask)["params"]
    got = attn.apply({"params": params}, x_q, x_kv, mask, bias, jnp.asarray(gate), m)
    p = jax.tree.map(lambda v: np.asarray(v, np.float64), nn.unbox(params))
    q = np.einsum("bsd,dhk->bshk", x_q, p["query"])
    k = np.einsum("bsd,dhk->bshk", x_kv, p["key"])
    v = np.einsum("bsd,dhk->bshk", x_kv, p["value"])
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) + bias
    weights = numpy_gated_weights(scores, mask, gate, m)
    want = np.einsum("bqhd,hde->bqe", np.einsum("bhqk,bkhd->bqhd", weights, v), p["out"])
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


# ---------------------------------------------------------------- prompt modules

def test_mpt_prompt_is_shared_times_low_rank_factors(table):
    cfg = prompt_config("mpt")
    module = build_prompt_module(cfg, CFG)
    params = init_prompt_params(cfg, CFG, jax.random.PRNGKey(0), table)
    assert sorted(params) == ["shared_prompt", "task_u", "task_v"]
    rng = np.random.default_rng(3)
    params = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
    task_ids = np.array([2, 0, 1, 2])
    out = module.apply({"params": params}, jnp.asarray(task_ids))
    assert out.gated_len == 0 and out.enc_gates is None and out.cross_gates is None
    for row, k in enumerate(task_ids):
        want = params["shared_prompt"] * (params["task_u"][k] @ params["task_v"][k].T)
        np.testing.assert_allclose(np.asarray(out.embeds[row]), want, rtol=1e-5, atol=1e-5)


def test_mpt_starts_at_the_shared_prompt(table):
    cfg = prompt_config("mpt", rank=1, **{"init.factor_std": 0.0})
    params = init_prompt_params(cfg, CFG, jax.random.PRNGKey(0), table)
    out = build_prompt_module(cfg, CFG).apply({"params": params}, jnp.array([0, 2]))
    np.testing.assert_allclose(np.asarray(out.embeds[1]), np.asarray(params["shared_prompt"]), atol=1e-6)


def test_talora_prompt_layout_and_gates(table):
    cfg = prompt_config("talora", **{"gates.encoder_layers": "1", "gates.cross_layers": "0,2"})
    module = build_prompt_module(cfg, CFG)
    params = init_prompt_params(cfg, CFG, jax.random.PRNGKey(0), table)
    shapes = {k: tuple(v.shape) for k, v in params.items()}
    assert shapes == {"shared_prompt": (4, 8), "basis": (2, 8), "task_coeffs": (3, 3, 2),
                      "enc_gate": (2, 2), "cross_gate": (3, 2)}
    assert not np.any(params["enc_gate"]) and not np.any(params["cross_gate"])  # exactly zero
    assert np.all(np.asarray(params["task_coeffs"]) != 0) and np.all(np.asarray(params["basis"]) != 0)
    params = {**params, "enc_gate": jnp.arange(4.0).reshape(2, 2), "cross_gate": jnp.arange(6.0).reshape(3, 2)}
    task_ids = np.array([1, 0, 2])
    out = module.apply({"params": params}, jnp.asarray(task_ids))
    assert out.gated_len == 3 and out.embeds.shape == (3, 7, 8)
    for row, k in enumerate(task_ids):
        want = np.concatenate([np.asarray(params["task_coeffs"][k]) @ np.asarray(params["basis"]),
                               np.asarray(params["shared_prompt"])])
        np.testing.assert_allclose(np.asarray(out.embeds[row]), want, atol=1e-6)
    assert out.enc_gates[0] is None and list(out.enc_gates[1]) == [2.0, 3.0]
    assert out.cross_gates[1] is None and list(out.cross_gates[2]) == [4.0, 5.0]


def test_pt_shared_and_per_task(table):
    shared = init_prompt_params(prompt_config("pt", task_len=0), CFG, jax.random.PRNGKey(0), table)
    assert list(shared) == ["shared_prompt"]
    cfg = prompt_config("pt", shared_len=0, task_len=5)
    params = init_prompt_params(cfg, CFG, jax.random.PRNGKey(0), table)
    assert list(params) == ["task_prompts"] and params["task_prompts"].shape == (3, 5, 8)
    out = build_prompt_module(cfg, CFG).apply({"params": params}, jnp.array([2, 0]))
    np.testing.assert_array_equal(np.asarray(out.embeds[0]), np.asarray(params["task_prompts"][2]))
    assert out.gated_len == 0


# ---------------------------------------------------------------- init strategies

def test_vocab_init_copies_embeddings_of_sampled_ids(table):
    cfg = prompt_config("pt", task_len=0, shared_len=6, **{"init.vocab_range": (3, 20)})
    prompt = np.asarray(init_prompt_params(cfg, CFG, jax.random.PRNGKey(0), table)["shared_prompt"])
    ids = [int(np.flatnonzero((table == row).all(axis=1))[0]) for row in prompt]
    assert all(3 <= i < 20 for i in ids) and len(set(ids)) == 6  # no repeats when the range allows


def test_uniform_and_label_word_init(table):
    cfg = prompt_config("pt", task_len=0, **{"init.prompt": "uniform", "init.uniform_scale": 0.25})
    prompt = np.asarray(init_prompt_params(cfg, CFG, jax.random.PRNGKey(0), None)["shared_prompt"])
    assert np.all(np.abs(prompt) <= 0.25) and np.std(prompt) > 0.05
    labels = ((7,), (9, 11))
    cfg = prompt_config("pt", task_len=0, **{"init.prompt": "label_words", "init.label_token_ids": labels})
    prompt = np.asarray(init_prompt_params(cfg, CFG, jax.random.PRNGKey(0), table)["shared_prompt"])
    np.testing.assert_allclose(prompt[0], table[7])
    np.testing.assert_allclose(prompt[1], (table[9] + table[11]) / 2, rtol=1e-6)
    assert all((table == row).all(axis=1).any() for row in prompt[2:])


def test_npy_init_loads_and_checks_shape(tmp_path, table):
    good = np.random.default_rng(4).normal(size=(4, 8)).astype(np.float32)
    np.save(tmp_path / "good.npy", good)
    cfg = prompt_config("talora", **{"init.prompt": "npy", "init.npy_path": str(tmp_path / "good.npy")})
    params = init_prompt_params(cfg, CFG, jax.random.PRNGKey(0), table)
    np.testing.assert_array_equal(params["shared_prompt"], good)
    os.remove(tmp_path / "good.npy")  # init reads the file; apply and shape queries never do
    out = build_prompt_module(cfg, CFG).apply({"params": params}, jnp.array([0]))
    np.testing.assert_array_equal(out.embeds[0, 3:], good)
    assert abstract_prompt_params(cfg, CFG)["shared_prompt"].shape == (4, 8)
    np.save(tmp_path / "bad.npy", good[:3])
    cfg.init.npy_path = str(tmp_path / "bad.npy")
    with pytest.raises(PromptConfigError, match=r"shape \(3, 8\).*needs shape \(4, 8\)"):
        init_prompt_params(cfg, CFG, jax.random.PRNGKey(0), table)
    cfg.init.npy_path = str(tmp_path / "missing.npy")
    with pytest.raises(PromptConfigError, match="does not exist"):
        init_prompt_params(cfg, CFG, jax.random.PRNGKey(0), table)


def test_vocab_init_without_embeddings_is_a_clear_error():
    with pytest.raises(PromptConfigError, match="embedding"):
        init_prompt_params(prompt_config("pt", task_len=0), CFG, jax.random.PRNGKey(0), None)


# ---------------------------------------------------------------- transfer init

def test_transfer_init_mean_named_and_random(table):
    source_cfg = prompt_config("talora")
    source = init_prompt_params(source_cfg, CFG, jax.random.PRNGKey(0), table)
    source = {**source, "enc_gate": source["enc_gate"] + 0.5}
    target_cfg = prompt_config("talora", num_tasks=2)
    mean = transfer_init(source, target_cfg, CFG)
    assert mean["task_coeffs"].shape == (2, 3, 2)
    for t in range(2):
        np.testing.assert_allclose(mean["task_coeffs"][t], np.mean(source["task_coeffs"], axis=0), atol=1e-6)
    for name in ("shared_prompt", "basis", "enc_gate", "cross_gate"):
        np.testing.assert_array_equal(mean[name], source[name])
    named = transfer_init(source, target_cfg, CFG, strategy="task", source_tasks=["a", "b", "c"], source_task="b")
    np.testing.assert_array_equal(named["task_coeffs"][1], source["task_coeffs"][1])
    rand = transfer_init(source, target_cfg, CFG, strategy="random", rng=jax.random.PRNGKey(5), embedding=table)
    assert not np.allclose(rand["task_coeffs"][0], rand["task_coeffs"][1])
    np.testing.assert_array_equal(rand["basis"], source["basis"])
    mpt = init_prompt_params(prompt_config("mpt"), CFG, jax.random.PRNGKey(0), table)
    out = transfer_init(mpt, prompt_config("mpt", num_tasks=1), CFG)
    np.testing.assert_allclose(out["task_u"][0], np.mean(mpt["task_u"], axis=0), atol=1e-6)
    with pytest.raises(PromptConfigError, match="not among the source tasks"):
        transfer_init(source, target_cfg, CFG, strategy="task", source_tasks=["a", "b", "c"], source_task="z")
    with pytest.raises(PromptConfigError, match="basis has shape"):
        transfer_init(source, prompt_config("talora", rank=3), CFG)
    with pytest.raises(PromptConfigError, match="leaves"):
        transfer_init(source, prompt_config("talora", **{"gates.cross": False}), CFG)


# ---------------------------------------------------------------- config errors

@pytest.mark.parametrize("overrides, message", [
    (dict(method="lora"), r"method='lora' is unknown.*'pt', 'mpt' or 'talora'"),
    (dict(method="tallora"), r"Did you mean 'talora'"),
    (dict(rank=0), r"rank=0 must be a positive integer"),
    (dict(rank=-2), r"rank=-2 must be a positive integer"),
    (dict(shared_len=0, task_len=0), r"no trainable prompt at all"),
    (dict(num_tasks=None), r"num_tasks is required"),
    ({"gates.encoder_layers": "0,2"}, r"encoder_layers contains 2.*2 encoder layers.*0\.\.1"),
    ({"gates.cross_layers": "3"}, r"cross_layers contains 3.*3 decoder layers"),
    ({"gates.cross_layers": "-1"}, r"cross_layers contains -1"),
    ({"init.coeff_std": 0.0}, r"coeff_std=0.0 must be a positive number"),
    ({"init.prompt": "zeros"}, r"init.prompt='zeros' is unknown"),
])
def test_bad_talora_config_errors(overrides, message):
    with pytest.raises(PromptConfigError, match=message):
        resolve_prompt_spec(prompt_config("talora", **overrides), CFG)


@pytest.mark.parametrize("method, overrides, message", [
    ("mpt", dict(rank=0), r"rank=0 must be a positive integer"),
    ("mpt", dict(shared_len=0), r"no trainable prompt at all"),
    ("mpt", dict(task_len=4), r"mpt has no separate task prompt"),
    ("pt", dict(shared_len=0, task_len=0), r"no trainable prompt at all.*method='none'"),
])
def test_bad_baseline_config_errors(method, overrides, message):
    with pytest.raises(PromptConfigError, match=message):
        resolve_prompt_spec(prompt_config(method, **overrides), CFG)


def test_missing_field_is_required_not_defaulted():
    cfg = prompt_config("talora").to_dict()
    del cfg["task_len"]
    with pytest.raises(PromptConfigError, match=r"prompt.task_len is required.*prompt_defaults"):
        resolve_prompt_spec(cfg, CFG)


def test_default_configs_resolve():
    for method, (l, m, r) in {"talora": (100, 32, 8), "mpt": (100, 0, 1), "pt": (100, 0, 0)}.items():
        cfg = get_prompt_config(method)
        cfg.num_tasks = 6
        spec = resolve_prompt_spec(cfg, preset("t5-base"))
        assert (spec.shared_len, spec.task_len, spec.rank) == (l, m, r)
    assert resolve_prompt_spec(prompt_config("talora"), CFG).gates.cross_layers == (0, 1, 2)
    assert resolve_prompt_spec(prompt_config("talora", **{"gates.cross_layers": "2, 0"}), CFG).gates.cross_layers \
        == (0, 2)


# ---------------------------------------------------------------- parameter accounting

@pytest.mark.parametrize("method, overrides", [
    ("talora", {}), ("talora", {"gates.encoder_layers": "0", "gates.cross": False}), ("talora", dict(task_len=0)),
    ("pt", dict(task_len=0)), ("pt", dict(shared_len=0, task_len=5)), ("pt", {}), ("mpt", {}),
])
def test_accounting_matches_the_parameter_tree(method, overrides, table):
    cfg = prompt_config(method, **overrides)
    params = init_prompt_params(cfg, CFG, jax.random.PRNGKey(0), table)
    assert count_prompt_params(cfg, CFG) == count_tree(params, cfg, CFG)


def test_accounting_at_t5_base():
    base = preset("t5-base")

    def counts(method, **overrides):
        cfg = get_prompt_config(method)
        cfg.num_tasks = 6
        cfg.update(overrides)
        return count_prompt_params(cfg, base)

    talora = counts("talora")
    assert (talora.shared, talora.per_task) == (100 * 768 + 8 * 768 + 2 * 12 * 12, 32 * 8)
    assert talora.total == 83232 + 6 * 256
    assert (counts("pt").shared, counts("pt").per_task) == (76800, 0)
    assert (counts("pt", shared_len=0, task_len=100).per_task) == 76800
    assert (counts("mpt").shared, counts("mpt").per_task) == (76800, 100 + 768)
    assert "talora: shared 83,232 + 256/task x 6 tasks" in talora.summary()
