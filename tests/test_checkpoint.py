"""Prompt-only Orbax checkpoints: exact roundtrip, no backbone on disk, refusals, preemption flag."""

import os
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from talora_jax.train import checkpoint as ckpt
from talora_jax.train import optim
from talora_jax.train.checkpoint import CheckpointMismatchError

TASKS = ["copy", "reverse", "sort"]


def talora_prompt(num_tasks=3, d=512):
    k = jax.random.split(jax.random.PRNGKey(0), 5)
    return {
        "shared_prompt": jax.random.normal(k[0], (100, d)),
        "basis": jax.random.normal(k[1], (8, d)),
        "task_coeffs": jax.random.normal(k[2], (num_tasks, 32, 8)),
        "enc_gate": jax.random.normal(k[3], (2, 4)) * 0.01,
        "cross_gate": jax.random.normal(k[4], (2, 4)) * 0.01,
    }


def adam_state(prompt):
    tx, _ = optim.make_optimizer(ml_collections.ConfigDict(dict(
        optimizer="adam", lr_fast=0.3, lr_slow=0.03, warmup_steps=0, decay="constant",
        clip_norm=1.0, weight_decay=0.0, freeze_slow=False)), total_steps=10)
    state = tx.init(prompt)
    grads = jax.tree.map(lambda p: jnp.cos(p) * 1e-3, prompt)
    _, state = tx.update(grads, state, prompt)  # non-trivial moments and counts
    return state


def meta(tasks=TASKS, fp="ab" * 32):
    return {"config": {"optim": {"lr_fast": 0.3, "betas": (0.9, 0.99)}}, "tasks": list(tasks),
            "backbone": "tiny", "backbone_fingerprint": fp, "param_counts": {"total": np.int64(5)}}


def abstract(tree, sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def bits(x):
    x = np.asarray(x)
    return x.tobytes()


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


@pytest.fixture
def saved(tmp_path):
    prompt, state = talora_prompt(), None
    state = adam_state(prompt)
    c = ckpt.Checkpointer(str(tmp_path), max_to_keep=2)
    assert c.save(7, prompt, state, {"step": 7, "epoch": 0}, meta())
    c.wait()
    yield c, prompt, state, tmp_path
    c.close()


def test_roundtrip_bitwise_with_shardings(saved):
    c, prompt, state, _ = saved
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    rep = NamedSharding(mesh, P())
    out = c.restore(None, abstract(prompt, rep), abstract(state, rep), meta())
    assert jax.tree.structure(out.prompt) == jax.tree.structure(prompt)
    assert jax.tree.structure(out.opt_state) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves((prompt, state)), jax.tree.leaves((out.prompt, out.opt_state))):
        assert bits(a) == bits(b) and np.asarray(a).dtype == np.asarray(b).dtype
        assert b.sharding == rep
    assert out.data_state == {"step": 7, "epoch": 0}
    assert out.meta["tasks"] == TASKS
    assert out.meta["prompt_shapes"]["['task_coeffs']"] == [3, 32, 8]
    assert out.meta["config"]["optim"]["betas"] == [0.9, 0.99]


def test_restore_with_shardings_argument(saved):
    c, prompt, state, _ = saved
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    rep = NamedSharding(mesh, P())
    shardings = {"prompt": jax.tree.map(lambda _: rep, prompt),
                 "opt_state": jax.tree.map(lambda _: rep, state)}
    out = c.restore(7, jax.eval_shape(lambda: prompt), jax.eval_shape(lambda: state), meta(),
                    shardings=shardings)
    assert all(x.sharding == rep for x in jax.tree.leaves((out.prompt, out.opt_state)))
    assert bits(out.prompt["basis"]) == bits(prompt["basis"])
    only_prompt = c.restore(7, jax.eval_shape(lambda: prompt), None, None, shardings=rep)
    assert only_prompt.opt_state is None and only_prompt.prompt["enc_gate"].sharding == rep


def test_subdir(tmp_path):
    prompt = {"shared_prompt": jnp.ones((2, 3))}
    with ckpt.Checkpointer(str(tmp_path), max_to_keep=1, subdir="best") as c:
        c.save(5, prompt, adam_state(prompt), {"step": 5}, meta(), force=True)
        c.wait()
    assert os.listdir(tmp_path) == ["best"] and os.listdir(tmp_path / "best") == ["5"]


def test_no_backbone_on_disk(saved):
    _, prompt, state, tmp_path = saved
    payload = sum(np.asarray(x).nbytes for x in jax.tree.leaves((prompt, state)))
    on_disk = dir_bytes(tmp_path / "checkpoints")
    assert on_disk < 3 * payload, (on_disk, payload)
    assert {"data", "meta", "opt_state", "prompt"} <= set(os.listdir(tmp_path / "checkpoints" / "7"))


