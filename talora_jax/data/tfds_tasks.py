"""The 23 benchmark tasks, read from TensorFlow Datasets.

Splits (the ATTEMPT/MPT protocol; deterministic and disjoint):

- ``halve_validation`` (datasets under 10k training examples, ATTEMPT's "small"
  list: cola, rte, mrpc, stsb, multirc, boolq, wic, wsc, cb). train = TFDS train.
  The TFDS validation split is permuted with a fixed seed (``SPLIT_SEED``) and cut in
  two: the first half is dev, the second half is test. MultiRC is cut by question
  (all answer options of a question land on the same side), so its grouped EM is
  well defined on both halves.
- ``holdout_train`` (larger datasets: mnli, qqp, qnli, sst2, record, squad, nq,
  hotpotqa, searchqa, newsqa, winogrande, yelp). ``DEV_HOLDOUT`` (1000) training
  examples, chosen by a fixed-seed permutation of the TFDS train split, are held out
  as dev; train is the rest; test = the TFDS validation split (MNLI: validation_matched;
  WinoGrande: train = train_xl; Yelp has no validation split, so its TFDS test split
  is the test). On a copy with fewer than 2000 training examples (a mock or a debug
  subset) the hold-out shrinks to half the train split so train is never empty.
- ``own`` (paws, scitail, which ship labelled validation and test splits): dev = TFDS
  validation, test = TFDS test.

TFDS is never allowed to download here: data must be prepared beforehand (see
``DataNotFoundError``'s message), so an offline machine fails fast instead of hanging.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable, Iterator, Sequence

import numpy as np

from talora_jax.data import preprocessors as pp
from talora_jax.data import tasks
from talora_jax.data.errors import DataNotFoundError, SplitNotFoundError

SPLIT_SEED = 0
DEV_HOLDOUT = 1000


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """Where a task's raw data lives in TFDS and how its splits are made."""

    tfds_name: str
    scheme: str  # "halve_validation" | "holdout_train" | "own"
    train: str = "train"
    validation: str = "validation"
    test: str = "test"
    group_key: Callable | None = None  # raw example -> hashable; halves keep groups together


class TfdsTask(tasks.ScoredTask):
    """A benchmark task: a TFDS source, a preprocessor and a metric kind."""

    def __init__(self, name: str, source: TfdsSource, preprocess: pp.Preprocessor, metric: str,
                 label_words: Sequence[str] | None = None):
        super().__init__(name, metric, label_words)
        self.source = source
        self.preprocess = preprocess

    def definition(self) -> dict:
        s = self.source
        return {**super().definition(), "tfds": s.tfds_name, "scheme": s.scheme, "splits": [s.train, s.validation,
                s.test], "split_seed": SPLIT_SEED, "dev_holdout": DEV_HOLDOUT}

    # -------------------------------------------------------------- raw access

    def _builder(self, data_dir: str | None):
        import tensorflow_datasets as tfds

        return tfds.builder(self.source.tfds_name, data_dir=data_dir, try_gcs=False)

    def _raw(self, builder, tfds_split: str, data_dir: str | None) -> Iterator[dict]:
        """Decoded raw examples of one TFDS split, in the builder's fixed file order; never downloads."""
        import tensorflow_datasets as tfds

        known = _known_splits(builder)
        if known and tfds_split not in known:
            raise SplitNotFoundError(
                f"TFDS dataset {self.source.tfds_name!r} in {builder.data_dir} has no split {tfds_split!r} "
                f"(it has {', '.join(sorted(known))}). Re-prepare it with the installed tensorflow-datasets.")
        try:
            ds = builder.as_dataset(split=tfds_split, shuffle_files=False)
        except AssertionError as e:  # TFDS's "could not find data in ..." for an unprepared dataset
            raise DataNotFoundError(_missing_message(self.name, self.source.tfds_name, data_dir)) from e
        except ValueError as e:
            raise SplitNotFoundError(f"TFDS dataset {self.source.tfds_name!r}: {e}") from e
        yield from tfds.as_numpy(ds)

    def _num_examples(self, builder, tfds_split: str, data_dir: str | None) -> int:
        """Size of a TFDS split from its metadata, or by counting when the metadata lacks it."""
        known = _known_splits(builder)
        if tfds_split in known:
            n = int(known[tfds_split].num_examples)
            if n > 0:
                return n
        return sum(1 for _ in self._raw(builder, tfds_split, data_dir))

    # -------------------------------------------------------------- splits

    def text_examples(self, split: str, data_dir: str | None = None) -> Iterator[tasks.Example]:
        """Text examples of ``train``, ``dev`` or ``test`` per the protocol in this module's docstring."""
        self.check_split(split)
        data_dir = data_dir or os.environ.get("TFDS_DATA_DIR")
        builder = self._builder(data_dir)
        is_train = split == "train"
        s = self.source
        if s.scheme == "own":
            raw = self._raw(builder, {"train": s.train, "dev": s.validation, "test": s.test}[split], data_dir)
        elif s.scheme == "holdout_train":
            if split == "test":
                raw = self._raw(builder, s.validation, data_dir)
            else:
                n = self._num_examples(builder, s.train, data_dir)
                dev = np.zeros(n, bool)
                dev[holdout_indices(n)] = True
                keep = dev if split == "dev" else ~dev
                raw = (ex for i, ex in enumerate(self._raw(builder, s.train, data_dir)) if i < n and keep[i])
        elif s.scheme == "halve_validation":
            if is_train:
                raw = self._raw(builder, s.train, data_dir)
            else:
                examples = list(self._raw(builder, s.validation, data_dir))
                keys = [s.group_key(ex) if s.group_key else i for i, ex in enumerate(examples)]
                first_half = halve(keys)
                want = split == "dev"
                raw = (ex for ex, k in zip(examples, keys) if first_half[k] == want)
        else:
            raise ValueError(f"unknown split scheme {s.scheme!r}")
        for ex in raw:
            yield from self.preprocess(ex, is_train)


