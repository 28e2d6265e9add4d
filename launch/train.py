"""Train a TA-LoRA (or PT / MPT) prompt over a frozen T5.

    python launch/train.py --config=configs/demo.py --workdir=/tmp/talora_demo
    python launch/train.py --config=configs/t5_base.py --workdir=$HOME/runs/t5b \\
        --config.optim.lr_fast=0.1 --config.data.tasks=mnli,sst2

The resolved config is written to ``<workdir>/config.json``; rerunning the same
command resumes from the newest checkpoint. ``config.workflow`` chooses a single
run, source->target transfer, or few-shot over seeds (see talora_jax/workflows.py).
"""

import sys

import common  # noqa: F401,I001  (first: puts the repo on sys.path)
from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A configs/*.py file; override fields with --config.<field>=<value>.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, metrics and results.")


def main(argv):
    if len(argv) > 1:
        common.fail(f"unexpected arguments {argv[1:]}; flags look like --config=... --workdir=...")
    config = common.load_config(_CONFIG)
    workdir = common.check_workdir(_WORKDIR.value)
    common.setup_logging()
    from talora_jax import workflows
    common.run_reporting_user_errors(lambda: workflows.run(config, workdir))


if __name__ == "__main__":
    app.run(main, flags_parser=common.parse_flags)
