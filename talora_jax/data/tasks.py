"""The task registry: every task (TFDS benchmark, synthetic, user file) by name.

A ``Task`` turns raw data into T5-style text examples and scores raw prediction
strings. The rest of the system only ever sees tasks through ``get(name)`` and
``names()``, so a benchmark task, a synthetic offline task and a user's JSONL task
are interchangeable in configs.

Built-in tasks register lazily on first lookup, so importing this module does not
import TensorFlow.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from typing import Any, Callable, Iterator, Mapping, Sequence

from talora_jax.data import metrics
from talora_jax.data.errors import SplitNotFoundError, UnknownTaskError

SPLITS = ("train", "dev", "test")

Example = dict[str, Any]


class Task:
    """A text-to-text task.

    Attributes:
      name: registry name (what configs use).
      label_words: the fixed target words of a label task, in class-id order (used for
        rank classification and to parse predictions); None for generation tasks.
      metric_names: the keys ``score`` returns.
      chance: expected score of a uniform random guess, in percent, for tasks where it
        is known exactly (the synthetic suite); None otherwise.
    """

    name: str
    label_words: list[str] | None = None
    metric_names: tuple[str, ...] = ("accuracy",)
    chance: float | None = None

    def text_examples(self, split: str, data_dir: str | None = None) -> Iterator[Example]:
        """Yields dicts with ``inputs`` and ``targets`` strings plus the extras ``score`` needs."""
        raise NotImplementedError

    def score(self, targets: Sequence, predictions: Sequence[str]) -> dict[str, float]:
        """Scores raw prediction strings against targets (strings or text example dicts)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A hash of everything that defines this task's text; tokenized caches are keyed by it."""
        return hashlib.sha256(json.dumps(self.definition(), sort_keys=True, default=str).encode()).hexdigest()[:16]

    def definition(self) -> dict:
        """What defines the text of this task (subclasses add their sources and versions)."""
        return {"class": type(self).__name__, "name": self.name, "label_words": self.label_words,
                "version": TEXT_FORMAT_VERSION}

    def primary(self, scores: Mapping[str, float]) -> float:
        """One number per task for tables and model selection: the mean of its metrics."""
        vals = [scores[k] for k in self.metric_names if k in scores]
        return float(sum(vals) / len(vals)) if vals else 0.0

    def check_split(self, split: str) -> None:
        """Raises a clear error for a split name outside train/dev/test."""
        if split not in SPLITS:
            raise SplitNotFoundError(
                f"Task {self.name!r} has no split {split!r}; the splits are {', '.join(SPLITS)} "
                "(dev/test follow the ATTEMPT/MPT protocol, see talora_jax/data/tfds_tasks.py).")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


# Bump when a preprocessing format changes, so old token caches become stale.
TEXT_FORMAT_VERSION = 1


def make_scorer(kind: str, label_words: Sequence[str] | None = None) -> tuple[Callable, tuple[str, ...]]:
    """Returns (score function, metric names) for a metric kind.

    Kinds: ``accuracy``, ``accuracy_f1``, ``mcc`` (label tasks), ``pearson_spearman``
    (STS-B style numbers), ``squad`` (EM/F1 max over answers), ``multirc``.
    """
    lw = list(label_words) if label_words else None
    if kind in ("accuracy", "accuracy_f1", "mcc", "f1"):
        if lw is None:
            if kind != "accuracy":
                raise ValueError(f"metric {kind!r} needs label words")
            return (lambda t, p: {"accuracy": metrics.accuracy(
                [" ".join(metrics._target_text(x).split()) for x in t], [" ".join(str(x).split()) for x in p])},
                ("accuracy",))
        extra = {"accuracy": (), "accuracy_f1": ("f1",), "f1": ("f1",), "mcc": ("mcc",)}[kind]
        names = ("mcc",) if kind == "mcc" else ("accuracy",) + extra

        def fn(t, p):
            out = metrics.score_classification(t, p, lw, extra)
            return {k: out[k] for k in names}
        return fn, names
    if kind == "pearson_spearman":
        return metrics.score_regression, ("pearson", "spearman")
    if kind == "squad":
        return metrics.score_squad, ("em", "f1")
    if kind == "multirc":
        return (lambda t, p: metrics.score_multirc(t, p, lw)), ("f1a", "em")
    raise ValueError(f"Unknown metric {kind!r}; choose from accuracy, accuracy_f1, mcc, "
                     "pearson_spearman, squad, multirc.")


METRIC_KINDS = ("accuracy", "accuracy_f1", "mcc", "pearson_spearman", "squad", "multirc")


class ScoredTask(Task):
    """A task whose scoring is one of the standard metric kinds of ``make_scorer``."""

    def __init__(self, name: str, metric: str, label_words: Sequence[str] | None = None):
        self.name = name
        self.metric = metric
        self.label_words = list(label_words) if label_words else None
        self._score, self.metric_names = make_scorer(metric, self.label_words)

    def score(self, targets: Sequence, predictions: Sequence[str]) -> dict[str, float]:
        """Postprocesses ``predictions`` and computes this task's metrics (percent); never raises on them."""
        targets, predictions = list(targets), list(predictions)
        if len(targets) != len(predictions):
            raise ValueError(f"{self.name}: {len(targets)} targets but {len(predictions)} predictions")
        predictions = ["" if p is None else str(p) for p in predictions]
        return self._score(targets, predictions)

    def definition(self) -> dict:
        return {**super().definition(), "metric": self.metric}


# ----------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Task] = {}
_BUILTINS_LOADED = False


def _load_builtins() -> None:
    """Registers the TFDS and synthetic tasks (imported here to keep TensorFlow lazy)."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    from talora_jax.data import synthetic, tfds_tasks  # noqa: F401  (modules register on import)
    tfds_tasks.register_all()
    synthetic.register_all()


def register(task: Task, overwrite: bool = False) -> Task:
    """Adds a task to the registry; re-registering a name needs ``overwrite=True``."""
    if not overwrite and task.name in _REGISTRY and _REGISTRY[task.name] is not task:
        raise ValueError(f"A task named {task.name!r} is already registered; pick another name "
                         "or pass overwrite=True.")
    _REGISTRY[task.name] = task
    return task


def unregister(name: str) -> None:
    """Removes a task (tests and notebooks re-register user tasks)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Task:
    """The task registered under ``name``; unknown names suggest the closest ones."""
    _load_builtins()
    if isinstance(name, Task):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownTaskError(
            f"Unknown task {name!r}.{hint} Known tasks: {', '.join(sorted(_REGISTRY))}. "
            "User tasks from JSONL/TSV files must be registered first "
            "(talora_jax.data.user_tasks.register_from_config).") from None


def names() -> list[str]:
    """All registered task names, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)
