"""launch/train.py and launch/evaluate.py as a user runs them: subprocesses, overrides, user errors."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, timeout=600, env_extra=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})}
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's laptop
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _tiny(standin, *extra):
    """configs/demo.py shrunk to seconds: a barely pretrained stand-in, a few steps, small evals."""
    return ["launch/train.py", "--config=configs/demo.py", f"--config.model.standin_dir={standin}",
            "--config.model.standin_steps=30", "--config.workflow=train", "--config.train.num_steps=6",
            "--config.train.save_every=3", "--config.train.log_every=2", "--config.data.max_eval_examples=16",
            "--config.data.batch_size=8", "--config.data.eval_batch_size=16", "--config.train.eval_at_start=False",
            "--config.optim.warmup_steps=2",
            *extra]


def test_source_then_transfer_then_evaluate(tmp_path):
    standin, source, target = tmp_path / "standin", tmp_path / "source", tmp_path / "target"
    out = _run(_tiny(standin, f"--workdir={source}", "--config.data.tasks=synth_topic,synth_negation",
                     "--config.optim.lr_fast=0.1"))
    assert out.returncode == 0, out.stderr[-3000:]
    resolved = json.loads((source / "config.json").read_text())
    assert resolved["optim"]["lr_fast"] == 0.1  # the override reached the resolved config
    assert resolved["data"]["tasks"] == "synth_topic,synth_negation" and resolved["prompt"]["num_tasks"] == 2
    assert "step 6/6" in out.stdout and "| synth_topic |" in out.stdout
    steps = sorted(int(p) for p in os.listdir(source / "checkpoints") if p.isdigit())
    assert steps[-1] == 6

    out = _run(_tiny(standin, f"--workdir={target}", f"--config.init_from={source}",
                     "--config.data.tasks=synth_sentiment"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "transfer: initialised" in out.stdout

    out = _run(["launch/evaluate.py", f"--workdir={target}", "--splits=test"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| synth_sentiment |" in out.stdout and "Trainable parameters" in out.stdout
    saved = json.loads((target / "eval" / "results.json").read_text())
    assert set(saved["test"]) == {"synth_sentiment"} and saved["test"]["synth_sentiment"]["num_examples"] == 16


@pytest.mark.parametrize("args, message", [
    (["--config.optim.lr_fastt=0.1"], "unknown config key"),
    (["--config.train.num_steps=abc"], "num_steps"),
    (["--config.data.tasks=mnlii"], "Did you mean 'mnli'"),
    (["--config.model.standin_dir=", "--config.model.name_or_path=/nonexistent/t5"], "does not exist"),
    (["--config.require_init_from=True"], "--config.init_from"),
])
def test_user_errors_exit_with_a_message_and_no_traceback(tmp_path, args, message):
    out = _run(["launch/train.py", "--config=configs/demo.py", f"--workdir={tmp_path / 'w'}", *args])
    assert out.returncode != 0
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]


def test_unwritable_workdir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = _run(["launch/train.py", "--config=configs/demo.py", f"--workdir={blocker / 'run'}"])
    assert out.returncode != 0 and "cannot create the workdir" in out.stderr and "Traceback" not in out.stderr


def test_hub_preset_offline_fails_fast_with_instructions(tmp_path):
    out = _run(["launch/train.py", "--config=configs/t5_base.py", f"--workdir={tmp_path / 'w'}"], timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "hf download t5-base" in out.stderr
