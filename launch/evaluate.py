"""Evaluate a run's prompt checkpoint on chosen tasks and splits; print the paper-style table.

    python launch/evaluate.py --workdir=$HOME/runs/t5_base                 # best dev checkpoint, dev+test
    python launch/evaluate.py --workdir=RUN --tasks=mnli,sst2 --splits=test --step=3000

Writes ``<workdir>/eval/results.json`` and ``results.md``: per-task metrics, group
averages (GLUE, SuperGLUE, MRQA, others) and trainable parameters per task.
"""

import os

import common  # noqa: F401,I001  (first: puts the repo on sys.path)
from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "A run directory written by launch/train.py.")
_TASKS = flags.DEFINE_string("tasks", "", "Comma-separated tasks or suites (default: all tasks of the run).")
_SPLITS = flags.DEFINE_string("splits", "dev,test", "Comma-separated splits: dev, test (or train).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the best dev checkpoint, else the latest).")


def _tables(results: dict, splits: list[str]) -> str:
    from talora_jax.data import suites, tasks as tasks_lib
    from talora_jax.train.evaluate import results_table

    per_task = results["param_counts"]["per_task"]
    shared = results["param_counts"]["shared"]
    parts = []
    for split in splits:
        scores = results[split]
        chance = {n: tasks_lib.get(n).chance for n in scores if tasks_lib.get(n).chance is not None}
        parts.append(results_table(scores, chance or None, per_task,
                                   title=f"{split} split, checkpoint step {results['step']}"))
        groups = []
        for group in ("glue", "superglue", "mrqa", "others", "synthetic"):
            members = [n for n in suites.SUITES[group] if n in scores]
            if members:
                avg = sum(scores[n]["primary"] for n in members) / len(members)
                groups.append(f"| {group} ({len(members)} tasks) | {avg:.1f} |")
        if groups:
            parts.append("| group | average |\n|---|---|\n" + "\n".join(groups))
    parts.append(f"Trainable parameters: {shared:,} shared + {per_task:,} per task.")
    return "\n\n".join(parts)


def main(argv):
    if len(argv) > 1:
        common.fail(f"unexpected arguments {argv[1:]}")
    if not _WORKDIR.value or not os.path.isdir(_WORKDIR.value):
        common.fail(f"--workdir={_WORKDIR.value!r} is not a directory; pass a run directory of launch/train.py.")
    common.setup_logging()
    splits = [s.strip() for s in _SPLITS.value.split(",") if s.strip()]

    def run():
        from talora_jax.train.evaluate import write_results
        from talora_jax.train.loop import evaluate_checkpoint

        results = evaluate_checkpoint(_WORKDIR.value, _TASKS.value or None, tuple(splits), _STEP.value)
        table = _tables(results, splits)
        write_results(os.path.join(_WORKDIR.value, "eval"), results, table)
        print(table, flush=True)

    common.run_reporting_user_errors(run)


if __name__ == "__main__":
    app.run(main, flags_parser=common.parse_flags)
