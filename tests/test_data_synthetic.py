"""The offline synthetic suite: deterministic, disjoint, balanced, rule-following, known chance."""

import collections

import pytest

from talora_jax.data import synthetic, tasks


def test_suite_registered_with_chance_levels():
    names = [n for n in tasks.names() if n.startswith("synth_")]
    assert len(names) >= 6
    chance = synthetic.chance_levels()
    assert chance["synth_sentiment"] == 50.0 and chance["synth_topic"] == pytest.approx(100 / 3)
    assert chance["synth_span"] == 25.0
    for n in names:
        assert tasks.get(n).chance == chance[n]
    kinds = {tasks.get(n).metric for n in names}
    assert {"accuracy", "accuracy_f1", "squad"} <= kinds
    assert {len(tasks.get(n).label_words or []) for n in names} >= {0, 2, 3}


@pytest.mark.parametrize("name", list(synthetic.SPECS))
def test_deterministic_disjoint_balanced(name):
    a = synthetic.SyntheticTask(name, seed=3, sizes={"train": 600, "dev": 90, "test": 90})
    b = synthetic.SyntheticTask(name, seed=3, sizes={"train": 600, "dev": 90, "test": 90})
    c = synthetic.SyntheticTask(name, seed=4, sizes={"train": 600, "dev": 90, "test": 90})
    splits = {s: list(a.text_examples(s)) for s in tasks.SPLITS}
    assert splits["train"] == list(b.text_examples("train"))
    assert splits["train"] != list(c.text_examples("train"))
    inputs = {s: {e["inputs"] for e in v} for s, v in splits.items()}
    assert len(inputs["train"]) == 600
    assert not inputs["train"] & inputs["dev"] and not inputs["train"] & inputs["test"]
    assert not inputs["dev"] & inputs["test"]
    for ex in splits["train"]:
        assert ex["inputs"] == ex["inputs"].lower() and ex["inputs"].startswith(name.replace("_", " ") + " ")
        assert all(w.isalnum() for w in ex["inputs"].split() if not w.endswith(":"))
    if a.label_words:
        counts = collections.Counter(e["targets"] for e in splits["train"])
        assert set(counts) == set(a.label_words) and max(counts.values()) - min(counts.values()) <= 1
    perfect = a.score(splits["test"], [e["targets"] for e in splits["test"]])
    assert all(v == 100.0 for v in perfect.values())


def _rule(name, text):
    """Re-derives the label from the text alone: each task's rule is learnable."""
    w = text.split()
    if name == "synth_sentiment":
        pos = sum(x in synthetic.POSITIVE for x in w)
        neg = sum(x in synthetic.NEGATIVE for x in w)
        return "positive" if pos > neg else "negative"
    if name == "synth_topic":
        return max(synthetic.TOPICS, key=lambda t: sum(x in synthetic.TOPICS[t] for x in w))
    if name == "synth_pair":
        i = w.index("sentence2:")
        return "yes" if sorted(w[3:i]) == sorted(w[i + 1:]) else "no"
    if name == "synth_negation":
        state = w[-2]
        return state if w.count("not") % 2 == 0 else ("off" if state == "on" else "on")
    if name == "synth_largest":
        nums = [int(x) for x in w[3:]]
        return ["first", "second", "third"][nums.index(max(nums))]
    if name == "synth_span":
        obj = w[w.index("context:") - 1]
        facts = " ".join(w[w.index("context:") + 1:]).split(" and ")
        return next(f.split()[-1] for f in facts if f.split()[1] == obj)
    raise AssertionError(name)


@pytest.mark.parametrize("name", list(synthetic.SPECS))
def test_rule_holds(name):
    for ex in list(tasks.get(name).text_examples("dev"))[:300]:
        assert _rule(name, ex["inputs"]) == ex["targets"], ex


def test_default_suite_is_big_enough_for_the_demo():
    for name in synthetic.SPECS:
        assert sum(1 for _ in tasks.get(name).text_examples("train")) >= 5000
