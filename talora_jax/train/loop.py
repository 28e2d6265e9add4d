"""``train(config, workdir)``: the flat, readable training loop.

Read top to bottom: resolve the config, load the frozen backbone and the task
data, build the mesh and the sharded state, resume if a checkpoint exists,
then step / log / evaluate / save until done or preempted, and finally score
the best dev checkpoint on the test split. Everything that is a concern of its
own (sharding rules, the step, decoding, checkpoints, metrics) lives in its
own module; this file only wires them together.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from talora_jax import parallel
from talora_jax.data import sampling, suites, tasks as tasks_lib
from talora_jax.data.errors import DataError
from talora_jax.data.pipeline import label_word_ids, load_split
from talora_jax.model import PromptedT5, init_prompt
from talora_jax.prompts import abstract_prompt_params, count_prompt_params, transfer_init
from talora_jax.t5 import load_pretrained, load_tokenizer
from talora_jax.train import checkpoint as ckpt_lib
from talora_jax.train.decode import greedy_generate_fn, rank_classify_fn
from talora_jax.train.evaluate import evaluate_tasks, results_table, write_results
from talora_jax.train.metrics_writer import MetricWriter, ProgressLine
from talora_jax.train.optim import make_optimizer
from talora_jax.train.step import TrainState, jit_train_step, train_step_fn

log = logging.getLogger("talora_jax")


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


def task_list(value: Any) -> list[str]:
    """``'mnli,sst2'``, suite names (``'glue'``) or a sequence -> a list of task names (order = task ids)."""
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else [str(n) for n in value]
    names = suites.expand([n for n in names if n])
    if not names:
        raise DataError("config.data.tasks is empty; name at least one task, e.g. --config.data.tasks=sst2,mnli.")
    if len(set(names)) != len(names):
        raise DataError(f"config.data.tasks lists a task twice: {names}.")
    return names


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """An unlocked copy with the derived fields filled in (task count, tokenizer path)."""
    cfg = ml_collections.ConfigDict(config.to_dict())
    if cfg.get("require_init_from") and not cfg.init_from:
        from talora_jax.errors import UserError
        raise UserError("this is a transfer config: pass the source run's workdir with "
                        "--config.init_from=/path/to/source_workdir.")
    for name, spec in cfg.data.get("user_tasks", {}).items():
        from talora_jax.data import user_tasks
        user_tasks.register_from_config({"name": name, **dict(spec)})
    names = task_list(cfg.data.tasks)
    for n in names:
        tasks_lib.get(n)  # unknown names fail here, with suggestions
    cfg.data.tasks = ",".join(names)
    cfg.prompt.num_tasks = len(names)
    if not cfg.model.tokenizer:
        cfg.model.tokenizer = cfg.model.name_or_path
    return cfg


def _on_process_zero() -> bool:
    return jax.process_index() == 0


def _write_config(cfg: ml_collections.ConfigDict, workdir: str) -> None:
    if _on_process_zero():
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(cfg.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def _split_loader(cfg, names, tokenizer, workdir):
    """``load(split)``: tokenized (cached) splits of every task, in task-id order."""
    d = cfg.data
    cache_dir = d.cache_dir or os.path.join(workdir, "token_cache")

    def load(split: str) -> list:
        out = [load_split(n, split, tokenizer, d.max_input_len, d.max_target_len, cache_dir=cache_dir,
                          data_dir=d.data_dir or None) for n in names]
        if split == "train" and d.few_shot_k > 0:
            return [sampling.few_shot(s, d.few_shot_k, d.seed) for s in out]
        if split != "train" and d.max_eval_examples > 0:
            return [s.subset(range(min(len(s), d.max_eval_examples))) for s in out]
        return out
    return load


def _initial_prompt(cfg, model: PromptedT5, backbone, names, rng) -> tuple[Any, Optional[dict]]:
    """Fresh prompt params, or (transfer) the source run's shared weights + new task rows."""
    if not cfg.init_from:
        return init_prompt(model, rng, backbone), None
    source_prompt, source_meta = ckpt_lib.read_prompt(cfg.init_from)
    strategy, _, source_task = cfg.transfer_init.partition(":")
    prompt = transfer_init(source_prompt, cfg.prompt, model.t5_config, strategy=strategy,
                           source_tasks=source_meta["tasks"], source_task=source_task or None, rng=rng,
                           embedding=backbone["shared"]["embedding"])
    log.info("transfer: initialised %s from %s (%s, source tasks %s)", names, cfg.init_from,
             cfg.transfer_init, source_meta["tasks"])
    return prompt, source_meta


