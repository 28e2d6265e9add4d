"""An offline synthetic task suite for the demo and the tests.

Six tasks generated in code, deterministic from a seed, in plain lowercase English
words and digits so a tiny SentencePiece model can tokenize them. Each has a rule a
model can learn from the text alone and a known chance level:

| task             | kind                    | rule                                                  | chance |
| ---------------- | ----------------------- | ----------------------------------------------------- | ------ |
| synth_sentiment  | 2 labels                | more positive than negative words -> positive         | 50.0   |
| synth_topic      | 3 labels                | the topic (sports/food/music) with most words         | 33.3   |
| synth_pair       | pair, 2 labels          | sentence2 is sentence1's words reordered -> yes       | 50.0   |
| synth_negation   | 2 labels                | state word, flipped once per "not"                     | 50.0   |
| synth_largest    | 3 labels                | position of the largest of three numbers              | 33.3   |
| synth_span       | span extraction (EM/F1) | the colour the context gives the asked-about object   | 25.0   |

Chance is the expected score of a uniform random guess among the label words (for
synth_span: among the four colours named in the context). Labels are exactly
balanced in every split, so the majority-class baseline equals chance too.

Splits are drawn from one pool of unique inputs, so train, dev and test are
disjoint; the pool depends only on (seed, task name, sizes).
"""

from __future__ import annotations

import functools
import zlib
from typing import Callable, Iterator, Sequence

import numpy as np

from talora_jax.data import tasks

GENERATOR_VERSION = 1
DEFAULT_SEED = 0
DEFAULT_SIZES = {"train": 5000, "dev": 500, "test": 500}

FILLER = ["the", "a", "we", "it", "was", "and", "this", "that", "very", "so", "with", "for", "one", "day", "place",
          "time", "really", "just", "some", "our"]
POSITIVE = ["good", "great", "nice", "happy", "fun", "love", "best", "fine"]
NEGATIVE = ["bad", "awful", "sad", "boring", "hate", "worst", "poor", "dull"]
TOPICS = {
    "sports": ["ball", "goal", "team", "match", "score", "coach", "race", "player"],
    "food": ["bread", "soup", "rice", "apple", "cheese", "salad", "cake", "pizza"],
    "music": ["song", "guitar", "drum", "piano", "band", "singer", "melody", "concert"],
}
NOUNS = ["cat", "dog", "bird", "fish", "horse", "car", "boat", "tree", "house", "lamp", "book", "chair"]
VERBS = ["sees", "likes", "finds", "holds", "moves", "helps", "wants", "needs"]
COLOURS = ["red", "green", "blue", "white", "black", "yellow", "brown", "pink"]
OBJECTS = ["ball", "hat", "cup", "box", "car", "kite", "shoe", "bag", "pen", "coat"]
STATES = ("on", "off")

Gen = Callable[[np.random.Generator, int], tuple[str, str, dict]]


def _sentiment(rng: np.random.Generator, label: int) -> tuple[str, str, dict]:
    more = int(rng.integers(1, 4))
    fewer = int(rng.integers(0, more))
    pos, neg = (more, fewer) if label == 1 else (fewer, more)
    words = list(rng.choice(POSITIVE, pos)) + list(rng.choice(NEGATIVE, neg))
    words += list(rng.choice(FILLER, int(rng.integers(4, 9))))
    rng.shuffle(words)
    return "review: " + " ".join(words), ["negative", "positive"][label], {"label": label}


def _topic(rng: np.random.Generator, label: int) -> tuple[str, str, dict]:
    names = list(TOPICS)
    words = list(rng.choice(TOPICS[names[label]], int(rng.integers(2, 4))))
    other = [n for i, n in enumerate(names) if i != label]
    words += list(rng.choice(TOPICS[other[int(rng.integers(2))]], int(rng.integers(0, 2))))
    words += list(rng.choice(FILLER, int(rng.integers(3, 7))))
    rng.shuffle(words)
    return "text: " + " ".join(words), names[label], {"label": label}


def _pair(rng: np.random.Generator, label: int) -> tuple[str, str, dict]:
    n = int(rng.integers(3, 6))
    s1 = [str(w) for w in rng.choice(NOUNS + VERBS + COLOURS, n, replace=False)]
    s2 = list(s1)
    rng.shuffle(s2)
    if label == 0:  # replace one word by a word not in s1
        pool = [w for w in NOUNS + VERBS + COLOURS if w not in s1]
        s2[int(rng.integers(n))] = str(rng.choice(pool))
    return "sentence1: " + " ".join(s1) + " sentence2: " + " ".join(s2), ["no", "yes"][label], {"label": label}


DEVICES = ["lamp", "light", "radio", "fan", "oven", "screen", "heater", "alarm"]
ROOMS = ["kitchen", "garden", "hall", "office", "bedroom", "garage", "shop", "school"]
OWNERS = ["the", "my", "your", "his", "her", "our"]
WHEN = ["now", "today", "again", "still"]


