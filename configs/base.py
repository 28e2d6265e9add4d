"""Every field the trainer reads, with the defaults of the MPT/ATTEMPT setup.

Model presets (``t5_base.py`` ...) and the demo start from ``get_base_config()``
and override what differs; the trainer never invents a default of its own.
"""

from __future__ import annotations

import ml_collections

from configs.prompt_defaults import get_prompt_config


def get_base_config(method: str = "talora") -> ml_collections.ConfigDict:
    """All trainer fields. ``method`` picks the prompt defaults (talora, pt or mpt)."""
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict(dict(
        name_or_path="t5-base",    # hub name or local dir with config.json + *.safetensors
        tokenizer="",              # "" = same as name_or_path
        dtype="bfloat16",          # compute dtype
        param_dtype="float32",     # storage of the frozen weights ("bfloat16" halves memory)
        remat=False,               # rematerialise backbone layers (memory for compute)
        standin_dir="",            # offline demo only: build a stand-in pretrained T5 here and use it
        standin_steps=1500,
    ))

    config.prompt = get_prompt_config(method)

    config.data = ml_collections.ConfigDict(dict(
        tasks="source",             # task names and/or suites (source, glue, superglue, mrqa, others, all)
        data_dir="",                # TFDS data_dir ("" = TFDS default)
        cache_dir="",               # tokenized cache ("" = <workdir>/token_cache)
        max_input_len=256,
        max_target_len=16,
        batch_size=32,              # global batch, over all hosts
        eval_batch_size=64,
        mixture="proportional",     # proportional | temperature
        mixture_cap=0,              # examples-proportional cap (0 = none)
        temperature=1.0,
        few_shot_k=0,               # > 0: k training examples per task
        max_eval_examples=0,        # > 0: evaluate on a prefix of each split (quick checks)
        user_tasks=ml_collections.ConfigDict(),  # name -> {path, input_field, target_field, metric}
        seed=0,
    ))

    config.optim = ml_collections.ConfigDict(dict(
        optimizer="adafactor",      # adafactor | adam
        lr_fast=0.3,                # task_coeffs and gates (fast weights)
        lr_slow=0.03,               # shared_prompt and basis (slow weights)
        warmup_steps=500,
        decay="linear",             # constant | linear
        weight_decay=1e-5,
        clip_norm=1.0,              # 0 disables
        grad_accum=1,
        freeze_slow=False,          # transfer: keep P0 and B as the source left them
    ))

    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1))

    config.train = ml_collections.ConfigDict(dict(
        num_steps=30000,
        log_every=50,
        eval_every=5000,            # 0 = only at the end
        save_every=1000,
        keep_checkpoints=3,
        eval_mode="auto",           # auto (rank for label tasks) | generate | rank
        eval_split="dev",
        eval_at_start=False,        # also score the untrained prompt (shows what was learned)
        test_split="test",
        seed=0,
    ))

    # What launch/train.py runs: train | source_transfer | fewshot (talora_jax/workflows.py).
    config.workflow = "train"

    # Transfer: a source run's workdir; its P0, B and gates seed this run.
    config.init_from = ""
    config.require_init_from = False  # configs/transfer.py: refuse to run without init_from
    config.transfer_init = "mean"   # mean | task:<source task name> | random
    config.distributed = False      # call jax.distributed.initialize() (TPU pods: set True)

    # workflow=source_transfer: after source training, transfer to these held-out tasks.
    config.transfer = ml_collections.ConfigDict(dict(tasks="", num_steps=1000, init="mean", freeze_slow=False))
    # workflow=fewshot: k examples per task, one run per (k, seed).
    config.fewshot = ml_collections.ConfigDict(dict(k="4,16,32", seeds="0,1,2"))
    return config


def preset_config(hub_name: str, method: str = "talora", **model) -> ml_collections.ConfigDict:
    """A hub-checkpoint config with the MPT/ATTEMPT defaults (l=100, input 256, lr 0.3, batch 32).

    Mesh: data parallel over every chip of the host (a v4-8 or v5e-8 host has 4/8
    chips); the backbone is replicated, since prompt tuning keeps it frozen and small
    batches per chip leave room for it.
    """
    config = get_base_config(method)
    config.model.name_or_path = hub_name
    config.model.update(model)
    return config
