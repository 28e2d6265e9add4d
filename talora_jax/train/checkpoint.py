"""Prompt-only Orbax checkpoints with exact resume and refusal of mismatched runs (DESIGN.md section 7).

Layout: ``workdir/checkpoints/<step>/{prompt,opt_state,data,meta}``.

- ``prompt``, ``opt_state``: array trees (``StandardSave``), restored into abstract
  trees that carry the target shardings, so a restore is exact and lands already
  placed on the mesh.
- ``data``: JSON, at least ``{'step': int}`` (the sampler state is just the step).
- ``meta``: JSON with the config, task list, backbone name and fingerprint, parameter
  counts and (added here) the prompt parameter shapes.

The frozen backbone is never written: it is reloaded from its own source and
identified by ``backbone_fingerprint``. A checkpoint whose task list, prompt shapes
or backbone fingerprint differ from the current run is refused with
``CheckpointMismatchError``, because restoring it would silently pair task
coefficients with the wrong tasks or a prompt with weights it was never trained on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

logger = logging.getLogger(__name__)

ITEMS = ("prompt", "opt_state", "data", "meta")
_FINGERPRINT_VERSION = b"talora-backbone-fingerprint-v1"


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not belong to this run (tasks, shapes or backbone differ)."""


class CheckpointNotFoundError(FileNotFoundError):
    """No checkpoint where one was asked for."""


class Restored(NamedTuple):
    prompt: Any
    opt_state: Any  # None when restore() was given abstract_opt_state=None
    data_state: dict
    meta: dict


# ---------------------------------------------------------------- fingerprint


def _host_bytes(leaf: Any) -> np.ndarray:
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        from jax.experimental import multihost_utils  # only needed on multi-host meshes
        leaf = multihost_utils.process_allgather(leaf, tiled=True)
    arr = np.ascontiguousarray(np.asarray(leaf))
    return arr.reshape(-1).view(np.uint8)


def backbone_fingerprint(params: Any) -> str:
    """A stable SHA-256 over every backbone leaf's path, shape, dtype and raw bytes.

    Identifies the frozen weights a prompt was trained against, independent of how
    they are sharded or where they were loaded from. Storage dtype is part of the
    identity (bf16-stored weights differ from float32 ones).

    Cost: one device-to-host copy of each leaf (one leaf at a time, so peak host
    memory is the largest leaf) plus SHA-256 at ~1-2 GB/s per core: about 0.5 s for
    t5-base in float32 (0.9 GB), ~6 s for t5-xl (11 GB). Compute it once per run,
    ideally on the host arrays right after loading, and pass it in ``meta``.
    """
    digest = hashlib.sha256(_FINGERPRINT_VERSION)
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        header = f"{jax.tree_util.keystr(path)}|{tuple(np.shape(leaf))}|{np.dtype(leaf.dtype).name}"
        digest.update(header.encode())
        digest.update(_host_bytes(leaf))
    return digest.hexdigest()


def prompt_shapes(prompt: Any) -> dict[str, list[int]]:
    """``{path: shape}`` of a prompt tree (concrete or abstract), as stored in ``meta``."""
    return {jax.tree_util.keystr(p): [int(d) for d in np.shape(x)]
            for p, x in jax.tree_util.tree_flatten_with_path(prompt)[0]}


