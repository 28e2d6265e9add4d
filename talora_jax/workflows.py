"""Multi-run workflows on top of ``train``: source -> target transfer, and few-shot over seeds.

``launch/train.py`` dispatches on ``config.workflow``:

- ``train``: one run (``train(config, workdir)``); with ``config.init_from`` set it is a
  transfer run that starts from another run's shared prompt, basis and gates.
- ``source_transfer``: multi-task source training in ``workdir/source``, then transfer to
  ``config.transfer.tasks`` in ``workdir/transfer``, then one summary table.
- ``fewshot``: for every k in ``config.fewshot.k`` and seed in ``config.fewshot.seeds``, a
  run on k examples per task in ``workdir/k<k>_seed<seed>``; a mean ± std table over seeds.

Every run is an ordinary resumable ``train`` run in its own directory, so an
interrupted workflow resumes where it stopped when rerun.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import ml_collections
import numpy as np

from talora_jax.data import tasks as tasks_lib
from talora_jax.train.evaluate import results_table, write_results
from talora_jax.train.loop import task_list, train

log = logging.getLogger("talora_jax")
WORKFLOWS = ("train", "source_transfer", "fewshot")


def _ints(value: Any) -> list[int]:
    return [int(v) for v in (value.split(",") if isinstance(value, str) else value) if str(v).strip()]


def prepare_backbone(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Builds the offline stand-in backbone when the config asks for one (the demo), else no-op."""
    standin = config.model.get("standin_dir", "")
    if not standin:
        return config
    from talora_jax.train.standin import build_standin_backbone
    config = ml_collections.ConfigDict(config.to_dict())
    path = os.path.abspath(os.path.expanduser(standin))
    build_standin_backbone(path, steps=config.model.standin_steps, log=log.info)
    config.model.name_or_path = path
    return config


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs ``config.workflow`` in ``workdir``; returns its results."""
    workflow = config.get("workflow", "train")
    if workflow not in WORKFLOWS:
        from talora_jax.errors import UserError
        raise UserError(f"config.workflow={workflow!r}; choose one of {', '.join(WORKFLOWS)}.")
    config = prepare_backbone(config)
    if workflow == "train":
        return train(config, workdir)
    if workflow == "source_transfer":
        return source_then_transfer(config, workdir)
    return fewshot(config, workdir)


def _transfer_config(config: ml_collections.ConfigDict, source_dir: str) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict(config.to_dict())
    t = config.transfer
    cfg.data.tasks = t.tasks
    cfg.init_from = source_dir
    cfg.transfer_init = t.init
    cfg.train.num_steps = t.num_steps
    cfg.optim.freeze_slow = t.freeze_slow
    cfg.optim.warmup_steps = min(cfg.optim.warmup_steps, t.num_steps)
    return cfg


def source_then_transfer(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Source multi-task training, then transfer to the held-out target tasks; one summary table."""
    if not config.transfer.tasks:
        from talora_jax.errors import UserError
        raise UserError("workflow 'source_transfer' needs config.transfer.tasks (the held-out targets).")
    source_dir = os.path.join(workdir, "source")
    log.info("== source training on %s ==", config.data.tasks)
    source = train(config, source_dir, print_results=False)
    log.info("== transfer to %s (init: %s) ==", config.transfer.tasks, config.transfer.init)
    target = train(_transfer_config(config, source_dir), os.path.join(workdir, "transfer"), print_results=False)
    names = task_list(config.data.tasks) + task_list(config.transfer.tasks)
    chance = {n: tasks_lib.get(n).chance for n in names if tasks_lib.get(n).chance is not None}
    test = {**source["test"], **target["test"]}
    initial = {**source.get("initial_dev", {}), **target.get("initial_dev", {})}
    table = "\n\n".join([
        results_table(source["test"], chance, source["param_counts"]["per_task"],
                      title="source tasks (multi-task training), test split", initial=initial),
        results_table(target["test"], chance, target["param_counts"]["per_task"],
                      title=f"target tasks (transfer, init={config.transfer.init}), test split", initial=initial),
    ])
    results = {"source": source, "transfer": target, "test": test}
    write_results(workdir, results, table)
    print(table, flush=True)
    return results


def fewshot(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs every (k, seed) and writes a per-task mean ± std table over seeds for each k."""
    ks, seeds = _ints(config.fewshot.k), _ints(config.fewshot.seeds)
    if not ks or not seeds or min(ks) < 1:
        from talora_jax.errors import UserError
        raise UserError(f"config.fewshot needs positive k values and at least one seed (got k={config.fewshot.k!r}, "
                        f"seeds={config.fewshot.seeds!r}).")
    names = task_list(config.data.tasks)
    scores: dict[int, dict[str, list[float]]] = {k: {n: [] for n in names} for k in ks}
    for k in ks:
        for seed in seeds:
            cfg = ml_collections.ConfigDict(config.to_dict())
            cfg.data.few_shot_k, cfg.data.seed, cfg.train.seed = k, seed, seed
            log.info("== few-shot k=%d seed=%d ==", k, seed)
            result = train(cfg, os.path.join(workdir, f"k{k}_seed{seed}"), print_results=False)
            for n in names:
                scores[k][n].append(result["test"][n]["primary"])
    lines = ["| task | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for n in names + ["average"]:
        cells = []
        for k in ks:
            vals = np.mean([scores[k][m] for m in names], axis=0) if n == "average" else np.asarray(scores[k][n])
            cells.append(f"{np.mean(vals):.1f} ± {np.std(vals):.1f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    table = f"### few-shot test scores, mean ± std over seeds {seeds}\n\n" + "\n".join(lines)
    summary = {"k": ks, "seeds": seeds, "scores": {str(k): v for k, v in scores.items()}}
    write_results(workdir, summary, table, name="fewshot_results")
    print(table, flush=True)
    with open(os.path.join(workdir, "fewshot_results.json")) as f:
        return json.load(f)