def _negation(rng: np.random.Generator, label: int) -> tuple[str, str, dict]:
    nots = int(rng.integers(0, 3))
    stated = label if nots % 2 == 0 else 1 - label
    words = [str(rng.choice(OWNERS)), str(rng.choice(COLOURS)), str(rng.choice(DEVICES)), "in", "the",
             str(rng.choice(ROOMS)), "is"]
    if nots >= 1:
        words.append("not")
    words += [STATES[stated], str(rng.choice(WHEN))]
    if nots == 2:
        words = ["it", "is", "not", "true", "that"] + words
    return "statement: " + " ".join(words), STATES[label], {"label": label}


def _largest(rng: np.random.Generator, label: int) -> tuple[str, str, dict]:
    nums = [int(x) for x in rng.choice(100, 3, replace=False)]
    nums.sort()
    big = nums.pop()
    rng.shuffle(nums)
    nums.insert(label, big)
    return "numbers: " + " ".join(str(x) for x in nums), ["first", "second", "third"][label], {"label": label}


def _span(rng: np.random.Generator, label: int) -> tuple[str, str, dict]:
    objs = [str(o) for o in rng.choice(OBJECTS, 4, replace=False)]
    cols = [str(c) for c in rng.choice(COLOURS, 4, replace=False)]
    facts = " and ".join(f"the {o} is {c}" for o, c in zip(objs, cols))
    q = int(rng.integers(4))
    return f"question: what colour is the {objs[q]} context: {facts}", cols[q], {"answers": [cols[q]]}


# name: (generator, label words or None, metric, number of label classes for balancing, chance %)
SPECS: dict[str, tuple[Gen, list[str] | None, str, int, float]] = {
    "synth_sentiment": (_sentiment, ["negative", "positive"], "accuracy", 2, 50.0),
    "synth_topic": (_topic, list(TOPICS), "accuracy", 3, 100.0 / 3),
    "synth_pair": (_pair, ["no", "yes"], "accuracy_f1", 2, 50.0),
    "synth_negation": (_negation, list(STATES), "accuracy", 2, 50.0),
    "synth_largest": (_largest, ["first", "second", "third"], "accuracy", 3, 100.0 / 3),
    "synth_span": (_span, None, "squad", 1, 25.0),
}


class SyntheticTask(tasks.ScoredTask):
    """One generated task; examples depend only on (seed, name, sizes)."""

    def __init__(self, name: str, seed: int = DEFAULT_SEED, sizes: dict[str, int] | None = None):
        gen, label_words, metric, n_classes, chance = SPECS[name]
        super().__init__(name, metric, label_words)
        self.seed = int(seed)
        self.sizes = dict(sizes or DEFAULT_SIZES)
        self.chance = chance
        self._gen = gen
        self._n_classes = n_classes

    def definition(self) -> dict:
        return {**super().definition(), "seed": self.seed, "sizes": self.sizes, "generator": GENERATOR_VERSION}

    @functools.cached_property
    def _splits(self) -> dict[str, list[tasks.Example]]:
        rng = np.random.default_rng([self.seed, zlib.crc32(self.name.encode())])
        seen: set[str] = set()
        out: dict[str, list[tasks.Example]] = {}
        prefix = self.name.replace("_", " ")  # "synth sentiment": no underscore, which tiny vocabularies lack
        for split in tasks.SPLITS:
            rows: list[tasks.Example] = []
            tries = 0
            while len(rows) < self.sizes[split]:
                tries += 1
                if tries > 50 * self.sizes[split] + 1000:
                    raise ValueError(f"{self.name}: cannot draw {self.sizes[split]} unique {split} examples; "
                                     "use smaller sizes.")
                label = len(rows) % self._n_classes
                body, target, extra = self._gen(rng, label)
                inputs = f"{prefix} {body}"
                if inputs in seen:
                    continue
                seen.add(inputs)
                rows.append({"inputs": inputs, "targets": target, **extra})
            order = rng.permutation(len(rows))
            out[split] = [rows[i] for i in order]
        return out

    def text_examples(self, split: str, data_dir: str | None = None) -> Iterator[tasks.Example]:
        """The generated examples of a split (``data_dir`` is ignored: nothing is read)."""
        self.check_split(split)
        for ex in self._splits[split]:
            yield dict(ex)


def make_suite(seed: int = DEFAULT_SEED, sizes: dict[str, int] | None = None,
               names: Sequence[str] | None = None) -> list[SyntheticTask]:
    """Fresh synthetic tasks for a seed and sizes (register them to use them by name)."""
    return [SyntheticTask(n, seed, sizes) for n in (names or SPECS)]


def chance_levels() -> dict[str, float]:
    """Chance score (percent) of each synthetic task."""
    return {name: spec[4] for name, spec in SPECS.items()}


def register_all() -> None:
    """Registers the default synthetic suite (seed 0, 5000/500/500 examples)."""
    for task in make_suite():
        tasks.register(task, overwrite=True)
