"""Few-shot transfer: k in {4, 16, 32} training examples per task, three seeds, mean ± std.

    python launch/train.py --config=configs/fewshot.py --workdir=$HOME/runs/fewshot \
        --config.init_from=$HOME/runs/t5_base --config.data.tasks=superglue

One run per (k, seed) in <workdir>/k<k>_seed<seed>; the table is written to
fewshot_results.md. Leave init_from empty to few-shot train from scratch.
"""

from configs.base import preset_config


def get_config(method: str = "talora"):
    config = preset_config("t5-base", method or "talora")
    config.workflow = "fewshot"
    config.data.tasks = "superglue"
    config.fewshot.k = "4,16,32"
    config.fewshot.seeds = "0,1,2"
    config.train.num_steps = 300
    config.train.eval_every = 100
    config.optim.warmup_steps = 30
    return config
