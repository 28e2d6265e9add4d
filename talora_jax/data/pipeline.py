"""Tokenize -> cache -> batch.

Each (task, split) is tokenized once with the backbone tokenizer and stored on disk
as ragged int32 arrays (flat ids + offsets), which keeps a 400k-example split small
and lets a batch be gathered with a few vectorised numpy ops. The cache directory is
keyed by task (and the task's own fingerprint: format version, sources, seeds, file
stamps), split, tokenizer fingerprint and both lengths; the full key is also stored
in the cache's ``meta.json`` and checked on load, so a stale cache is never used.

Batches are dicts of numpy arrays with static shapes (B = rows on this host, N =
max_input_len, T = max_target_len):

- ``task_ids`` [B] int32, ``input_ids`` / ``attention_mask`` [B, N] int32,
- ``labels`` [B, T] int32 (0 on padding), ``decoder_attention_mask`` [B, T] int32
  (1 on real target tokens including the eos), ``decoder_input_ids`` [B, T] int32
  (labels shifted right, decoder start token 0);
- eval batches add ``example_mask`` [B] (1 = real row, 0 = padding row) and
  ``example_index`` [B] (row -> example index in its split, -1 on padding).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from typing import Any, Iterator, Sequence

import numpy as np

from talora_jax.data import tasks as tasks_lib
from talora_jax.data.errors import DataError

log = logging.getLogger(__name__)

PIPELINE_VERSION = 1
_CHUNK = 2048


@dataclasses.dataclass
class TokenizedSplit:
    """One task split as ragged token arrays plus what scoring needs.

    ``examples[i]`` is text example i without its ``inputs`` (targets and scoring
    extras), so evaluation can score without re-reading the raw data.
    """

    task: str
    split: str
    max_input_len: int
    max_target_len: int
    input_ids: np.ndarray      # int32 [total input tokens]
    input_offsets: np.ndarray  # int64 [n + 1]
    target_ids: np.ndarray     # int32 [total target tokens]
    target_offsets: np.ndarray  # int64 [n + 1]
    examples: list[dict[str, Any]]
    stats: dict[str, int] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.input_offsets) - 1

    def subset(self, indices: Sequence[int], split: str | None = None) -> "TokenizedSplit":
        """A new split holding the given examples in the given order (few-shot subsets)."""
        idx = np.asarray(indices, np.int64)
        inp, inp_off = _take_ragged(self.input_ids, self.input_offsets, idx)
        tgt, tgt_off = _take_ragged(self.target_ids, self.target_offsets, idx)
        return TokenizedSplit(self.task, split or self.split, self.max_input_len, self.max_target_len, inp, inp_off,
                              tgt, tgt_off, [self.examples[i] for i in idx], {"num_examples": len(idx)})

    def rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Padded (input_ids, attention_mask, labels, decoder_attention_mask) for example indices."""
        inp, am = _gather(self.input_ids, self.input_offsets, indices, self.max_input_len)
        lab, dm = _gather(self.target_ids, self.target_offsets, indices, self.max_target_len)
        return inp, am, lab, dm


def _take_ragged(flat: np.ndarray, offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lens = offsets[idx + 1] - offsets[idx]
    new_off = np.zeros(len(idx) + 1, np.int64)
    np.cumsum(lens, out=new_off[1:])
    parts = [flat[offsets[i]:offsets[i + 1]] for i in idx]
    return (np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)), new_off


