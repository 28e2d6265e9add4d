"""PromptedT5 over tiny random T5s loaded with load_pretrained: DESIGN.md §2 invariants (a)-(e),
per-example task selection, cached generation and the prompt-only gradient.

Everything is float32 and eager (no jit), so the file costs no compiles beyond op dispatch.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs.prompt_defaults import get_prompt_config
from talora_jax.losses import loss_and_grad, token_cross_entropy
from talora_jax.model import PromptedT5, init_prompt
from talora_jax.prompts import PromptConfigError
from talora_jax.t5 import T5, load_pretrained
from tests.t5_fixtures import padded_batch

TASKS = 3


def prompt_config(method, **overrides):
    cfg = get_prompt_config(method)
    cfg.num_tasks = TASKS
    cfg.shared_len, cfg.task_len, cfg.rank = 4, (3 if method == "talora" else 0), 2
    cfg.update(overrides)
    return cfg


def _load(fixture):
    path, torch_model = fixture
    config, params = load_pretrained(path)
    return config, jax.tree.map(jnp.asarray, params), torch_model


@pytest.fixture(scope="module")
def v1(tiny_v1_dir):
    return _load(tiny_v1_dir)


@pytest.fixture(scope="module")
def v11(tiny_v11_dir):
    return _load(tiny_v11_dir)


@pytest.fixture(scope="module", params=["v1", "v11"])
def backbone(request):
    """Both variants, for the invariants that are cheap to check twice."""
    return request.getfixturevalue(request.param)


def make_batch(config, task_ids=(0, 2, 1), seed=0):
    ids, mask, dec, dmask = padded_batch(config.vocab_size, batch=len(task_ids), seed=seed)
    labels = np.concatenate([dec[:, 1:], np.ones_like(dec[:, :1])], axis=1) * dmask
    return dict(task_ids=jnp.asarray(task_ids, jnp.int32), input_ids=jnp.asarray(ids),
                attention_mask=jnp.asarray(mask), decoder_input_ids=jnp.asarray(dec),
                decoder_attention_mask=jnp.asarray(dmask), labels=jnp.asarray(labels))


# One compile per (model, shapes): far cheaper than eager op-by-op dispatch of a whole T5.
_forward = jax.jit(lambda model, variables, batch: model.apply(variables, batch), static_argnums=0)
_loss_and_grad = jax.jit(loss_and_grad, static_argnames="model")


@functools.partial(jax.jit, static_argnums=(0, 1))
def _method(model, name, variables, *args):
    return model.apply(variables, *args, method=getattr(PromptedT5, name))


def logits(model, backbone_params, prompt_params, batch):
    return np.asarray(_forward(model, {"params": {"backbone": backbone_params, "prompt": prompt_params}}, batch))


def talora_params(model, backbone_params, seed=0, gate=0.0):
    """TA-LoRA params with large random A, B (so a leak would show) and constant gates."""
    params = init_prompt(model, jax.random.PRNGKey(seed), backbone_params)
    rng = np.random.default_rng(seed)
    for name in ("task_coeffs", "basis"):
        params[name] = jnp.asarray(rng.normal(scale=2.0, size=params[name].shape), jnp.float32)
    for name in ("enc_gate", "cross_gate"):
        params[name] = jnp.full(params[name].shape, gate, jnp.float32)
    return params


def test_gates_at_zero_equal_prompt_tuning(backbone):
    """Invariant (a); and with the gates open the task prompt changes the output."""
    config, bb, _ = backbone
    talora = PromptedT5(config, prompt_config("talora"))
    pt = PromptedT5(config, prompt_config("pt"))
    batch = make_batch(config)
    closed = talora_params(talora, bb)
    reference = logits(pt, bb, {"shared_prompt": closed["shared_prompt"]}, batch)
    np.testing.assert_allclose(logits(talora, bb, closed, batch), reference, atol=1e-5, rtol=0)
    opened = {**closed, "enc_gate": closed["enc_gate"] + 0.5, "cross_gate": closed["cross_gate"] - 0.5}
    assert np.max(np.abs(logits(talora, bb, opened, batch) - reference)) > 1e-3


def test_task_len_zero_is_prompt_tuning(backbone):
    """Invariant (b): talora with m = 0 has only P0 and is exactly pt."""
    config, bb, _ = backbone
    talora = PromptedT5(config, prompt_config("talora", task_len=0))
    params = init_prompt(talora, jax.random.PRNGKey(1), bb)
    assert list(params) == ["shared_prompt"]
    batch = make_batch(config)
    np.testing.assert_array_equal(logits(talora, bb, params, batch),
                                  logits(PromptedT5(config, prompt_config("pt")), bb, params, batch))


def test_no_prompt_is_the_backbone(backbone):
    """Invariant (c): method 'none' gives the backbone's logits, and matches the torch checkpoint."""
    config, bb, torch_model = backbone
    batch = make_batch(config)
    got = logits(PromptedT5(config, prompt_config("none")), bb, {}, batch)
    plain = jax.jit(T5(config).apply)({"params": bb}, batch["input_ids"], batch["attention_mask"],
                                      batch["decoder_input_ids"], batch["decoder_attention_mask"])
    np.testing.assert_allclose(got, np.asarray(plain), atol=1e-6, rtol=0)
    with torch.no_grad():
        tensors = {k: torch.tensor(np.array(batch[k]), dtype=torch.long) for k in
                   ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")}
        want = torch_model(**tensors).logits
    valid = np.asarray(batch["decoder_attention_mask"], bool)
    np.testing.assert_allclose(got[valid], want.numpy()[valid], atol=1e-4)


def test_gradients_reach_gates_then_low_rank_parts(v11):
    """Invariants (d) and (e)."""
    config, bb, _ = v11
    model = PromptedT5(config, prompt_config("talora"))
    batch = make_batch(config)
    params = init_prompt(model, jax.random.PRNGKey(2), bb)
    assert not np.any(params["enc_gate"]) and not np.any(params["cross_gate"])
    (loss, metrics), grads = _loss_and_grad(params, bb, batch, model=model)
    assert np.isfinite(loss) and float(metrics["num_tokens"]) == float(np.sum(batch["decoder_attention_mask"]))
    # (e): the gradient tree is exactly the prompt tree; no backbone leaf anywhere
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert "backbone" not in jax.tree_util.keystr(jax.tree_util.tree_flatten_with_path(grads)[0])
    # (d) at step 0: gates receive gradient; A and B cannot yet (tanh(0) = 0 blocks them)
    assert np.all(np.abs(grads["enc_gate"]) > 0) and np.all(np.abs(grads["cross_gate"]) > 0)
    assert np.max(np.abs(grads["task_coeffs"])) == 0 and np.max(np.abs(grads["basis"])) == 0
    assert np.max(np.abs(grads["shared_prompt"])) > 0
    opened = {**params, "enc_gate": params["enc_gate"] + 0.3, "cross_gate": params["cross_gate"] + 0.3}
    _, grads = _loss_and_grad(opened, bb, batch, model=model)
    assert np.max(np.abs(grads["basis"])) > 0
    used = np.abs(np.asarray(grads["task_coeffs"])).reshape(TASKS, -1).max(axis=1)
    assert np.all(used > 0)  # the batch holds tasks 0, 2, 1: every A_k gets a gradient


def test_mixed_batch_uses_each_examples_task(v11):
    config, bb, _ = v11
    model = PromptedT5(config, prompt_config("talora"))
    params = talora_params(model, bb, seed=3, gate=0.7)
    batch = make_batch(config, task_ids=(2, 0, 1))
    mixed = logits(model, bb, params, batch)
    for row in range(3):
        single = {k: v[row:row + 1] for k, v in batch.items()}
        np.testing.assert_allclose(mixed[row], logits(model, bb, params, single)[0], atol=1e-5)
    swapped = logits(model, bb, params, {**batch, "task_ids": jnp.asarray([0, 0, 0])})
    assert np.max(np.abs(swapped[0] - mixed[0])) > 1e-3  # another task's A_k changes the output


def test_cached_decoding_equals_full_pass(v1):
    config, bb, _ = v1
    model = PromptedT5(config, prompt_config("talora", **{"gates": dict(
        encoder=True, cross=True, encoder_layers="all", cross_layers="0")}))
    params = talora_params(model, bb, seed=4, gate=-0.6)
    variables = {"params": {"backbone": bb, "prompt": params}}
    batch = make_batch(config)
    dec = batch["decoder_input_ids"]
    encoded, mask = _method(model, "encode", variables, batch["task_ids"], batch["input_ids"],
                            batch["attention_mask"])
    full = _method(model, "decode", variables, batch["task_ids"], dec, encoded, mask)
    cache = model.apply(variables, encoded, dec.shape[1], method=PromptedT5.init_cache)
    for t in range(dec.shape[1]):
        step, cache = _method(model, "decode_step", variables, batch["task_ids"], dec[:, t:t + 1], cache,
                              jnp.asarray(t), mask)
        np.testing.assert_allclose(np.asarray(step[:, 0]), np.asarray(full[:, t]), atol=1e-5)
    ungated = PromptedT5(config, prompt_config("pt"))
    assert np.max(np.abs(np.asarray(full) - logits(ungated, bb, {"shared_prompt": params["shared_prompt"]},
                                                   {**batch, "decoder_attention_mask": None}))) > 1e-3


def test_model_init_builds_the_same_prompt_tree(v1):
    config, bb, _ = v1
    for method in ("talora", "pt", "mpt"):
        model = PromptedT5(config, prompt_config(method))
        batch = make_batch(config)
        full = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch))["params"]
        standalone = init_prompt(model, jax.random.PRNGKey(0), bb)
        assert jax.tree.map(lambda x: x.shape, full["prompt"]) == jax.tree.map(lambda x: x.shape, standalone)
        assert set(full) == {"backbone", "prompt"}
    with pytest.raises(PromptConfigError, match="rank=0"):
        PromptedT5(config, prompt_config("talora", rank=0))


def test_token_cross_entropy_ignores_padding():
    rng = np.random.default_rng(5)
    logit = rng.normal(size=(2, 4, 7)).astype(np.float32)
    labels = rng.integers(0, 7, size=(2, 4))
    weights = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    loss, count = token_cross_entropy(jnp.asarray(logit), jnp.asarray(labels), jnp.asarray(weights))
    logp = logit - np.log(np.exp(logit).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    np.testing.assert_allclose(float(loss), (nll * weights).sum() / 6, rtol=1e-6)
    assert float(count) == 6
    zero, _ = token_cross_entropy(jnp.asarray(logit), jnp.asarray(labels), jnp.zeros((2, 4)))
    assert float(zero) == 0.0
