"""Device mesh, logical-axis rules, shardings and multi-host helpers.

The mesh always has the three axes ``('data', 'fsdp', 'model')`` (sizes from
``config.mesh``; unused axes have size 1), so every sharding rule below can name
any of them without caring which parallelism the user asked for.

All logical-to-mesh rules live in ``LOGICAL_AXIS_RULES``: the backbone says
*what* a dimension is (``heads``, ``embed``, ...), this module alone decides
*where* it goes. Prompt parameters and their optimizer state are always
replicated: they are tiny (kilobytes to a few MB) and replicating them keeps the
train step free of collectives other than the gradient all-reduce.

Mesh axes of size 1 are dropped from the specs we build: sharding over a size-1
axis is a no-op, and specs without it are easier to read and to compare.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Mapping, Optional, Sequence, Union

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

logger = logging.getLogger(__name__)

MESH_AXES: tuple[str, ...] = ("data", "fsdp", "model")

# Logical name -> mesh axis (or tuple of mesh axes, or None = replicated).
# The ONE place these rules live; backbone_shardings and batch_sharding read it.
LOGICAL_AXIS_RULES: tuple[tuple[str, Union[None, str, tuple[str, ...]]], ...] = (
    ("batch", ("data", "fsdp")),
    ("heads", "model"),
    ("mlp", "model"),
    ("vocab", "model"),
    ("embed", "fsdp"),
    ("kv", None),
    ("relpos_buckets", None),
)


class MeshError(ValueError):
    """A mesh or batch shape that does not fit the devices; the message says how to fix it."""


# --------------------------------------------------------------------------- mesh


def _get(cfg: Any, name: str, default: int) -> int:
    value = cfg.get(name, default) if hasattr(cfg, "get") else getattr(cfg, name, default)
    return default if value is None else int(value)


def mesh_shape(mesh_cfg: Any, num_devices: int) -> dict[str, int]:
    """Resolve ``{'data', 'fsdp', 'model'}`` sizes, filling one -1 with the remaining devices.

    ``mesh_cfg`` is a ConfigDict (or mapping) with optional ``data``, ``fsdp`` and
    ``model`` fields; missing ones default to ``data=-1, fsdp=1, model=1``, i.e. pure
    data parallelism over all devices.
    """
    sizes = {"data": _get(mesh_cfg, "data", -1), "fsdp": _get(mesh_cfg, "fsdp", 1),
             "model": _get(mesh_cfg, "model", 1)}
    spelled = ", ".join(f"{k}={v}" for k, v in sizes.items())
    fill = [k for k, v in sizes.items() if v == -1]
    bad = [k for k, v in sizes.items() if v == 0 or v < -1]
    if bad:
        raise MeshError(
            f"Mesh sizes must be positive or -1 (fill), got {spelled}. "
            f"Fix config.mesh.{bad[0]} (e.g. --config.mesh.{bad[0]}=1).")
    if len(fill) > 1:
        raise MeshError(
            f"At most one mesh axis may be -1 (fill the remaining devices), got {spelled}. "
            f"Set all but one of {', '.join(fill)} to an explicit size.")
    fixed = math.prod(v for v in sizes.values() if v != -1)
    if fill:
        if num_devices % fixed:
            raise MeshError(
                f"Mesh {spelled} cannot fill {num_devices} devices: the fixed axes multiply to "
                f"{fixed}, which does not divide {num_devices}. Choose sizes whose product divides "
                f"{num_devices}.")
        sizes[fill[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise MeshError(
            f"Mesh {spelled} uses {fixed} devices but {num_devices} are available. Make "
            f"data*fsdp*model equal {num_devices}, or set one axis to -1 to fill.")
    return sizes


def make_mesh(mesh_cfg: Any, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A ``('data', 'fsdp', 'model')`` mesh over ``devices`` (default: all), sized by ``mesh_cfg``.

    Axes are ``AxisType.Auto`` so that jit propagates shardings from our explicit
    ``in_shardings``/``out_shardings`` rather than requiring explicit-sharding types.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(mesh_cfg, len(devices))
    shape = tuple(sizes[a] for a in MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def data_parallel_size(mesh: Mesh) -> int:
    """How many ways the batch dimension is split (data x fsdp)."""
    return math.prod(mesh.shape[a] for a in _as_tuple(_rule("batch")) if a in mesh.shape)


def check_batch_divisible(batch_size: int, mesh: Mesh) -> None:
    """Raise ``MeshError`` unless ``batch_size`` splits evenly over the data-parallel axes."""
    dp = data_parallel_size(mesh)
    if batch_size <= 0 or batch_size % dp:
        lower = max(dp, batch_size // dp * dp)
        raise MeshError(
            f"Global batch size {batch_size} is not divisible by the data-parallel size {dp} "
            f"(mesh data={mesh.shape['data']} x fsdp={mesh.shape.get('fsdp', 1)}). Use a batch "
            f"size that is a multiple of {dp} (e.g. {lower} or {lower + dp}), or shrink the "
            f"data/fsdp mesh axes.")


# ------------------------------------------------------------------------- rules


def _rule(logical: str) -> Union[None, str, tuple[str, ...]]:
    for name, target in LOGICAL_AXIS_RULES:
        if name == logical:
            return target
    raise MeshError(
        f"No sharding rule for logical axis {logical!r}; add it to "
        f"talora_jax.parallel.LOGICAL_AXIS_RULES (known: {[n for n, _ in LOGICAL_AXIS_RULES]}).")


def _as_tuple(target: Union[None, str, tuple[str, ...]]) -> tuple[str, ...]:
    if target is None:
        return ()
    return (target,) if isinstance(target, str) else tuple(target)


def logical_to_mesh_spec(logical: Sequence[Optional[str]], shape: Sequence[int], mesh: Mesh,
                         fallbacks: Optional[list[str]] = None, where: str = "") -> P:
    """Map one parameter's logical axis names to a mesh ``PartitionSpec``.

    A dimension whose size is not divisible by its mesh axes is replicated instead of
    sharded (e.g. 12 heads over model=8); that is correct, only less memory-efficient,
    so it is recorded in ``fallbacks`` for the caller to log rather than raised.
    A mesh axis is used at most once per spec (a later dimension that maps to an
    already-used axis is replicated).
    """
    if len(logical) != len(shape):
        raise MeshError(f"{where or 'parameter'}: {len(logical)} logical axes {tuple(logical)} for "
                        f"a {len(shape)}-d shape {tuple(shape)}.")
    used: set[str] = set()
    out: list[Union[None, str, tuple[str, ...]]] = []
    for name, dim in zip(logical, shape):
        axes = tuple(a for a in _as_tuple(_rule(name) if name else None)
                     if mesh.shape.get(a, 1) > 1 and a not in used)
        size = math.prod(mesh.shape[a] for a in axes)
        if axes and dim % size:
            if fallbacks is not None:
                fallbacks.append(f"{where} dim {name!r}={dim} not divisible by mesh "
                                 f"{'x'.join(axes)}={size}; replicated")
            axes = ()
        used.update(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    while out and out[-1] is None:  # P('a', None) == P('a') semantically; keep specs short
        out.pop()
    return P(*out)


def _is_box(x: Any) -> bool:
    import flax.linen as nn  # local: keep `import talora_jax.parallel` light
    return isinstance(x, nn.Partitioned)


def backbone_shardings(t5_config: Any, mesh: Mesh) -> Any:
    """``NamedSharding`` tree for the frozen T5 parameters, same structure as its params.

    Shapes and logical names come from ``talora_jax.t5.abstract_params`` (no
    allocation). Non-divisible dimensions fall back to replication with one log line.
    """
    from talora_jax.t5 import abstract_params  # local: t5 pulls in flax modules

    boxed = abstract_params(t5_config)
    fallbacks: list[str] = []

    def one(path: Any, leaf: Any) -> NamedSharding:
        if not _is_box(leaf):
            return replicated(mesh)
        spec = logical_to_mesh_spec(leaf.names, leaf.value.shape, mesh, fallbacks,
                                    jax.tree_util.keystr(path))
        return NamedSharding(mesh, spec)

    shardings = jax.tree_util.tree_map_with_path(one, boxed, is_leaf=_is_box)
    if fallbacks:
        logger.info("backbone sharding: %d dims replicated because they do not divide the "
                    "mesh, e.g. %s", len(fallbacks), fallbacks[0])
    return shardings


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated sharding; used for prompt params, optimizer state and scalars."""
    return NamedSharding(mesh, P())