@dataclasses.dataclass
class FrozenSetup:
    """Everything a run needs besides its trainable state: backbone, tokenizer, tasks, mesh, model."""

    cfg: ml_collections.ConfigDict
    names: list[str]
    tasks: list
    t5_cfg: Any
    backbone: Any
    backbone_shardings: Any
    fingerprint: str
    tokenizer: Any
    mesh: Any
    model: PromptedT5
    counts: Any

    def meta(self) -> dict:
        """What a checkpoint must agree with to be restored into this run."""
        return {"tasks": self.names, "backbone": self.cfg.model.name_or_path,
                "backbone_fingerprint": self.fingerprint, "param_counts": self.counts.as_dict(),
                "config": json.loads(self.cfg.to_json_best_effort())}


def setup(cfg: ml_collections.ConfigDict) -> FrozenSetup:
    """Loads the frozen backbone (sharded over the mesh), the tokenizer and the task objects."""
    names = cfg.data.tasks.split(",")
    t5_cfg, backbone_host = load_pretrained(cfg.model.name_or_path, dtype=cfg.model.dtype,
                                            param_dtype=cfg.model.param_dtype)
    fingerprint = ckpt_lib.backbone_fingerprint(backbone_host)
    tokenizer = load_tokenizer(cfg.model.tokenizer)
    mesh = parallel.make_mesh(cfg.mesh)
    parallel.check_batch_divisible(cfg.data.batch_size, mesh)
    parallel.check_batch_divisible(cfg.data.eval_batch_size, mesh)
    shardings = parallel.backbone_shardings(t5_cfg, mesh)
    backbone = jax.device_put(backbone_host, shardings)
    model = PromptedT5(t5_cfg, cfg.prompt, remat=cfg.model.remat)
    counts = count_prompt_params(model.spec, t5_cfg)
    return FrozenSetup(cfg, names, [tasks_lib.get(n) for n in names], t5_cfg, backbone, shardings, fingerprint,
                       tokenizer, mesh, model, counts)


