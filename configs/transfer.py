"""Transfer a source run's prompt to target tasks (the paper's target tables).

    python launch/train.py --config=configs/transfer.py --workdir=$HOME/runs/t5b_glue \
        --config.init_from=$HOME/runs/t5_base --config.data.tasks=glue

P0, B and the gates come from the source run; each target's A_t starts from the
mean of the source A_k (--config.transfer_init=task:mnli copies one, =random draws
afresh). --config.optim.freeze_slow=True keeps P0 and B as the source left them.
"""

from configs.base import preset_config


def get_config(method: str = "talora"):
    config = preset_config("t5-base", method or "talora")
    config.data.tasks = "glue"
    config.require_init_from = True
    config.train.num_steps = 5000
    config.train.eval_every = 1000
    return config
