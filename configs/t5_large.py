"""t5-large: source multi-task training on the six MPT/ATTEMPT source tasks.

    python launch/train.py --config=configs/t5_large.py --workdir=$HOME/runs/t5_large
    python launch/train.py --config=configs/t5_large.py:mpt ...   # the MPT baseline, same everything
"""

from configs.base import preset_config


def get_config(method: str = "talora"):
    return preset_config("t5-large", method or "talora")
