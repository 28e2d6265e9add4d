"""Mesh construction, sharding rules and global-batch assembly on 8 fake CPU devices."""

import logging

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from talora_jax import parallel
from talora_jax.parallel import MeshError
from talora_jax.t5 import T5Config, init_params

TINY = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_decoder_layers=2,
                num_heads=4, relative_attention_num_buckets=8)


def mesh_cfg(**sizes):
    return ml_collections.ConfigDict(sizes)


def test_eight_devices():
    assert jax.device_count() == 8


@pytest.mark.parametrize("sizes,expected", [
    (dict(data=-1, model=2), dict(data=4, fsdp=1, model=2)),
    (dict(data=2, fsdp=-1, model=2), dict(data=2, fsdp=2, model=2)),
    (dict(data=1, model=-1), dict(data=1, fsdp=1, model=8)),
    (dict(), dict(data=8, fsdp=1, model=1)),
])
def test_fill(sizes, expected):
    mesh = parallel.make_mesh(mesh_cfg(**sizes))
    assert dict(mesh.shape) == expected
    assert mesh.axis_names == ("data", "fsdp", "model")
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


@pytest.mark.parametrize("sizes,needle", [
    (dict(data=3, model=-1), "does not divide 8"),
    (dict(data=-1, model=-1), "At most one mesh axis may be -1"),
    (dict(data=2, model=2), "uses 4 devices but 8 are available"),
    (dict(data=0, model=-1), "positive or -1"),
])
def test_mesh_errors(sizes, needle):
    with pytest.raises(MeshError, match=needle):
        parallel.make_mesh(mesh_cfg(**sizes))


def test_batch_divisible():
    mesh = parallel.make_mesh(mesh_cfg(data=2, fsdp=2, model=2))
    assert parallel.data_parallel_size(mesh) == 4
    parallel.check_batch_divisible(12, mesh)
    with pytest.raises(MeshError, match="not divisible by the data-parallel size 4") as err:
        parallel.check_batch_divisible(10, mesh)
    assert "multiple of 4" in str(err.value)
    assert isinstance(err.value, ValueError)


def _spec(tree, *keys):
    for k in keys:
        tree = tree[k]
    return tree.spec


def test_rules_on_4x2_mesh():
    mesh = parallel.make_mesh(mesh_cfg(data=4, model=2))
    sh = parallel.backbone_shardings(TINY, mesh)
    shapes = jax.eval_shape(lambda: init_params(TINY, jax.random.PRNGKey(0)))
    assert jax.tree.structure(sh) == jax.tree.structure(shapes)  # one sharding per param
    q = ("encoder", "layers_0", "attention", "query")
    assert _spec(sh, *q) == P(None, "model")                       # (embed, heads, kv)
    assert _spec(sh, "encoder", "layers_0", "attention", "out") == P("model")  # (heads, kv, embed)
    assert _spec(sh, "encoder", "layers_0", "mlp", "wi") == P(None, "model")
    assert _spec(sh, "shared", "embedding") == P("model")           # (vocab, embed)
    assert _spec(sh, "encoder", "relpos_bias", "embedding") == P(None, "model")
    assert _spec(sh, "encoder", "final_norm", "scale") == P()
    placed = jax.device_put(init_params(TINY, jax.random.PRNGKey(0)), sh)  # shardings are valid
    emb = placed["shared"]["embedding"]
    assert {s.data.shape for s in emb.addressable_shards} == {(32, 16)}  # vocab 64 split in 2


def test_rules_with_fsdp():
    mesh = parallel.make_mesh(mesh_cfg(data=2, fsdp=2, model=2))
    sh = parallel.backbone_shardings(TINY, mesh)
    assert _spec(sh, "encoder", "layers_0", "attention", "query") == P("fsdp", "model")
    assert _spec(sh, "shared", "embedding") == P("model", "fsdp")
    assert parallel.batch_sharding(mesh).spec == P(("data", "fsdp"))


def test_non_divisible_falls_back(caplog):
    cfg = T5Config(vocab_size=60, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_decoder_layers=1,
                   num_heads=3, relative_attention_num_buckets=8)
    mesh = parallel.make_mesh(mesh_cfg(data=1, model=8))
    with caplog.at_level(logging.INFO, logger="talora_jax.parallel"):
        sh = parallel.backbone_shardings(cfg, mesh)
    assert _spec(sh, "encoder", "layers_0", "attention", "query") == P()   # 3 heads over 8
    assert _spec(sh, "encoder", "layers_0", "mlp", "wi") == P(None, "model")  # d_ff 32 over 8
    assert _spec(sh, "shared", "embedding") == P()                         # vocab 60 over 8
    assert "not divisible" in caplog.text


def test_replicated_and_prompt_shardings():
    mesh = parallel.make_mesh(mesh_cfg(data=8))
    tree = {"shared_prompt": np.zeros((3, 4)), "basis": np.zeros((2, 4))}
    for s in jax.tree.leaves(parallel.prompt_shardings(tree, mesh)):
        assert s.is_fully_replicated
    assert parallel.replicated(mesh).spec == P()


@pytest.mark.parametrize("sizes", [dict(data=8, model=1), dict(data=2, model=4)])
def test_global_batch(sizes):
    mesh = parallel.make_mesh(mesh_cfg(**sizes))
    local = {"inputs": np.arange(8 * 5, dtype=np.int32).reshape(8, 5),
             "task_id": np.arange(8, dtype=np.int32)}
    batch = parallel.make_global_batch(local, mesh)
    for key, arr in batch.items():
        assert arr.shape == local[key].shape
        assert arr.sharding == parallel.batch_sharding(mesh)
        np.testing.assert_array_equal(np.asarray(arr), local[key])
        # each data shard holds 8 / data rows
        assert {s.data.shape[0] for s in arr.addressable_shards} == {8 // sizes["data"]}


def test_global_batch_errors():
    mesh = parallel.make_mesh(mesh_cfg(data=8))
    with pytest.raises(MeshError, match="not divisible"):
        parallel.make_global_batch({"x": np.zeros((6, 2))}, mesh)
    with pytest.raises(MeshError, match="share the leading dimension"):
        parallel.make_global_batch({"x": np.zeros((8, 2)), "y": np.zeros((16,))}, mesh)


def test_distributed_noop_single_host(monkeypatch):
    for k in ("JAX_COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS", "TPU_PROCESS_ADDRESSES"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")
    assert parallel.maybe_initialize_distributed(None) is False
    assert parallel.maybe_initialize_distributed(False) is False
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "h0,h1")
    assert parallel._multi_host_env()
