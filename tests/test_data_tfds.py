"""The 23 benchmark tasks through their real TFDS builders under ``tfds.testing.mock_data``."""

import pytest
import tensorflow_datasets as tfds

from talora_jax.data import preprocessors as pp
from talora_jax.data import tasks, tfds_tasks
from talora_jax.data.errors import DataNotFoundError, SplitNotFoundError

NUM = 12  # mock examples per TFDS split: big enough for every split scheme, small enough to be fast


def test_registry_has_the_23_tasks():
    assert len(tfds_tasks.BENCHMARK_TASKS) == 23
    assert set(tfds_tasks.BENCHMARK_TASKS) <= set(tasks.names())
    sources = {tasks.get(n).source.tfds_name for n in tfds_tasks.BENCHMARK_TASKS}
    assert {"glue/mnli", "super_glue/wsc.fixed", "squad/v1.1", "mrqa/natural_questions", "mrqa/hotpot_qa",
            "mrqa/search_qa", "mrqa/news_qa", "winogrande", "yelp_polarity_reviews", "sci_tail",
            "paws_wiki/labeled_final_raw", "super_glue/record"} <= sources


@pytest.mark.parametrize("name", tfds_tasks.BENCHMARK_TASKS)
def test_task_under_mock_data(name):
    task = tasks.get(name)
    with tfds.testing.mock_data(num_examples=NUM):
        out = {s: list(task.text_examples(s)) for s in tasks.SPLITS}
        again = list(task.text_examples("dev"))
    assert again == out["dev"], "splits must be deterministic"
    for split, exs in out.items():
        assert exs, f"{name}/{split} is empty"
        for ex in exs:
            assert ex["inputs"].strip() and ex["targets"].strip()
            assert ex["inputs"].startswith(name + " ") or name == "wsc" and ex["inputs"].startswith("wsc text:")
            if task.label_words:
                assert ex["targets"] == task.label_words[ex["label"]]
    test = out["test"]
    gold = task.score(test, [e["targets"] for e in test])
    assert gold and all(v == pytest.approx(100.0) for k, v in gold.items()), gold
    garbage = task.score(test, ["#!?"] * len(test))
    assert set(garbage) == set(task.metric_names)
    # The disjointness the protocol guarantees (mock data repeats the same rows in every TFDS split, so only
    # splits cut from the same TFDS split can be compared): halved validation, and train minus held-out dev.
    key = lambda e: (e["inputs"], e["targets"])  # noqa: E731
    if task.source.scheme == "halve_validation":
        assert not {key(e) for e in out["dev"]} & {key(e) for e in out["test"]}
    if task.source.scheme == "holdout_train" and name != "record":  # record train expands answers
        assert not {key(e) for e in out["dev"]} & {key(e) for e in out["train"]}

def test_holdout_and_halving_are_fixed_and_disjoint():
    idx = tfds_tasks.holdout_indices(50_000)
    assert len(idx) == 1000 == len(set(idx.tolist()))
    assert (idx == tfds_tasks.holdout_indices(50_000)).all()
    assert len(tfds_tasks.holdout_indices(12)) == 6  # tiny copies keep a non-empty train split
    halves = tfds_tasks.halve([("p", 1), ("p", 1), ("p", 2), ("q", 1)])
    assert sum(halves.values()) == 2 and len(halves) == 3


def test_missing_data_says_how_to_download(tmp_path):
    task = tasks.get("rte")
    with pytest.raises(DataNotFoundError, match=r"tfds build glue/rte.*data_dir"):
        next(task.text_examples("train", data_dir=str(tmp_path)))


def test_unknown_split():
    with pytest.raises(SplitNotFoundError, match="train, dev, test"):
        next(tasks.get("cola").text_examples("validation"))


def test_label_words_map_class_ids():
    mnli = tasks.get("mnli")
    ex = mnli.preprocess({"premise": b"a man sleeps", "hypothesis": b"a man is awake", "label": 2}, True)[0]
    assert ex == {"inputs": "mnli hypothesis: a man is awake premise: a man sleeps", "targets": "contradiction",
                  "label": 2}
    assert tasks.get("yelp").preprocess({"text": b"great  food", "label": 1}, True)[0]["targets"] == "positive"
    assert tasks.get("cb").preprocess({"premise": b"p", "hypothesis": b"h", "label": 1}, True)[0]["targets"] == \
        "contradiction"
    assert tasks.get("scitail").preprocess({"premise": b"p", "hypothesis": b"h", "label": 0}, True)[0]["targets"] \
        == "entailment"
    assert tasks.get("winogrande").preprocess({"sentence": b"s _", "option1": b"x", "option2": b"y", "label": 1},
                                              True)[0]["targets"] == "2"
    assert tasks.get("qqp").preprocess({"question1": b"a", "question2": b"b", "label": -1}, True) == []  # unlabelled


def test_wsc_marks_spans():
    ex = pp.wsc(["False", "True"])({"text": b"Mark told Pete many lies about himself", "span1_index": 0,
                                    "span2_index": 6, "span1_text": b"Mark", "span2_text": b"himself",
                                    "label": 1}, True)[0]
    assert ex["inputs"] == "wsc text: * Mark * told Pete many lies about # himself #"
    assert ex["targets"] == "True"


def test_record_expands_train_and_keeps_answers():
    raw = {"passage": b"Obama visited.@highlight\nHe spoke", "query": b"@placeholder spoke",
           "entities": [b"Obama", b"He"], "answers": [b"Obama", b"Barack Obama", b"Obama"]}
    train = pp.record(raw, True)
    assert [e["targets"] for e in train] == ["Obama", "Barack Obama"]
    ev = pp.record(raw, False)
    assert len(ev) == 1 and ev[0]["answers"] == ["Obama", "Barack Obama"]
    assert "passage: Obama visited. He spoke" in ev[0]["inputs"]
