"""Task data: registry, TFDS/synthetic/user tasks, metrics, tokenized cache, sampling.

This package never imports train, prompts or model (DESIGN.md section 3).
``from talora_jax.data import tasks`` is the entry point; TensorFlow is only imported
when a TFDS task is read.
"""

from talora_jax.data import errors, metrics, pipeline, sampling, tasks
from talora_jax.data.errors import (DataError, DataFormatError, DataNotFoundError, FewShotError,
                                    SplitNotFoundError, UnknownTaskError)
from talora_jax.data.pipeline import TokenizedSplit, eval_batches, label_word_ids, load_split, scatter_predictions
from talora_jax.data.sampling import Sampler, few_shot, few_shot_over_seeds, mixture_rates

__all__ = [
    "DataError", "DataFormatError", "DataNotFoundError", "FewShotError", "Sampler", "SplitNotFoundError",
    "TokenizedSplit", "UnknownTaskError", "errors", "eval_batches", "few_shot", "few_shot_over_seeds",
    "label_word_ids", "load_split", "metrics", "mixture_rates", "pipeline", "sampling", "scatter_predictions",
    "tasks",
]