def train(config: ml_collections.ConfigDict, workdir: str, print_results: bool = True) -> dict:
    """Trains the prompt of ``config`` in ``workdir`` (resuming if it holds a checkpoint).

    ``print_results=False`` leaves the final tables to the caller (workflows print one summary).

    Returns the final results: ``{'dev': {task: scores}, 'test': {task: scores}}``.
    """
    parallel.maybe_initialize_distributed(config.get("distributed") or None)
    cfg = resolve_config(config)
    os.makedirs(workdir, exist_ok=True)

    # ---------------------------------------------------------------- backbone, data, mesh
    run = setup(cfg)
    names, tasks, t5_cfg, backbone, tokenizer, mesh, model, counts = (
        run.names, run.tasks, run.t5_cfg, run.backbone, run.tokenizer, run.mesh, run.model, run.counts)
    load = _split_loader(cfg, names, tokenizer, workdir)
    train_splits, dev_splits = load("train"), load(cfg.train.eval_split)

    # ---------------------------------------------------------------- sharded state (fresh, or resumed)
    checkpoints = ckpt_lib.Checkpointer(workdir, max_to_keep=cfg.train.keep_checkpoints)
    best = ckpt_lib.Checkpointer(workdir, max_to_keep=1, subdir="best")
    resume_step = checkpoints.latest_step()
    optimizer, schedules = make_optimizer(cfg.optim, cfg.train.num_steps)
    replicated = parallel.replicated(mesh)
    make_state = lambda p: TrainState(jnp.int32(0), p, optimizer.init(p))  # noqa: E731
    if resume_step is None:
        prompt, _ = _initial_prompt(cfg, model, backbone, names, jax.random.PRNGKey(cfg.train.seed))
    else:  # shapes only: a resumed run needs neither a fresh init nor the transfer source any more
        prompt = abstract_prompt_params(model.spec, t5_cfg)
    abstract_state = jax.eval_shape(make_state, prompt)
    state_shardings = jax.tree_util.tree_map(lambda _: replicated, abstract_state)
    meta = run.meta()
    log.info("prompt parameters (%s): %s", cfg.prompt.method, counts.summary())
    start_step = 0
    if resume_step is None:
        state = jax.jit(make_state, out_shardings=state_shardings)(prompt)
    else:
        restored = checkpoints.restore(resume_step, abstract_state.prompt, abstract_state.opt_state,
                                       expected_meta=meta, shardings=state_shardings)
        state = TrainState(jnp.asarray(restored.data_state["step"], jnp.int32), restored.prompt, restored.opt_state)
        state = jax.device_put(state, state_shardings)
        start_step = int(restored.data_state["step"])
        log.info("resumed from %s at step %d", checkpoints.directory, start_step)
    _write_config(cfg, workdir)  # only now: a refused resume must not overwrite the run's config

    # ---------------------------------------------------------------- compiled functions
    d = cfg.data
    sampler = sampling.Sampler(train_splits, d.batch_size, seed=d.seed,
                               rates=list(sampling.mixture_rates({s.task: len(s) for s in train_splits}, d.mixture,
                                                                 cap=d.mixture_cap or None,
                                                                 temperature=d.temperature).values()),
                               process_index=jax.process_index(), process_count=jax.process_count())
    batches = sampler.iterate(start_step)
    batch_sharding = parallel.batch_sharding(mesh)
    step_fn = jit_train_step(train_step_fn(model, optimizer, schedules, cfg.optim.grad_accum),
                             state_shardings, run.backbone_shardings, batch_sharding, replicated)
    evaluator = Evaluator(model, tasks, list(range(len(tasks))), tokenizer, mesh, cfg)

    # ---------------------------------------------------------------- the loop
    writer = MetricWriter(workdir, enabled=_on_process_zero())
    progress = ProgressLine(cfg.train.num_steps, start_step, enabled=_on_process_zero())
    sigterm = ckpt_lib.install_preemption_handler()
    multi_host = jax.process_count() > 1

    def preempted(at_step: int) -> bool:
        # One host: our SIGTERM flag. Pods: JAX's preemption sync point, so that every host
        # stops at the same step (hosts receive SIGTERM at different times).
        return checkpoints.reached_preemption(at_step) if multi_host else sigterm()

    tokens_per_step = d.batch_size * (d.max_input_len + model.spec.prompt_len + d.max_target_len)
    best_metric = _read_best(workdir)
    initial_dev = None
    if cfg.train.get("eval_at_start") and start_step == 0:  # the untrained prompt: what learning starts from
        initial_dev = evaluator(state.prompt, backbone, dev_splits)
        log.info("step 0 dev: %s", ", ".join(f"{n} {initial_dev[n]['primary']:.1f}" for n in names))
    pending = None  # (step, device metrics): fetched one step late, never blocking
    step = start_step
    # Step time = wall time over the steps since the last log line, measured when a step's metrics
    # arrive (i.e. it has finished). The window restarts after the first step (compile) and after
    # every save or evaluation, so neither inflates the reported step time.
    clock = {"step": start_step, "time": time.perf_counter()}

    def restart_clock(at_step):
        clock.update(step=at_step, time=time.perf_counter())

    def check_and_log(item):
        s, metrics_dev = item
        metrics = {k: float(v) for k, v in jax.device_get(metrics_dev).items()}
        if not math.isfinite(metrics["loss"]):
            raise TrainingDivergedError(
                f"loss is {metrics['loss']} at step {s}; stopping. The last good checkpoint "
                f"(step {checkpoints.latest_step()}) is kept. Lower optim.lr_fast/lr_slow or enable "
                "optim.clip_norm, then rerun to resume from it.")
        step_time = (time.perf_counter() - clock["time"]) / max(s - clock["step"], 1)
        if s == start_step + 1:
            log.info("first step (compile + run) took %.1fs", step_time)
        if s % cfg.train.log_every == 0 or s == cfg.train.num_steps:
            metrics.update(step_time_s=step_time, tokens_per_s=tokens_per_step / max(step_time, 1e-9))
            writer.write(s, metrics)
            progress.update(s, metrics)
        if s == start_step + 1 or s % cfg.train.log_every == 0:
            restart_clock(s)

    try:
        while step < cfg.train.num_steps:
            batch = parallel.make_global_batch(next(batches), mesh)
            state, metrics_dev = step_fn(state, backbone, batch)
            step += 1
            if pending is not None:
                check_and_log(pending)
            pending = (step, metrics_dev)
            eval_due = cfg.train.eval_every and step % cfg.train.eval_every == 0
            stop_now = preempted(step)
            save_due = step % cfg.train.save_every == 0 or step == cfg.train.num_steps or stop_now
            if save_due or eval_due:
                check_and_log(pending)  # never save a diverged state
                pending = None
            if save_due:
                checkpoints.save(step, state.prompt, state.opt_state, batches.state(), meta)
            if eval_due and step != cfg.train.num_steps:
                best_metric = _evaluate_and_keep_best(evaluator, state, backbone, dev_splits, names, step, writer,
                                                      best, batches, meta, best_metric, workdir)
            if save_due or eval_due:
                restart_clock(step)
            if stop_now:
                checkpoints.wait()
                log.warning("SIGTERM: saved step %d to %s; rerun the same command to resume.", step,
                            checkpoints.directory)
                return {"preempted_at": step}
        if pending is not None:
            check_and_log(pending)
        best_metric = _evaluate_and_keep_best(evaluator, state, backbone, dev_splits, names, step, writer, best,
                                              batches, meta, best_metric, workdir)
    finally:
        checkpoints.wait()
        best.wait()
        writer.close()
        sigterm.close()

    # ---------------------------------------------------------------- final: best dev checkpoint on test
    best_step = best.latest_step()
    restored = best.restore(best_step, abstract_state.prompt, abstract_state.opt_state, expected_meta=meta,
                            shardings=state_shardings)
    test_splits = load(cfg.train.test_split)
    dev = evaluator(restored.prompt, backbone, dev_splits)
    test = evaluator(restored.prompt, backbone, test_splits)
    chance = {t.name: t.chance for t in tasks if t.chance is not None}
    per_task = counts.per_task
    table = "\n\n".join([
        results_table(dev, chance, per_task, title=f"dev ({cfg.train.eval_split}), best step {best_step}",
                      initial=initial_dev),
        results_table(test, chance, per_task, title=f"test ({cfg.train.test_split})"),
    ])
    results = {"dev": dev, "test": test, "best_step": best_step, "param_counts": counts.as_dict()}
    if initial_dev is not None:
        results["initial_dev"] = initial_dev
    write_results(workdir, results, table)
    if print_results and _on_process_zero():
        print(table, flush=True)
    return results


