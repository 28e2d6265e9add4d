"""The offline demo: a few minutes on 2 CPU cores, no downloads.

Pretrains a tiny stand-in T5 on separate synthetic data (plainly a stand-in for
a pretrained checkpoint, cached in ~/.cache/talora_jax), freezes it, trains a
TA-LoRA prompt on two synthetic source tasks, transfers it to a held-out
synthetic target task, and prints test scores beside chance and the untrained
(step 0) prompt. The other synthetic tasks (synth_pair, synth_largest,
synth_span) are beyond what this 64-wide stand-in learns; add them with
--config.data.tasks=... to see that honestly.

    python launch/train.py --config=configs/demo.py --workdir=/tmp/talora_demo
"""

import os

from configs.base import get_base_config


def get_config(method: str = "talora"):
    config = get_base_config(method or "talora")
    config.workflow = "source_transfer"
    config.model.standin_dir = os.path.join(os.path.expanduser("~"), ".cache", "talora_jax", "standin_t5")
    config.model.standin_steps = 1500
    config.model.dtype = "float32"           # CPU: bf16 is emulated and slower
    config.prompt.shared_len = 20
    if method in ("talora", None, ""):
        config.prompt.task_len = 8
        config.prompt.rank = 4
    config.prompt.init.vocab_range = (3, 500)   # the stand-in's SentencePiece pieces
    config.data.tasks = "synth_topic,synth_negation"
    config.data.max_input_len = 48
    config.data.max_target_len = 8
    config.data.batch_size = 32
    config.data.eval_batch_size = 128
    config.data.max_eval_examples = 300
    config.optim.optimizer = "adam"
    config.optim.warmup_steps = 20
    config.optim.decay = "constant"
    config.train.num_steps = 300
    config.train.log_every = 50
    config.train.save_every = 100
    config.train.eval_every = 0
    config.train.eval_at_start = True
    config.transfer.tasks = "synth_sentiment"
    config.transfer.num_steps = 300
    return config
