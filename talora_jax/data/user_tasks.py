"""User tasks from local JSONL or TSV files, named in the config.

A config entry looks like::

    {"name": "my_sentiment",
     "train": "/data/train.jsonl", "dev": "/data/dev.jsonl", "test": "/data/test.jsonl",
     "input_field": "text", "target_field": "label",
     "metric": "accuracy",                 # accuracy | accuracy_f1 | mcc | pearson_spearman | squad | multirc
     "label_words": ["negative", "positive"],   # optional; enables F1/MCC and rank classification
     "prefix": "my_sentiment",             # optional task prefix of the inputs (default: the name)
     "answers_field": "answers",           # optional list of gold answers for squad-style scoring
     "group_field": "question_id"}         # needed by the multirc metric

Files are JSONL (one JSON object per line) or TSV with a header row, chosen by the
extension (``.jsonl``/``.json`` or ``.tsv``) or by ``"format"``. A split without a file
is a clear error when it is asked for, never silently replaced.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any, Iterator, Mapping, Sequence

from talora_jax.data import tasks
from talora_jax.data.errors import DataFormatError, DataNotFoundError, SplitNotFoundError

_KNOWN_KEYS = {"name", "train", "dev", "test", "input_field", "target_field", "metric", "label_words", "prefix",
               "answers_field", "group_field", "format"}


def read_records(path: str, fmt: str | None = None) -> list[dict[str, Any]]:
    """All records of a JSONL or TSV file, with the line number of any malformed line in the error."""
    if not os.path.exists(path):
        raise DataNotFoundError(f"Data file {path!r} does not exist; fix the path in the task config.")
    fmt = fmt or ("tsv" if path.endswith(".tsv") else "jsonl")
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", newline="") as f:
        if fmt == "tsv":
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader, None)
            if not header:
                raise DataFormatError(f"{path}: empty TSV file; it needs a header row naming the columns.")
            for lineno, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataFormatError(f"{path}:{lineno}: expected {len(header)} tab-separated fields "
                                          f"({', '.join(header)}), found {len(row)}.")
                records.append(dict(zip(header, row)))
        elif fmt in ("jsonl", "json"):
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataFormatError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno}); "
                                          "each line must be one JSON object.") from None
                if not isinstance(rec, dict):
                    raise DataFormatError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}.")
                records.append(rec)
        else:
            raise DataFormatError(f"{path}: unknown format {fmt!r}; use 'jsonl' or 'tsv'.")
    if not records:
        raise DataFormatError(f"{path}: the file has no examples.")
    return records


class UserTask(tasks.ScoredTask):
    """A task whose splits are local files."""

    def __init__(self, name: str, files: Mapping[str, str], input_field: str, target_field: str,
                 metric: str = "accuracy", label_words: Sequence[str] | None = None, prefix: str | None = None,
                 answers_field: str | None = None, group_field: str | None = None, fmt: str | None = None):
        if metric not in tasks.METRIC_KINDS:
            raise DataFormatError(f"Task {name!r}: unknown metric {metric!r}; choose from "
                                  f"{', '.join(tasks.METRIC_KINDS)}.")
        if metric in ("mcc", "accuracy_f1", "multirc") and (not label_words or len(label_words) != 2):
            raise DataFormatError(f"Task {name!r}: metric {metric!r} needs two label_words "
                                  "(negative class first, positive second).")
        if metric == "multirc" and not group_field:
            raise DataFormatError(f"Task {name!r}: the multirc metric needs group_field (the question id).")
        super().__init__(name, metric, label_words)
        self.files = {k: v for k, v in files.items() if v}
        if "train" not in self.files:
            raise DataFormatError(f"Task {name!r}: a user task needs at least a 'train' file.")
        self.input_field = input_field
        self.target_field = target_field
        self.prefix = name if prefix is None else prefix
        self.answers_field = answers_field
        self.group_field = group_field
        self.fmt = fmt

    def definition(self) -> dict:
        stats = {}
        for split, path in sorted(self.files.items()):
            try:
                st = os.stat(path)
                stats[split] = [os.path.abspath(path), st.st_size, st.st_mtime_ns]
            except OSError:
                stats[split] = [os.path.abspath(path), None, None]
        return {**super().definition(), "files": stats, "fields": [self.input_field, self.target_field,
                self.answers_field, self.group_field], "prefix": self.prefix, "format": self.fmt}

    def text_examples(self, split: str, data_dir: str | None = None) -> Iterator[tasks.Example]:
        """Text examples read from the split's file (``data_dir`` is ignored: paths are in the config)."""
        self.check_split(split)
        if split not in self.files:
            raise SplitNotFoundError(f"User task {self.name!r} has no {split!r} file; add "
                                     f"\"{split}\": PATH to its config (it has {', '.join(sorted(self.files))}).")
        path = self.files[split]
        for i, rec in enumerate(read_records(path, self.fmt)):
            for field in (self.input_field, self.target_field):
                if field not in rec:
                    where = f"line {i + 1}" if not path.endswith(".tsv") else f"row {i + 1}"
                    raise DataFormatError(f"{path} ({where}): missing field {field!r}; found "
                                          f"{', '.join(map(str, rec))}. Set input_field/target_field in the config.")
            inputs = " ".join(str(rec[self.input_field]).split())
            target = " ".join(str(rec[self.target_field]).split())
            if self.label_words and target not in self.label_words:
                raise DataFormatError(f"{path} (example {i + 1}): target {target!r} is not one of the "
                                      f"label_words {self.label_words}.")
            ex: dict[str, Any] = {"inputs": f"{self.prefix} {inputs}".strip() if self.prefix else inputs,
                                  "targets": target}
            if self.answers_field and self.answers_field in rec:
                answers = rec[self.answers_field]
                ex["answers"] = [str(a) for a in (answers if isinstance(answers, list) else [answers])]
            if self.group_field:
                ex["group"] = str(rec.get(self.group_field, i))
            yield ex


def from_config(cfg: Mapping[str, Any]) -> UserTask:
    """Builds a user task from a config-like mapping (a dict or an ml_collections ConfigDict)."""
    cfg = dict(cfg)
    unknown = set(cfg) - _KNOWN_KEYS
    if unknown:
        raise DataFormatError(f"User task config has unknown keys {sorted(unknown)}; known keys are "
                              f"{sorted(_KNOWN_KEYS)}.")
    for key in ("name", "train", "input_field", "target_field"):
        if not cfg.get(key):
            raise DataFormatError(f"User task config needs {key!r} (got keys {sorted(cfg)}).")
    return UserTask(name=cfg["name"], files={s: cfg.get(s) for s in tasks.SPLITS},
                    input_field=cfg["input_field"], target_field=cfg["target_field"],
                    metric=cfg.get("metric", "accuracy"), label_words=cfg.get("label_words"),
                    prefix=cfg.get("prefix"), answers_field=cfg.get("answers_field"),
                    group_field=cfg.get("group_field"), fmt=cfg.get("format"))


def register_from_config(cfg: Mapping[str, Any], overwrite: bool = True) -> UserTask:
    """Builds a user task and registers it, so ``tasks.get(cfg['name'])`` finds it."""
    task = from_config(cfg)
    if task.name in tasks.names() and not isinstance(tasks.get(task.name), UserTask):
        raise DataFormatError(f"User task name {task.name!r} clashes with a built-in task; rename it.")
    return tasks.register(task, overwrite=overwrite)