class Evaluator:
    """Jitted generation and rank classification, shared by in-loop, final and offline evaluation."""

    def __init__(self, model: PromptedT5, tasks, task_ids, tokenizer, mesh, cfg):
        self.tasks, self.tokenizer, self.mesh, self.cfg = tasks, tokenizer, mesh, cfg
        self.task_ids = list(task_ids)
        self._generate = jax.jit(greedy_generate_fn(model, cfg.data.max_target_len, tokenizer.eos_token_id,
                                                    tokenizer.pad_token_id))
        self._classify = jax.jit(rank_classify_fn(model))
        self.labels = {t.name: label_word_ids(t, tokenizer, cfg.data.max_target_len)
                       for t in tasks if t.label_words}

    def __call__(self, prompt, backbone, splits) -> dict:
        put = lambda b: parallel.make_global_batch(b, self.mesh)
        decode = lambda toks: [s.strip() for s in self.tokenizer.batch_decode(toks, skip_special_tokens=True)]
        return evaluate_tasks(
            self.tasks, splits, self.task_ids, self.cfg.data.eval_batch_size, put,
            generate=lambda b: self._generate(prompt, backbone, b),
            classify=lambda b, name: self._classify(prompt, backbone, b, self.labels[name]),
            decode_tokens=decode, mode=self.cfg.train.eval_mode)