def _jsonable(obj: Any) -> Any:
    """Plain JSON types only: configs carry tuples, numpy scalars and the odd object."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic, np.ndarray)) or (isinstance(obj, jax.Array) and obj.ndim == 0):
        return np.asarray(obj).tolist()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


# --------------------------------------------------------------- mismatches


def _mismatches(saved: Mapping[str, Any], expected: Mapping[str, Any], abstract_prompt: Any
                ) -> list[str]:
    problems = []
    want_tasks = expected.get("tasks")
    have_tasks = saved.get("tasks")
    if want_tasks is not None and have_tasks is not None and list(want_tasks) != list(have_tasks):
        order = (" (same tasks, different order: task ids index per-task parameters)"
                 if sorted(want_tasks) == sorted(have_tasks) else "")
        problems.append(f"checkpoint was trained on tasks {have_tasks} but the config asks for "
                        f"{list(want_tasks)}{order}")
    want_fp = expected.get("backbone_fingerprint")
    have_fp = saved.get("backbone_fingerprint")
    if want_fp is not None and have_fp is not None and want_fp != have_fp:
        problems.append(
            f"checkpoint was trained on backbone {saved.get('backbone', '?')!r} (fingerprint "
            f"{have_fp[:12]}) but this run loads {expected.get('backbone', '?')!r} (fingerprint "
            f"{want_fp[:12]}): different weights or storage dtype")
    if abstract_prompt is not None and "prompt_shapes" in saved:
        have = {k: tuple(v) for k, v in saved["prompt_shapes"].items()}
        want = {k: tuple(v) for k, v in prompt_shapes(abstract_prompt).items()}
        if set(have) != set(want):
            problems.append(f"checkpoint has prompt parameters {sorted(have)} but the model has "
                            f"{sorted(want)} (was prompt.method changed?)")
        for key in sorted(set(have) & set(want)):
            if have[key] != want[key]:
                problems.append(f"prompt parameter {key} has shape {have[key]} in the checkpoint "
                                f"but {want[key]} in this run")
    return problems


# ---------------------------------------------------------------- checkpointer


class Checkpointer:
    """Async, atomic, keep-last-N checkpoints of the trainable state under ``workdir/checkpoints``.

    With ``best_metric`` set, the checkpoint with the best value of
    ``metrics[best_metric]`` (passed to ``save``) is kept as well as the last
    ``max_to_keep``, and ``best_step()`` returns it (dev-set model selection).
    """

    def __init__(self, workdir: str, max_to_keep: int = 3, async_save: bool = True,
                 best_metric: Optional[str] = None, best_mode: str = "max",
                 subdir: str = "checkpoints") -> None:
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}.")
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}.")
        self.directory = os.path.join(os.path.abspath(workdir), subdir)
        self._best_metric = best_metric
        kwargs: dict[str, Any] = dict(enable_async_checkpointing=async_save, create=True)
        if best_metric is None:
            kwargs["max_to_keep"] = max_to_keep
        else:
            metric_fn = lambda m: float(m[best_metric])  # noqa: E731
            kwargs.update(
                best_fn=metric_fn, best_mode=best_mode,
                preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy([
                    ocp.checkpoint_managers.LatestN(n=max_to_keep),
                    ocp.checkpoint_managers.BestN(get_metric_fn=metric_fn, reverse=best_mode == "min",
                                                  n=1, keep_checkpoints_without_metrics=False),
                ]))
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(**kwargs), item_names=ITEMS)

    # -- writing

    def save(self, step: int, prompt: Any, opt_state: Any, data_state: Mapping[str, Any],
             meta: Mapping[str, Any], force: bool = False,
             metrics: Optional[Mapping[str, float]] = None) -> bool:
        """Start an (async) save of step ``step``; returns False if that step is already saved.

        ``meta`` gets ``prompt_shapes`` added so that restore can name shape mismatches
        before touching any array. Call ``wait()`` before exiting the process.
        """
        step = int(step)
        if step in self._manager.all_steps():
            return False
        data = _jsonable(dict(data_state))
        data.setdefault("step", step)
        full_meta = _jsonable({**dict(meta), "prompt_shapes": prompt_shapes(prompt)})
        if self._best_metric is not None and metrics is not None and self._best_metric not in metrics:
            raise ValueError(f"metrics passed to save() lack the best-checkpoint metric "
                           f"{self._best_metric!r}; got {sorted(metrics)}.")
        return self._manager.save(
            step, force=force, metrics=None if metrics is None else _jsonable(dict(metrics)),
            args=ocp.args.Composite(prompt=ocp.args.StandardSave(prompt),
                                    opt_state=ocp.args.StandardSave(opt_state),
                                    data=ocp.args.JsonSave(data), meta=ocp.args.JsonSave(full_meta)))

    def wait(self) -> None:
        """Block until pending async saves are committed to disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- reading

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def best_step(self) -> Optional[int]:
        """Best step by ``best_metric`` (the latest step when no metric is tracked)."""
        return self._manager.best_step()

    def all_steps(self) -> Sequence[int]:
        return self._manager.all_steps()

    def reached_preemption(self, step: int) -> bool:
        """Multi-host preemption sync point (JAX's preemption service); False on one host."""
        return self._manager.reached_preemption(step)

    def read_meta(self, step: Optional[int] = None) -> dict:
        return self._read_json(self._resolve(step), "meta")

    def _resolve(self, step: Optional[int]) -> int:
        step = self._manager.latest_step() if step is None else int(step)
        if step is None or step not in self._manager.all_steps():
            raise CheckpointNotFoundError(
                f"No checkpoint {'at step ' + str(step) if step is not None else ''} in "
                f"{self.directory} (have steps {list(self._manager.all_steps())}).")
        return step

    def _read_json(self, step: int, item: str) -> dict:
        return dict(self._manager.restore(step, args=ocp.args.Composite(
            **{item: ocp.args.JsonRestore()}))[item])

    def restore(self, step: Optional[int], abstract_prompt: Any, abstract_opt_state: Any,
                expected_meta: Optional[Mapping[str, Any]] = None, shardings: Any = None
                ) -> Restored:
        """Restore step ``step`` (None: latest) exactly into the given abstract trees.

        The abstract trees are ``jax.ShapeDtypeStruct`` leaves that carry the target
        ``sharding``; or pass plain ``jax.eval_shape`` trees plus ``shardings``: one
        ``Sharding`` for every leaf, or an object/dict with ``prompt`` and ``opt_state``
        sharding trees (e.g. a ``TrainState`` of shardings). ``abstract_opt_state=None``
        skips the optimizer state (eval, transfer). Keys of ``expected_meta`` that are
        absent or None are not checked.

        Raises:
          CheckpointMismatchError: tasks, prompt shapes, backbone fingerprint or
            optimizer-state structure differ from this run; the message lists each.
        """
        step = self._resolve(step)
        saved_meta = self._read_json(step, "meta")
        problems = _mismatches(saved_meta, dict(expected_meta or {}), abstract_prompt)
        if problems:
            raise CheckpointMismatchError(
                f"Refusing checkpoint {os.path.join(self.directory, str(step))}: "
                + "; ".join(problems) + ". Use a fresh --workdir, or fix the config to match.")
        abstract_prompt = _with_shardings(abstract_prompt, _part(shardings, "prompt"))
        abstract_opt_state = _with_shardings(abstract_opt_state, _part(shardings, "opt_state"))
        args = {"prompt": ocp.args.StandardRestore(abstract_prompt), "data": ocp.args.JsonRestore()}
        if abstract_opt_state is not None:
            args["opt_state"] = ocp.args.StandardRestore(abstract_opt_state)
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(**args))
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointMismatchError(
                f"Refusing checkpoint {os.path.join(self.directory, str(step))}: its prompt or "
                f"optimizer state does not match this run's structure (was optim.optimizer or "
                f"optim.freeze_slow changed?). Orbax said: {err}") from err
        return Restored(out["prompt"], out.get("opt_state") if abstract_opt_state is not None
                        else None, dict(out["data"]), saved_meta)


