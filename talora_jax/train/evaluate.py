"""Per-task evaluation: decode (or rank-classify), postprocess, score, tabulate.

Every example of a split is seen exactly once (the data pipeline pads the last
batch with rows marked invalid), predictions are gathered from all hosts, and
each task is scored by its own ``Task.score``. The table is what the paper
reports: one row per task plus the average of the per-task primary metrics.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from talora_jax.data import pipeline
from talora_jax.data.pipeline import TokenizedSplit
from talora_jax.data.tasks import Task


def _to_host(x: jax.Array) -> np.ndarray:
    """A globally sharded result as a full numpy array on every host."""
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def evaluate_tasks(tasks: Sequence[Task], splits: Sequence[TokenizedSplit], task_ids: Sequence[int],
                   batch_size: int, put_batch: Callable[[dict], dict],
                   generate: Callable[[dict], jax.Array], classify: Optional[Callable[[dict, str], jax.Array]],
                   decode_tokens: Callable[[np.ndarray], list[str]], mode: str = "auto") -> dict[str, dict]:
    """Scores each task on its split.

    Args:
      tasks, splits, task_ids: aligned per task.
      batch_size: global eval batch size (divisible by the data-parallel size).
      put_batch: turns this host's numpy rows into global device arrays.
      generate: ``batch -> tokens [B, T]`` (cached greedy decoding).
      classify: ``(batch, task_name) -> label index [B]``; used for label-word tasks.
      decode_tokens: token ids -> strings (the tokenizer, special tokens skipped).
      mode: ``'auto'`` (rank classification for label-word tasks, generation otherwise),
        ``'generate'`` or ``'rank'``.

    Returns:
      ``{task: {metric: value, ..., 'num_examples': n}}``.
    """
    if mode not in ("auto", "generate", "rank"):
        raise ValueError(f"eval mode {mode!r}: choose 'auto', 'generate' or 'rank'.")
    results = {}
    for task, split, task_id in zip(tasks, splits, task_ids):
        use_rank = classify is not None and task.label_words and mode in ("auto", "rank")
        n = len(split)
        preds_by_batch, index_by_batch = [], []
        for b, batch in enumerate(pipeline.eval_batches(split, batch_size, task_id, jax.process_index(),
                                                        jax.process_count())):
            device_batch = put_batch({k: v for k, v in batch.items() if k not in ("example_index", "example_mask")})
            if use_rank:
                idx = _to_host(classify(device_batch, task.name))
                preds = [task.label_words[int(i)] for i in idx]
            else:
                preds = decode_tokens(_to_host(generate(device_batch)))
            gidx = np.arange(b * batch_size, (b + 1) * batch_size)
            index_by_batch.append(np.where(gidx < n, gidx, -1))
            preds_by_batch.append(preds)
        predictions = pipeline.scatter_predictions(n, index_by_batch, preds_by_batch)
        scores = task.score(split.examples, predictions)
        results[task.name] = {**{k: float(v) for k, v in scores.items()}, "num_examples": n,
                              "primary": task.primary(scores), "mode": "rank" if use_rank else "generate"}
    return results


def results_table(results: Mapping[str, Mapping[str, Any]], chance: Optional[Mapping[str, float]] = None,
                  params_per_task: Optional[int] = None, title: str = "",
                  initial: Optional[Mapping[str, Mapping[str, Any]]] = None) -> str:
    """A markdown table: one row per task (all metrics), then the average of primary metrics.

    ``chance`` adds the chance level per task; ``initial`` adds the untrained prompt's
    (step 0, dev) primary metric, so a reader sees how much was learned.
    """
    lines = [f"### {title}", ""] if title else []
    columns = [("chance", chance)] if chance else []
    columns += [("step 0 (dev)", {k: v["primary"] for k, v in initial.items()})] if initial else []
    header = "| task | metrics | primary |" + "".join(f" {c} |" for c, _ in columns)
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for name, res in results.items():
        metrics = ", ".join(f"{k} {v:.1f}" for k, v in res.items()
                            if k not in ("num_examples", "primary", "mode") and isinstance(v, float))
        row = f"| {name} | {metrics} | {res['primary']:.1f} |"
        for _, values in columns:
            v = values.get(name)
            row += f" {v:.1f} |" if v is not None else " – |"
        lines.append(row)

    def mean_of(values):
        vals = [values[n] for n in results if values.get(n) is not None]
        return f" {np.mean(vals):.1f} |" if len(vals) == len(results) else " |"

    avg = float(np.mean([r["primary"] for r in results.values()])) if results else 0.0
    lines.append(f"| **average** | | **{avg:.1f}** |" + "".join(mean_of(v) for _, v in columns))
    if params_per_task is not None:
        lines += ["", f"Trainable parameters per task: {params_per_task:,}"]
    return "\n".join(lines)


def write_results(workdir: str, results: Mapping[str, Any], table: str, name: str = "results") -> None:
    """``results.json`` and ``results.md`` in the workdir (process 0 only)."""
    if jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, f"{name}.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    with open(os.path.join(workdir, f"{name}.md"), "w") as f:
        f.write(table + "\n")