def _read_best(workdir: str) -> float:
    path = os.path.join(workdir, "best_dev.json")
    if os.path.isfile(path):
        with open(path) as f:
            return float(json.load(f)["average"])
    return -math.inf


def _evaluate_and_keep_best(evaluator, state, backbone, dev_splits, names, step, writer, best, batches, meta,
                            best_metric, workdir) -> float:
    """Scores dev; if the task-average primary metric improved, saves the prompt as the best checkpoint."""
    results = evaluator(state.prompt, backbone, dev_splits)
    average = float(np.mean([results[n]["primary"] for n in names]))
    writer.write(step, {f"dev/{n}/{k}": v for n in names for k, v in results[n].items() if isinstance(v, float)}
                 | {"dev/average": average})
    log.info("step %d dev average %.2f (%s)", step, average,
             ", ".join(f"{n} {results[n]['primary']:.1f}" for n in names))
    if average > best_metric:
        best.save(step, state.prompt, state.opt_state, batches.state(), meta, force=True)
        best.wait()
        if _on_process_zero():
            with open(os.path.join(workdir, "best_dev.json"), "w") as f:
                json.dump({"step": step, "average": average, "results": results}, f, indent=2)
        return average
    return best_metric


def evaluate_checkpoint(workdir: str, task_names: Optional[list[str]] = None, splits: tuple[str, ...] = ("dev", "test"),
                        step: Optional[int] = None, use_best: bool = True) -> dict:
    """Scores a finished (or running) run's prompt on some of its tasks and splits.

    Reads ``workdir/config.json``, restores the best dev checkpoint (or ``step`` /
    the latest one), and returns ``{split: {task: scores}}`` plus the parameter counts.
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise ckpt_lib.CheckpointNotFoundError(f"{workdir} has no config.json: it is not a talora_jax run directory.")
    with open(path) as f:
        cfg = resolve_config(ml_collections.ConfigDict(json.load(f)))
    run = setup(cfg)
    wanted = task_list(task_names) if task_names else run.names
    unknown = [n for n in wanted if n not in run.names]
    if unknown:
        raise DataError(f"{unknown} were not trained in {workdir} (its tasks: {run.names}); the prompt has no "
                        "task rows for them. Transfer to them with configs/transfer.py instead.")
    which = ckpt_lib.Checkpointer(workdir, subdir="best" if use_best and step is None else "checkpoints")
    if which.latest_step() is None:
        which = ckpt_lib.Checkpointer(workdir)
    chosen = step if step is not None else which.latest_step()
    restored = which.restore(chosen, abstract_prompt_params(run.model.spec, run.t5_cfg), None,
                             expected_meta=run.meta(), shardings=parallel.replicated(run.mesh))
    ids = [run.names.index(n) for n in wanted]
    evaluator = Evaluator(run.model, [run.tasks[i] for i in ids], ids, run.tokenizer, run.mesh, cfg)
    load = _split_loader(cfg, wanted, run.tokenizer, workdir)
    out = {split: evaluator(restored.prompt, run.backbone, load(split)) for split in splits}
    return {**out, "step": chosen, "checkpoint": which.directory, "param_counts": run.counts.as_dict()}