def prompt_shardings(tree: Any, mesh: Mesh) -> Any:
    """Replicated sharding for every leaf of a prompt (or optimizer-state) tree."""
    return jax.tree.map(lambda _: replicated(mesh), tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over data x fsdp; all other dimensions replicated."""
    axes = tuple(a for a in _as_tuple(_rule("batch")) if mesh.shape.get(a, 1) > 1)
    return NamedSharding(mesh, P(axes if len(axes) > 1 else (axes[0] if axes else None)))


# -------------------------------------------------------------------- multi-host

# Variables set by launchers that mean "this process is one of several".
_COORDINATOR_ENV = ("JAX_COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS")
_TPU_HOSTS_ENV = ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES")


def _multi_host_env() -> bool:
    if any(os.environ.get(k) for k in _COORDINATOR_ENV):
        return True
    for key in _TPU_HOSTS_ENV:  # single-host TPU VMs list one host: not distributed
        hosts = [h for h in os.environ.get(key, "").split(",") if h.strip()]
        if len(hosts) > 1:
            return True
    return False


def maybe_initialize_distributed(enabled: Optional[bool] = None) -> bool:
    """Call ``jax.distributed.initialize()`` when asked, or (``enabled=None``) when the
    environment is a multi-host TPU pod / has a coordinator address. Returns whether the
    distributed runtime is initialized afterwards.

    Must run before anything touches a JAX backend. Single host: a no-op, so the same
    launcher works on a laptop and on a pod. Calling it twice is harmless.
    """
    if jax.distributed.is_initialized():
        return True
    if enabled is False or (enabled is None and not _multi_host_env()):
        return False
    jax.distributed.initialize()
    logger.info("jax.distributed initialized: process %d of %d", jax.process_index(),
                jax.process_count())
    return True


def make_global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble global arrays from this host's slice of a batch.

    Each host passes the rows it read (its ``host_batch_slice``); the result's leading
    dimension is ``local_rows * process_count``, sharded with ``batch_sharding``.
    On one host this is just a sharded ``device_put``.
    """
    sharding = batch_sharding(mesh)
    out: dict[str, jax.Array] = {}
    rows = None
    for key, value in local_batch.items():
        value = np.asarray(value)
        if value.ndim == 0:
            raise MeshError(f"Batch field {key!r} is a scalar; every batch field needs a leading "
                            f"batch dimension.")
        if rows is None:
            rows = value.shape[0]
            check_batch_divisible(rows * jax.process_count(), mesh)
        elif value.shape[0] != rows:
            raise MeshError(f"Batch field {key!r} has {value.shape[0]} rows but others have "
                            f"{rows}; all fields of a batch must share the leading dimension.")
        out[key] = jax.make_array_from_process_local_data(sharding, value)
    return out
