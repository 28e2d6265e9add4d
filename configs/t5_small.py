"""t5-small: source multi-task training on the six MPT/ATTEMPT source tasks.

    python launch/train.py --config=configs/t5_small.py --workdir=$HOME/runs/t5_small
    python launch/train.py --config=configs/t5_small.py:mpt ...   # the MPT baseline, same everything
"""

from configs.base import preset_config


def get_config(method: str = "talora"):
    return preset_config("t5-small", method or "talora")