def _gather(flat: np.ndarray, offsets: np.ndarray, idx: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``idx`` of a ragged array, right-padded with 0 to ``length``, and their masks."""
    idx = np.asarray(idx, np.int64)
    starts = offsets[idx]
    lens = offsets[idx + 1] - starts
    ar = np.arange(length, dtype=np.int64)
    mask = ar[None, :] < lens[:, None]
    if flat.size == 0:
        return np.zeros((len(idx), length), np.int32), mask.astype(np.int32)
    pos = np.minimum(starts[:, None] + ar[None, :], flat.size - 1)
    ids = np.where(mask, flat[pos], 0).astype(np.int32)
    return ids, mask.astype(np.int32)


def shift_right(labels: np.ndarray, start_id: int = 0) -> np.ndarray:
    """Decoder inputs: labels shifted one step right behind the decoder start token (T5: pad id 0)."""
    out = np.full_like(labels, start_id)
    out[:, 1:] = labels[:, :-1]
    return out


def make_batch(splits: Sequence[TokenizedSplit], split_pos: np.ndarray, example_idx: np.ndarray,
               task_ids: Sequence[int]) -> dict[str, np.ndarray]:
    """Assembles a batch from (which split, which example) per row; ``task_ids[s]`` is split s's task id."""
    b = len(example_idx)
    n_len, t_len = splits[0].max_input_len, splits[0].max_target_len
    inp = np.zeros((b, n_len), np.int32)
    am = np.zeros((b, n_len), np.int32)
    lab = np.zeros((b, t_len), np.int32)
    dm = np.zeros((b, t_len), np.int32)
    for s in np.unique(split_pos):
        rows = np.nonzero(split_pos == s)[0]
        inp[rows], am[rows], lab[rows], dm[rows] = splits[int(s)].rows(example_idx[rows])
    tid = np.asarray(task_ids, np.int32)[np.asarray(split_pos, np.int64)]
    return {"task_ids": tid, "input_ids": inp, "attention_mask": am, "decoder_input_ids": shift_right(lab),
            "decoder_attention_mask": dm, "labels": lab}


# ----------------------------------------------------------------------------- tokenization


def _encode(tokenizer, texts: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Tokenizes with eos appended; over-long sequences keep their first max_len-1 tokens plus eos."""
    eos = tokenizer.eos_token_id
    lens = np.zeros(len(texts), np.int64)
    parts = []
    truncated = 0
    for start in range(0, len(texts), _CHUNK):
        ids_list = tokenizer(texts[start:start + _CHUNK], add_special_tokens=True)["input_ids"]
        for j, ids in enumerate(ids_list):
            if len(ids) > max_len:
                truncated += 1
                ids = list(ids[:max_len - 1]) + [eos]
            lens[start + j] = len(ids)
            parts.append(np.asarray(ids, np.int32))
    offsets = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    flat = np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)
    return flat, offsets, truncated


def tokenize_examples(examples: list[dict[str, Any]], tokenizer, max_input_len: int, max_target_len: int,
                      task: str = "", split: str = "") -> TokenizedSplit:
    """Tokenizes text examples (no caching), counting and logging truncation."""
    if max_input_len < 2 or max_target_len < 2:
        raise DataError(f"max_input_len and max_target_len must be at least 2 (got {max_input_len}, "
                        f"{max_target_len}).")
    inp, inp_off, trunc_in = _encode(tokenizer, [e["inputs"] for e in examples], max_input_len)
    tgt, tgt_off, trunc_tg = _encode(tokenizer, [e["targets"] for e in examples], max_target_len)
    n = len(examples)
    stats = {"num_examples": n, "inputs_truncated": trunc_in, "targets_truncated": trunc_tg}
    if trunc_in or trunc_tg:
        log.warning("%s/%s: %d of %d inputs (%.1f%%) truncated to %d tokens; %d targets (%.1f%%) truncated to %d.",
                    task, split, trunc_in, n, 100.0 * trunc_in / max(n, 1), max_input_len, trunc_tg,
                    100.0 * trunc_tg / max(n, 1), max_target_len)
    else:
        log.info("%s/%s: %d examples tokenized, none truncated.", task, split, n)
    meta = [{k: v for k, v in e.items() if k != "inputs"} for e in examples]
    return TokenizedSplit(task, split, max_input_len, max_target_len, inp, inp_off, tgt, tgt_off, meta, stats)


def cache_key(task: tasks_lib.Task, split: str, tokenizer_fp: str, max_input_len: int, max_target_len: int,
              data_dir: str | None = None) -> dict[str, Any]:
    """Everything a cached split depends on; the cache directory name is its hash."""
    return {"pipeline": PIPELINE_VERSION, "task": task.name, "task_fingerprint": task.fingerprint(), "split": split,
            "tokenizer": tokenizer_fp, "max_input_len": int(max_input_len), "max_target_len": int(max_target_len),
            "data_dir": os.path.abspath(data_dir) if data_dir else None}


def _key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def _cache_path(cache_dir: str, key: dict) -> str:
    return os.path.join(cache_dir, key["task"], f"{key['split']}-{key['max_input_len']}-{key['max_target_len']}-"
                        f"{_key_hash(key)}")


def _load_cached(path: str, key: dict) -> TokenizedSplit | None:
    """The cached split at ``path`` if its stored key is exactly ``key``; None otherwise."""
    try:
        with open(os.path.join(path, "meta.json")) as f:
            meta = json.load(f)
        if meta.get("key") != key:
            log.warning("Ignoring stale token cache %s (its key does not match).", path)
            return None
        arrays = np.load(os.path.join(path, "arrays.npz"))
        with open(os.path.join(path, "examples.json")) as f:
            examples = json.load(f)
        ts = TokenizedSplit(key["task"], key["split"], key["max_input_len"], key["max_target_len"],
                            arrays["input_ids"], arrays["input_offsets"], arrays["target_ids"],
                            arrays["target_offsets"], examples, meta.get("stats", {}))
        if len(ts) != len(examples):
            return None
        return ts
    except (OSError, ValueError, KeyError):
        return None


def _save_cached(path: str, key: dict, ts: TokenizedSplit) -> None:
    """Writes a cache directory atomically (temp dir + rename), so a crash never leaves a half cache."""
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        np.savez(os.path.join(tmp, "arrays.npz"), input_ids=ts.input_ids, input_offsets=ts.input_offsets,
                 target_ids=ts.target_ids, target_offsets=ts.target_offsets)
        with open(os.path.join(tmp, "examples.json"), "w") as f:
            json.dump(ts.examples, f)
        with open(os.path.join(tmp, "meta.json"), "w") as f:  # written last: marks the cache complete
            json.dump({"key": key, "stats": ts.stats}, f, indent=1)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def load_split(task: str | tasks_lib.Task, split: str, tokenizer, max_input_len: int, max_target_len: int,
               cache_dir: str | None = None, data_dir: str | None = None) -> TokenizedSplit:
    """A tokenized (task, split): from the on-disk cache when its key matches, else tokenized (and cached).

    Raises ``DataError`` when the split has no examples.
    """
    from talora_jax.t5.tokenizer import tokenizer_fingerprint

    task = tasks_lib.get(task) if isinstance(task, str) else task
    task.check_split(split)
    key = cache_key(task, split, tokenizer_fingerprint(tokenizer), max_input_len, max_target_len, data_dir)
    path = _cache_path(cache_dir, key) if cache_dir else None
    if path and os.path.isdir(path):
        cached = _load_cached(path, key)
        if cached is not None:
            log.info("%s/%s: loaded %d tokenized examples from %s", task.name, split, len(cached), path)
            return cached
    examples = list(task.text_examples(split, data_dir=data_dir))
    if not examples:
        raise DataError(f"Task {task.name!r} split {split!r} has no usable examples.")
    ts = tokenize_examples(examples, tokenizer, max_input_len, max_target_len, task.name, split)
    if path:
        _save_cached(path, key, ts)
    return ts


def label_word_ids(task: str | tasks_lib.Task, tokenizer, max_target_len: int) -> dict[str, np.ndarray]:
    """Labels and decoder arrays [C, T] of each label word, for rank classification of label tasks."""
    task = tasks_lib.get(task) if isinstance(task, str) else task
    if not task.label_words:
        raise DataError(f"Task {task.name!r} has no label words; rank classification needs a label task.")
    flat, off, trunc = _encode(tokenizer, list(task.label_words), max_target_len)
    if trunc:
        raise DataError(f"Task {task.name!r}: a label word is longer than max_target_len={max_target_len} tokens.")
    lab, dm = _gather(flat, off, np.arange(len(task.label_words)), max_target_len)
    return {"labels": lab, "decoder_attention_mask": dm, "decoder_input_ids": shift_right(lab)}


# ----------------------------------------------------------------------------- evaluation


def host_rows(global_batch: int, process_index: int, process_count: int) -> slice:
    """This host's contiguous row slice of a global batch; slices are disjoint and cover it."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise DataError(f"process_index {process_index} is not in [0, {process_count}).")
    if global_batch % process_count:
        raise DataError(f"The global batch size {global_batch} must be divisible by the number of hosts "
                        f"({process_count}).")
    per = global_batch // process_count
    return slice(process_index * per, (process_index + 1) * per)


def num_eval_batches(num_examples: int, batch_size: int) -> int:
    """Global eval batches needed to visit every example once."""
    return -(-num_examples // batch_size)


def eval_batches(split: TokenizedSplit, batch_size: int, task_id: int = 0, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """Static-shape batches visiting every example of ``split`` exactly once.

    The last global batch is filled with padding rows: copies of example 0 (so no row is
    fully masked, which could produce NaNs in attention) with ``example_mask`` 0 and
    ``example_index`` -1, which metrics must ignore. Each host yields its row slice of
    every global batch (the same number of batches on every host).
    """
    rows = host_rows(batch_size, process_index, process_count)
    n = len(split)
    for b in range(num_eval_batches(n, batch_size)):
        gidx = np.arange(b * batch_size, (b + 1) * batch_size, dtype=np.int64)[rows]
        valid = gidx < n
        idx = np.where(valid, gidx, 0)
        batch = make_batch([split], np.zeros(len(idx), np.int64), idx, [task_id])
        batch["example_mask"] = valid.astype(np.int32)
        batch["example_index"] = np.where(valid, gidx, -1).astype(np.int32)
        yield batch


def scatter_predictions(num_examples: int, example_index: Sequence[np.ndarray],
                        predictions: Sequence[Sequence[str]]) -> list[str]:
    """Puts per-row predictions of eval batches back in example order, dropping padding rows.

    Raises if an example is missing or predicted twice (a broken eval loop), since
    scores over a partial or duplicated split would be silently wrong.
    """
    out: list[str | None] = [None] * num_examples
    for idx, preds in zip(example_index, predictions):
        for i, p in zip(np.asarray(idx).tolist(), preds):
            if i < 0:
                continue
            if out[i] is not None:
                raise DataError(f"example {i} was predicted twice")
            out[i] = p
    missing = [i for i, p in enumerate(out) if p is None]
    if missing:
        raise DataError(f"{len(missing)} examples have no prediction (first: {missing[:5]})")
    return out  # type: ignore[return-value]
