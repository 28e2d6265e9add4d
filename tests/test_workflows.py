"""The multi-run workflows: few-shot over seeds (mean ± std table) and its per-run subsets."""

import json
import os

import pytest

from configs.demo import get_config
from talora_jax import workflows


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    config = get_config()
    config.model.standin_dir = str(tmp_path_factory.mktemp("standin"))
    config.model.standin_steps = 30
    config.data.tasks = "synth_topic,synth_negation"
    config.data.batch_size = 8
    config.data.eval_batch_size = 16
    config.data.max_eval_examples = 12
    config.train.num_steps = 4
    config.train.save_every = 4
    config.train.eval_at_start = False
    config.optim.warmup_steps = 1
    return config


def test_fewshot_runs_every_k_and_seed_and_tabulates_mean_std(tiny_config, tmp_path):
    config = tiny_config
    config.workflow = "fewshot"
    config.fewshot.k = "4"
    config.fewshot.seeds = "0,1"
    results = workflows.run(config, str(tmp_path))
    assert results["k"] == [4] and results["seeds"] == [0, 1]
    for k in (4,):
        for seed in (0, 1):
            run = tmp_path / f"k{k}_seed{seed}"
            resolved = json.loads((run / "config.json").read_text())
            assert resolved["data"]["few_shot_k"] == k and resolved["data"]["seed"] == seed
        assert all(len(v) == 2 for v in results["scores"][str(k)].values())
    table = (tmp_path / "fewshot_results.md").read_text()
    assert "| synth_topic |" in table and "±" in table and "k=4" in table and "| average |" in table


def test_unknown_workflow_is_a_user_error(tiny_config, tmp_path):
    from talora_jax.errors import UserError
    config = tiny_config
    config.workflow = "pretrain"
    with pytest.raises(UserError, match="train, source_transfer, fewshot"):
        workflows.run(config, str(tmp_path))
