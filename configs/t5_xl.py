"""t5-3b ("XL", 24+24 layers, d_model 1024): bf16 storage, remat, and 4-way model parallelism.

    python launch/train.py --config=configs/t5_xl.py --workdir=$HOME/runs/t5_xl

On a v4-8 / v5e-8 host: model=4 splits heads, MLP and vocabulary over 4 chips and
data parallelism takes the rest; remat trades backbone recomputation for
activation memory, which prompt tuning needs since it backpropagates through
every frozen layer.
"""

from configs.base import preset_config


def get_config(method: str = "talora"):
    config = preset_config("t5-3b", method or "talora", param_dtype="bfloat16", remat=True)
    config.mesh.model = 4
    return config
