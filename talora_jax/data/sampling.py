"""Mixture rates, the deterministic batch sampler and few-shot subsets.

The sampler is a pure function of (seed, step): it never keeps hidden state, so the
iterator state saved in a checkpoint is just the step, a restart at step s
reproduces the exact batches from s on, and every host computes the same global
batch indices and then materialises only its own rows.

For each global batch row p = step * B + r:
- its task is drawn from the mixture rates with a generator seeded by (seed, step);
- its example is element ``p mod n`` of that task's stream, where the stream is a
  fresh permutation of the task's n examples for each epoch ``p // n`` (seeded by
  seed, task position, epoch). With one task this is exact epoch-by-epoch sampling
  without replacement; in a mixture, no example repeats within a window of n rows.
"""

from __future__ import annotations

import zlib
from typing import Iterator, Mapping, Sequence

import numpy as np

from talora_jax.data.errors import DataError, FewShotError
from talora_jax.data.pipeline import TokenizedSplit, host_rows, make_batch

# ----------------------------------------------------------------------------- mixture rates


def mixture_rates(sizes: Mapping[str, int], mode: str = "proportional", cap: int | None = None,
                  temperature: float = 1.0) -> dict[str, float]:
    """Sampling rate per task.

    - ``proportional``: r_t = min(n_t, cap) / sum_u min(n_u, cap) (examples-proportional
      with an artificial size limit, T5 section 3.5.2; no cap when ``cap`` is None);
    - ``temperature``: r_t proportional to min(n_t, cap) ** (1 / temperature)
      (temperature 1 is proportional, larger flattens towards equal);
    - ``equal``: every task the same rate.
    """
    if not sizes:
        raise DataError("A mixture needs at least one task.")
    names = list(sizes)
    n = np.array([float(sizes[k]) for k in names])
    if np.any(n <= 0):
        raise DataError(f"Every task in a mixture needs examples; sizes are {dict(sizes)}.")
    if cap is not None:
        if cap <= 0:
            raise DataError(f"The mixture cap must be positive (got {cap}).")
        n = np.minimum(n, float(cap))
    if mode == "proportional":
        w = n
    elif mode == "temperature":
        if temperature <= 0:
            raise DataError(f"The mixing temperature must be positive (got {temperature}).")
        w = n ** (1.0 / temperature)
    elif mode == "equal":
        w = np.ones_like(n)
    else:
        raise DataError(f"Unknown mixture mode {mode!r}; use proportional, temperature or equal.")
    w = w / w.sum()
    return {k: float(v) for k, v in zip(names, w)}


# ----------------------------------------------------------------------------- sampler