def _known_splits(builder) -> dict:
    """The split infos recorded for a prepared dataset ({} when unknown, e.g. under mock data)."""
    try:
        splits = builder.info.splits
        return {k: splits[k] for k in splits.keys()}
    except Exception:  # noqa: BLE001  (no metadata: nothing known)
        return {}


def holdout_indices(n: int) -> np.ndarray:
    """Indices of the train examples held out as dev: ``DEV_HOLDOUT`` of a fixed-seed permutation."""
    size = min(DEV_HOLDOUT, n // 2)
    return np.random.default_rng(SPLIT_SEED).permutation(n)[:size]


def halve(keys: Sequence) -> dict:
    """Maps each distinct key to True (dev half) or False (test half), by a fixed-seed permutation."""
    uniq = list(dict.fromkeys(keys))
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(uniq))
    dev_count = (len(uniq) + 1) // 2
    return {uniq[j]: rank < dev_count for rank, j in enumerate(perm)}


def _missing_message(task: str, tfds_name: str, data_dir: str | None) -> str:
    where = data_dir or "the default TFDS directory (~/tensorflow_datasets)"
    return (f"Task {task!r} needs the TFDS dataset {tfds_name!r}, which is not prepared in {where}. "
            f"On a machine with network access run:\n"
            f"  tfds build {tfds_name} --data_dir=DIR\n"
            f"(or python -c \"import tensorflow_datasets as tfds; "
            f"tfds.builder('{tfds_name}', data_dir='DIR').download_and_prepare()\"),\n"
            f"copy DIR here if needed, and pass data_dir=DIR (config data.data_dir) or set TFDS_DATA_DIR=DIR. "
            f"Offline, use the synthetic tasks (synth_*) or your own JSONL/TSV tasks instead.")


# ----------------------------------------------------------------------------- the 23 tasks

NLI3 = ["entailment", "neutral", "contradiction"]
NLI2 = ["entailment", "not_entailment"]
BOOL = ["False", "True"]


def _multirc_group(raw: dict) -> tuple[int, int]:
    return int(raw["idx"]["paragraph"]), int(raw["idx"]["question"])