def test_keep_last_n_and_skip_existing(saved):
    c, prompt, state, _ = saved
    for step in (8, 9, 10):
        assert c.save(step, prompt, state, {"step": step}, meta())
    assert not c.save(10, prompt, state, {"step": 10}, meta())  # already there: no error
    c.wait()
    assert list(c.all_steps()) == [9, 10]
    assert c.latest_step() == 10
    assert sorted(os.listdir(c.directory)) == ["10", "9"]


@pytest.mark.parametrize("expected,abstract_prompt,needles", [
    (meta(tasks=["copy", "reverse", "count"]), None,
     ["trained on tasks ['copy', 'reverse', 'sort'] but the config asks for ['copy', 'reverse', 'count']"]),
    (meta(tasks=["sort", "copy", "reverse"]), None, ["different order"]),
    (meta(fp="cd" * 32), None, ["backbone 'tiny' (fingerprint abababababab)", "cdcdcdcdcdcd"]),
    (meta(), talora_prompt(num_tasks=4, d=16),
     ["['task_coeffs'] has shape (3, 32, 8) in the checkpoint but (4, 32, 8)",
      "['shared_prompt'] has shape (100, 512) in the checkpoint but (100, 16)"]),
    (meta(), {"shared_prompt": np.zeros((100, 512), np.float32)}, ["prompt.method"]),
])
def test_refusals_name_the_mismatch(saved, expected, abstract_prompt, needles):
    c, prompt, state, _ = saved
    target = abstract_prompt if abstract_prompt is not None else prompt
    with pytest.raises(CheckpointMismatchError) as err:
        c.restore(7, jax.eval_shape(lambda: target), None, expected)
    for needle in needles:
        assert needle in str(err.value)


def test_optimizer_structure_change_refused(saved):
    c, prompt, _, _ = saved
    tx = optax.sgd(0.1, momentum=0.9)
    with pytest.raises(CheckpointMismatchError, match="optimizer state"):
        c.restore(7, jax.eval_shape(lambda: prompt), jax.eval_shape(lambda: tx.init(prompt)), meta())


def test_restore_missing(tmp_path):
    c = ckpt.Checkpointer(str(tmp_path), max_to_keep=1)
    assert c.latest_step() is None
    with pytest.raises(ckpt.CheckpointNotFoundError):
        c.restore(None, {}, None, None)


def test_read_meta_and_prompt_from_other_run(saved):
    _, prompt, _, tmp_path = saved
    for where in (str(tmp_path), str(tmp_path / "checkpoints"), str(tmp_path / "checkpoints" / "7")):
        m = ckpt.read_meta(where)
        assert m["tasks"] == TASKS and m["backbone_fingerprint"] == "ab" * 32
    p, m = ckpt.read_prompt(str(tmp_path))
    assert m["tasks"] == TASKS and m["step"] == 7
    assert isinstance(p["basis"], np.ndarray)
    assert bits(p["basis"]) == bits(prompt["basis"])


def test_best_checkpoint_kept(tmp_path):
    prompt = {"shared_prompt": jnp.ones((2, 3)), "enc_gate": jnp.zeros((1, 2))}
    state = adam_state(prompt)
    with ckpt.Checkpointer(str(tmp_path), max_to_keep=1, best_metric="acc") as c:
        for step, acc in [(1, 0.2), (2, 0.9), (3, 0.5), (4, 0.1)]:
            c.save(step, prompt, state, {"step": step}, meta(), metrics={"acc": acc})
        c.wait()
        assert c.best_step() == 2
        assert sorted(c.all_steps()) == [2, 4]


def test_fingerprint():
    params = {"encoder": {"w": np.arange(12, dtype=np.float32).reshape(3, 4)},
              "shared": {"embedding": np.ones((5, 2), np.float32)}}
    fp = ckpt.backbone_fingerprint(params)
    assert fp == ckpt.backbone_fingerprint(jax.tree.map(np.copy, params))  # deterministic
    assert fp == ckpt.backbone_fingerprint(jax.tree.map(jnp.asarray, params))  # device arrays too
    changed = jax.tree.map(np.copy, params)
    changed["encoder"]["w"][2, 1] = np.nextafter(changed["encoder"]["w"][2, 1], np.float32(100))
    assert ckpt.backbone_fingerprint(changed) != fp
    as_bf16 = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), params)
    assert ckpt.backbone_fingerprint(as_bf16) != fp
    reshaped = {"encoder": {"w": params["encoder"]["w"].reshape(4, 3)}, "shared": params["shared"]}
    assert ckpt.backbone_fingerprint(reshaped) != fp
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    sharded = jax.device_put(params, NamedSharding(mesh, P(None, "model")))
    assert ckpt.backbone_fingerprint(sharded) == fp  # placement does not matter


def test_preemption_flag():
    before = signal.getsignal(signal.SIGTERM)
    flag = ckpt.install_preemption_handler()
    assert flag() is False
    os.kill(os.getpid(), signal.SIGTERM)
    assert flag() is True
    flag.close()
    assert signal.getsignal(signal.SIGTERM) is before