class Sampler:
    """Deterministic multi-task batch sampler keyed by (seed, step).

    Args:
      splits: the tokenized training splits, one per task (all with the same lengths).
      batch_size: the *global* batch size.
      seed: the data seed.
      rates: mixture rate per split (same order); default examples-proportional.
      task_ids: the task id emitted for each split (default: its position).
      process_index, process_count: this host and the number of hosts; ``batch(step)``
        returns this host's rows only.
    """

    def __init__(self, splits: Sequence[TokenizedSplit], batch_size: int, seed: int = 0,
                 rates: Sequence[float] | None = None, task_ids: Sequence[int] | None = None,
                 process_index: int = 0, process_count: int = 1):
        if not splits:
            raise DataError("The sampler needs at least one split.")
        if any(len(s) == 0 for s in splits):
            raise DataError(f"Empty training split(s): {[s.task for s in splits if len(s) == 0]}.")
        lens = {(s.max_input_len, s.max_target_len) for s in splits}
        if len(lens) != 1:
            raise DataError(f"All splits of a mixture must share max_input_len/max_target_len; got {sorted(lens)}.")
        if batch_size < 1:
            raise DataError(f"batch_size must be positive (got {batch_size}).")
        self.splits = list(splits)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        sizes = [len(s) for s in splits]
        r = np.asarray(rates if rates is not None else sizes, np.float64)
        if r.shape != (len(splits),) or np.any(r < 0) or r.sum() <= 0:
            raise DataError(f"rates must be {len(splits)} non-negative numbers with a positive sum (got {rates}).")
        self.rates = r / r.sum()
        self.task_ids = list(task_ids) if task_ids is not None else list(range(len(splits)))
        if len(self.task_ids) != len(splits):
            raise DataError("task_ids must have one entry per split.")
        self.rows = host_rows(self.batch_size, process_index, process_count)
        self.sizes = np.asarray(sizes, np.int64)
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}

    def _perm(self, split_pos: int, epoch: int) -> np.ndarray:
        """Split ``split_pos``'s example order in ``epoch`` (a few recent ones are kept)."""
        key = (split_pos, epoch)
        perm = self._perm_cache.get(key)
        if perm is None:
            rng = np.random.default_rng([self.seed, 1, split_pos, epoch])
            perm = rng.permutation(int(self.sizes[split_pos]))
            if len(self._perm_cache) >= 4 * len(self.splits):
                self._perm_cache.pop(next(iter(self._perm_cache)))
            self._perm_cache[key] = perm
        return perm

    def global_indices(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(split position, example index) of every row of global batch ``step``; same on every host."""
        if step < 0:
            raise DataError(f"step must be >= 0 (got {step}).")
        b = self.batch_size
        rng = np.random.default_rng([self.seed, 0, int(step)])
        if len(self.splits) == 1:
            split_pos = np.zeros(b, np.int64)
        else:
            split_pos = rng.choice(len(self.splits), size=b, p=self.rates).astype(np.int64)
        p = int(step) * b + np.arange(b, dtype=np.int64)
        n = self.sizes[split_pos]
        epoch, pos = p // n, p % n
        example = np.empty(b, np.int64)
        for i in range(b):
            example[i] = self._perm(int(split_pos[i]), int(epoch[i]))[pos[i]]
        return split_pos, example

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """This host's rows of global batch ``step``."""
        split_pos, example = self.global_indices(step)
        return make_batch(self.splits, split_pos[self.rows], example[self.rows], self.task_ids)

    def iterate(self, start_step: int = 0) -> "BatchIterator":
        """An iterator from ``start_step``; its checkpointable state is its ``step``."""
        return BatchIterator(self, start_step)


class BatchIterator:
    """Yields ``sampler.batch(step)`` for step, step+1, ...; ``state()`` is ``{"step": step}``."""

    def __init__(self, sampler: Sampler, step: int = 0):
        self.sampler = sampler
        self.step = int(step)

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.sampler.batch(self.step)
        self.step += 1
        return batch

    def state(self) -> dict[str, int]:
        """The data state to checkpoint."""
        return {"step": self.step}

    def restore(self, state: Mapping[str, int]) -> None:
        """Continues from a checkpointed state."""
        self.step = int(state["step"])


# ----------------------------------------------------------------------------- few-shot


def few_shot_indices(num_examples: int, k: int, seed: int, task: str = "") -> np.ndarray:
    """k distinct example indices drawn by (seed, task): the same seed always gives the same examples."""
    if k < 1:
        raise FewShotError(f"Few-shot k must be at least 1 (got {k}).")
    if k > num_examples:
        raise FewShotError(f"Few-shot k={k} is larger than the training set of task {task!r} "
                           f"({num_examples} examples); use a smaller k.")
    rng = np.random.default_rng([int(seed), zlib.crc32(task.encode())])
    return np.sort(rng.choice(num_examples, size=k, replace=False))


def few_shot(split: TokenizedSplit, k: int, seed: int) -> TokenizedSplit:
    """The k-shot subset of a training split for one seed."""
    return split.subset(few_shot_indices(len(split), k, seed, split.task), split=f"{split.split}[{k}-shot,{seed}]")


def few_shot_over_seeds(splits: Sequence[TokenizedSplit], k: int,
                        seeds: Sequence[int]) -> Iterator[tuple[int, list[TokenizedSplit]]]:
    """For each seed, the k-shot subsets of every task's split (the paper reports mean +- std over seeds)."""
    for seed in seeds:
        yield seed, [few_shot(s, k, seed) for s in splits]
