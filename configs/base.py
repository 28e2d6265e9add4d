"""Every field the trainer reads, with the defaults of the MPT/ATTEMPT setup.

Model presets (``t5_base.py`` ...) and the demo start from ``get_base_config()``
and override what differs; the trainer never invents a default of its own.
"""

from __future__ import annotations

import ml_collections

from configs.prompt_defaults import get_prompt_config


def get_base_config(method: str = "talora") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict(dict(
        name_or_path="t5-base",    # hub name or local dir with config.json + *.safetensors
        tokenizer="",              # "" = same as name_or_path
        dtype="bfloat16",          # compute dtype
        param_dtype="float32",     # storage of the frozen weights ("bfloat16" halves memory)
        remat=False,               # rematerialise backbone layers (memory for compute)
    ))

    config.prompt = get_prompt_config(method)

    config.data = ml_collections.ConfigDict(dict(
        tasks="mnli,sst2,qnli,qqp,squad,record",  # comma-separated registry names
        data_dir="",                # TFDS data_dir ("" = TFDS default)
        cache_dir="",               # tokenized cache ("" = <workdir>/../token_cache)
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
        test_split="test",
        seed=0,
    ))

    # Transfer: a source run's workdir; its P0, B and gates seed this run.
    config.init_from = ""
    config.transfer_init = "mean"   # mean | task:<source task name> | random
    config.distributed = False      # call jax.distributed.initialize() (TPU pods: set True)
    return config