def _specs() -> list[TfdsTask]:
    """All benchmark tasks; label words are in TFDS ClassLabel id order."""
    small = functools.partial(TfdsSource, scheme="halve_validation")
    large = functools.partial(TfdsSource, scheme="holdout_train")
    own = functools.partial(TfdsSource, scheme="own")
    pc = pp.pair_classifier
    qqp_w = ["not_duplicate", "duplicate"]
    mrpc_w = ["not_equivalent", "equivalent"]
    sent_w = ["negative", "positive"]
    cola_w = ["unacceptable", "acceptable"]
    cb_w = ["entailment", "contradiction", "neutral"]  # super_glue/cb ClassLabel order
    paws_w = ["not_paraphrase", "paraphrase"]  # TFDS names: different_meaning, paraphrase
    sci_w = ["entailment", "neutral"]  # TFDS names: entails, neutral
    wino_w = ["1", "2"]
    return [
        TfdsTask("mnli", large("glue/mnli", validation="validation_matched"),
                 pc("mnli", [("hypothesis", "hypothesis"), ("premise", "premise")], NLI3), "accuracy", NLI3),
        TfdsTask("qqp", large("glue/qqp"), pc("qqp", [("question1", "question1"), ("question2", "question2")], qqp_w),
                 "accuracy_f1", qqp_w),
        TfdsTask("qnli", large("glue/qnli"), pc("qnli", [("question", "question"), ("sentence", "sentence")], NLI2),
                 "accuracy", NLI2),
        TfdsTask("sst2", large("glue/sst2"), pc("sst2", [("sentence", "sentence")], sent_w), "accuracy", sent_w),
        TfdsTask("stsb", small("glue/stsb"), pp.stsb, "pearson_spearman"),
        TfdsTask("mrpc", small("glue/mrpc"), pc("mrpc", [("sentence1", "sentence1"), ("sentence2", "sentence2")],
                 mrpc_w), "accuracy_f1", mrpc_w),
        TfdsTask("rte", small("glue/rte"), pc("rte", [("sentence1", "sentence1"), ("sentence2", "sentence2")], NLI2),
                 "accuracy", NLI2),
        TfdsTask("cola", small("glue/cola"), pc("cola", [("sentence", "sentence")], cola_w), "mcc", cola_w),
        TfdsTask("multirc", small("super_glue/multirc", group_key=_multirc_group), pp.multirc(BOOL), "multirc",
                 BOOL),
        TfdsTask("boolq", small("super_glue/boolq"), pc("boolq", [("question", "question"), ("passage", "passage")],
                 BOOL), "accuracy", BOOL),
        TfdsTask("wic", small("super_glue/wic"), pp.wic(BOOL), "accuracy", BOOL),
        TfdsTask("wsc", small("super_glue/wsc.fixed"), pp.wsc(BOOL), "accuracy", BOOL),
        TfdsTask("cb", small("super_glue/cb"), pc("cb", [("hypothesis", "hypothesis"), ("premise", "premise")], cb_w),
                 "accuracy", cb_w),
        TfdsTask("record", large("super_glue/record"), pp.record, "squad"),
        TfdsTask("squad", large("squad/v1.1"), pp.extractive_qa("squad"), "squad"),
        TfdsTask("nq", large("mrqa/natural_questions"), pp.extractive_qa("nq"), "squad"),
        TfdsTask("hotpotqa", large("mrqa/hotpot_qa"), pp.extractive_qa("hotpotqa"), "squad"),
        TfdsTask("searchqa", large("mrqa/search_qa"), pp.extractive_qa("searchqa"), "squad"),
        TfdsTask("newsqa", large("mrqa/news_qa"), pp.extractive_qa("newsqa"), "squad"),
        TfdsTask("winogrande", large("winogrande", train="train_xl"), pp.winogrande(wino_w), "accuracy", wino_w),
        TfdsTask("yelp", large("yelp_polarity_reviews", validation="test"), pc("yelp", [("sentence", "text")], sent_w),
                 "accuracy", sent_w),
        TfdsTask("scitail", own("sci_tail"), pc("scitail", [("premise", "premise"), ("hypothesis", "hypothesis")],
                 sci_w), "accuracy", sci_w),
        TfdsTask("paws", own("paws_wiki/labeled_final_raw"), pc("paws", [("sentence1", "sentence1"),
                 ("sentence2", "sentence2")], paws_w), "accuracy", paws_w),
    ]


BENCHMARK_TASKS = ("mnli", "qqp", "qnli", "sst2", "stsb", "mrpc", "rte", "cola", "multirc", "boolq", "wic", "wsc",
                   "cb", "record", "squad", "nq", "hotpotqa", "searchqa", "newsqa", "winogrande", "yelp", "scitail",
                   "paws")


def register_all() -> None:
    """Registers the 23 benchmark tasks."""
    for task in _specs():
        tasks.register(task, overwrite=True)
