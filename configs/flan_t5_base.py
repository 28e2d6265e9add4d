"""google/flan-t5-base: source multi-task training on the six MPT/ATTEMPT source tasks.

    python launch/train.py --config=configs/flan_t5_base.py --workdir=$HOME/runs/flan_t5_base
    python launch/train.py --config=configs/flan_t5_base.py:mpt ...   # the MPT baseline, same everything
"""

from configs.base import preset_config


def get_config(method: str = "talora"):
    return preset_config("google/flan-t5-base", method or "talora")