def _part(shardings: Any, name: str) -> Any:
    if shardings is None or isinstance(shardings, jax.sharding.Sharding):
        return shardings
    return shardings[name] if isinstance(shardings, Mapping) else getattr(shardings, name)


def _with_shardings(abstract: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying ``shardings`` (a single Sharding or a matching tree)."""
    if abstract is None or shardings is None:
        return abstract
    if isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shardings),
                            abstract)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        abstract, shardings)


# --------------------------------------------------------- other runs' checkpoints


def _locate(path: str, step: Optional[int]) -> tuple[str, Optional[int]]:
    """Accept a workdir, its ``checkpoints`` dir, or one ``checkpoints/<step>`` dir."""
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, "checkpoints")):
        return os.path.join(path, "checkpoints"), step
    if os.path.isdir(os.path.join(path, "meta")) and os.path.basename(path).isdigit():
        return os.path.dirname(path), int(os.path.basename(path)) if step is None else step
    if os.path.isdir(path):
        return path, step
    raise CheckpointNotFoundError(f"{path} is not a directory; pass a workdir, its checkpoints/ "
                                  f"directory, or a checkpoints/<step> directory.")


def _reader(path: str, step: Optional[int]) -> tuple[ocp.CheckpointManager, int]:
    root, step = _locate(path, step)
    manager = ocp.CheckpointManager(root, options=ocp.CheckpointManagerOptions(read_only=True),
                                    item_names=ITEMS)
    step = manager.latest_step() if step is None else step
    if step is None or step not in manager.all_steps():
        raise CheckpointNotFoundError(f"No checkpoint{'' if step is None else f' at step {step}'} "
                                      f"under {root} (have steps {list(manager.all_steps())}).")
    return manager, step


def read_meta(workdir_or_ckpt_dir: str, step: Optional[int] = None) -> dict:
    """The JSON meta (config, tasks, backbone, fingerprint, counts, prompt shapes) of another
    run's checkpoint (latest unless ``step``), with ``meta['step']`` set to its step."""
    manager, step = _reader(workdir_or_ckpt_dir, step)
    return _meta_at(manager, step)


def _meta_at(manager: ocp.CheckpointManager, step: int) -> dict:
    meta = dict(manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
    meta["step"] = step
    return meta


def read_prompt(workdir_or_ckpt_dir: str, step: Optional[int] = None) -> tuple[dict, dict]:
    """Another run's ``(prompt params, meta)``: P0, B, gates and task rows for transfer/eval.

    The params are host numpy arrays, not device arrays, so the source run's
    mesh/topology does not matter; the caller builds the target tree and places it.
    """
    manager, step = _reader(workdir_or_ckpt_dir, step)
    item_dir = os.path.join(str(manager.directory), str(step), "prompt")
    with ocp.PyTreeCheckpointer() as reader:
        tree = reader.metadata(item_dir).item_metadata
        tree = getattr(tree, "tree", tree)
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        prompt = reader.restore(item_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    return prompt, _meta_at(manager, step)


# ------------------------------------------------------------------ preemption


class PreemptionFlag:
    """Callable that turns True once SIGTERM (TPU preemption notice) arrives.

    The handler only sets a flag: the loop polls it between steps, saves and exits,
    which is safe, whereas doing I/O inside a signal handler is not. ``close()``
    restores the previous handlers.
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGTERM,)) -> None:
        self._fired = False
        self._previous: dict[int, Any] = {}
        try:
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: signals cannot be caught here
            logger.warning("Preemption handler not installed (not in the main thread); SIGTERM "
                           "will kill the run without a final checkpoint.")

    def _handle(self, signum: int, frame: Any) -> None:
        self._fired = True

    def __call__(self) -> bool:
        return self._fired

    def close(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def __enter__(self) -> "PreemptionFlag":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def install_preemption_handler(signals: Sequence[int] = (signal.SIGTERM,)) -> PreemptionFlag:
    """Catch SIGTERM; the returned callable says whether it arrived. ``.close()`` uninstalls."""
    return PreemptionFlag(signals)

