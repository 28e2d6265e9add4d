"""Fast/slow optimizer: labels, schedules, per-group learning rates, freezing, state contents."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from talora_jax.train import optim
from talora_jax.train.optim import OptimConfigError


def talora_prompt():
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    return {
        "shared_prompt": jax.random.normal(k[0], (5, 8)),
        "basis": jax.random.normal(k[1], (2, 8)),
        "task_coeffs": jax.random.normal(k[2], (3, 4, 2)),
        "enc_gate": jnp.zeros((2, 4)),
        "cross_gate": jnp.zeros((2, 4)),
    }


def cfg(**over):
    base = dict(optimizer="adam", lr_fast=0.3, lr_slow=0.03, warmup_steps=0, decay="constant",
                clip_norm=0.0, weight_decay=0.0, freeze_slow=False)
    base.update(over)
    return ml_collections.ConfigDict(base)


def test_labels_by_leaf_name():
    labels = optim.param_labels(talora_prompt())
    assert labels == {"shared_prompt": "slow", "basis": "slow", "task_coeffs": "fast",
                      "enc_gate": "fast", "cross_gate": "fast"}
    mpt = {"shared_prompt": 0, "task_u": 0, "task_v": 0}
    assert optim.param_labels(mpt) == {"shared_prompt": "slow", "task_u": "fast", "task_v": "fast"}
    assert optim.param_labels({"nested": {"task_prompts": 0}}) == {"nested": {"task_prompts": "fast"}}


def test_unknown_leaf_raises():
    with pytest.raises(OptimConfigError, match="'mystery'.*FAST_PARAMS or SLOW_PARAMS"):
        optim.param_labels({"shared_prompt": 0, "mystery": 0})


def test_schedule_values():
    lin = optim.make_schedule(1.0, warmup_steps=10, total_steps=110, decay="linear")
    for step, want in [(0, 0.0), (5, 0.5), (10, 1.0), (60, 0.5), (110, 0.0), (200, 0.0)]:
        assert float(lin(step)) == pytest.approx(want, abs=1e-6), step
    const = optim.make_schedule(0.3, warmup_steps=4, total_steps=100, decay="constant")
    for step, want in [(0, 0.0), (1, 0.075), (4, 0.3), (99, 0.3)]:
        assert float(const(step)) == pytest.approx(want, abs=1e-6), step
    assert float(optim.make_schedule(0.3, 0, 10, "linear")(5)) == pytest.approx(0.15)


@pytest.mark.parametrize("over,needle", [
    (dict(optimizer="sgd"), "Unknown optimizer 'sgd'"),
    (dict(lr_fast=-0.1), "lr_fast must be >= 0"),
    (dict(warmup_steps=20), "warmup_steps=20 must be between 0 and total_steps=10"),
    (dict(decay="cosine"), "Unknown decay 'cosine'"),
])
def test_config_errors(over, needle):
    with pytest.raises(OptimConfigError, match=needle):
        optim.make_optimizer(cfg(**over), total_steps=10)


def test_missing_field():
    c = cfg()
    del c["clip_norm"]
    with pytest.raises(OptimConfigError, match="missing clip_norm"):
        optim.make_optimizer(c, total_steps=10)


def _one_step(config, params):
    tx, schedules = optim.make_optimizer(config, total_steps=100)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5).at[..., 0].set(-2.0), params)
    state = tx.init(params)
    updates, state = jax.jit(tx.update)(grads, state, params)
    return optax.apply_updates(params, updates), state, schedules, grads


@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_first_adam_step_uses_group_lr(clip):
    params = talora_prompt()
    new, _, schedules, grads = _one_step(cfg(clip_norm=clip), params)
    assert float(schedules["fast"](0)) == pytest.approx(0.3)
    assert float(schedules["slow"](0)) == pytest.approx(0.03)
    labels = optim.param_labels(params)
    for name, p in params.items():
        lr = {"fast": 0.3, "slow": 0.03}[labels[name]]
        # First Adam step: m_hat = g, v_hat = g^2, so the update is -lr * sign(g) (clipping
        # rescales g but not its sign, so the step is the same).
        np.testing.assert_allclose(new[name] - p, -lr * np.sign(grads[name]), rtol=1e-5, atol=1e-7)


def test_freeze_slow_is_bitwise_and_stateless():
    params = talora_prompt()
    new, state, _, _ = _one_step(cfg(freeze_slow=True, clip_norm=1.0), params)
    for name in ("shared_prompt", "basis"):
        assert np.array_equal(np.asarray(new[name]).view(np.uint32),
                              np.asarray(params[name]).view(np.uint32))
    for name in ("task_coeffs", "enc_gate", "cross_gate"):
        assert not np.array_equal(new[name], params[name])
    fast_size = sum(params[n].size for n in ("task_coeffs", "enc_gate", "cross_gate"))
    big = [leaf.size for leaf in jax.tree.leaves(state) if leaf.ndim > 0]
    assert sum(big) == 2 * fast_size  # adam mu and nu for the fast group only


@pytest.mark.parametrize("name", ["adam", "adafactor"])
def test_state_holds_only_prompt_leaves(name):
    params = talora_prompt()
    tx, _ = optim.make_optimizer(cfg(optimizer=name, clip_norm=1.0, weight_decay=1e-5), 100)
    state = tx.init(params)
    shapes = {p.shape for p in params.values()}
    total = sum(p.size for p in params.values())
    for leaf in jax.tree.leaves(state):
        # Only scalar counters, per-parameter moments, or adafactor's factored/placeholder vectors.
        assert leaf.ndim == 0 or leaf.shape in shapes or leaf.size <= max(shapes, key=np.prod)[0] * 8
    assert sum(leaf.size for leaf in jax.tree.leaves(state)) <= 2 * total + 64


def test_adafactor_moves_zero_gates():
    params = talora_prompt()
    new, _, _, _ = _one_step(cfg(optimizer="adafactor"), params)
    # Without parameter scaling, zero-initialised gates take a full-size first step.
    assert float(jnp.abs(new["enc_gate"]).min()) > 0.1


def test_group_sizes():
    assert optim.group_sizes(talora_prompt()) == {"fast": 24 + 8 + 8, "slow": 40 + 16}
