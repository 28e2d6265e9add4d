"""Named groups of tasks, so configs and overrides can say ``glue`` instead of eight names.

``source`` is the six high-resource source tasks of the MPT/ATTEMPT setup; the
target groups follow the paper's tables.
"""

from __future__ import annotations

SUITES: dict[str, tuple[str, ...]] = {
    "source": ("mnli", "sst2", "qnli", "qqp", "squad", "record"),
    "glue": ("mnli", "qqp", "qnli", "sst2", "stsb", "mrpc", "rte", "cola"),
    "superglue": ("multirc", "boolq", "wic", "wsc", "cb"),
    "mrqa": ("nq", "hotpotqa", "searchqa", "newsqa"),
    "others": ("winogrande", "yelp", "scitail", "paws"),
    "synthetic": ("synth_sentiment", "synth_topic", "synth_pair", "synth_negation", "synth_largest", "synth_span"),
}
SUITES["all"] = tuple(dict.fromkeys(SUITES["glue"] + SUITES["superglue"] + SUITES["mrqa"] + SUITES["others"]
                                    + ("squad", "record")))


def expand(names: list[str]) -> list[str]:
    """Replaces suite names by their tasks, keeping order and dropping repeats."""
    out: list[str] = []
    for name in names:
        out.extend(SUITES.get(name, (name,)))
    return list(dict.fromkeys(out))
