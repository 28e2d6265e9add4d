"""Metrics on hand-computed values; unparseable predictions count as wrong and never crash."""

import math

import pytest

from talora_jax.data import metrics, tasks


def test_mcc_hand_computed():
    # tp=2, fn=1, tn=1, fp=1 -> (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    assert metrics.matthews_corrcoef([1, 1, 1, 0, 0], [1, 1, 0, 0, 1]) == pytest.approx(100 / 6)
    assert metrics.matthews_corrcoef([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(100.0)
    assert metrics.matthews_corrcoef([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-100.0)
    assert metrics.matthews_corrcoef([1, 1, 0], [1, 1, 1]) == 0.0  # constant prediction: undefined -> 0


def test_binary_f1_hand_computed():
    # precision 2/3, recall 2/3
    assert metrics.binary_f1([1, 1, 1, 0, 0], [1, 1, 0, 0, 1]) == pytest.approx(200 / 3)
    assert metrics.binary_f1([0, 0], [0, 0]) == 0.0


def test_pearson_spearman_hand_computed():
    assert metrics.pearson([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(100 * 11 / math.sqrt(130))
    assert metrics.spearman([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(100.0)
    # ties get average ranks: [1, 2.5, 2.5, 4] vs [1, 2, 3, 4] -> 4.5 / sqrt(4.5 * 5)
    assert metrics.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(100 * 4.5 / math.sqrt(22.5))
    assert metrics.pearson([1, 1, 1], [1, 2, 3]) == 0.0


def test_squad_normalisation_articles_and_punctuation():
    assert metrics.normalize_answer("The  Cat, sat!") == "cat sat"
    assert metrics.exact_match("the cat", "A cat.") == 1.0
    assert metrics.token_f1("the big cat", "a cat sat") == pytest.approx(0.5)  # [big,cat] vs [cat,sat]
    assert metrics.token_f1("theatre", "the atre") == 0.0  # 'the' inside a word is not an article


def test_record_max_over_answers():
    task = tasks.get("record")
    golds = [{"targets": "Barack Obama", "answers": ["Barack Obama", "Obama"]}]
    assert task.score(golds, ["obama"]) == {"em": 100.0, "f1": 100.0}
    out = task.score(golds, ["president obama"])
    assert out["em"] == 0.0
    assert out["f1"] == pytest.approx(100 * 2 / 3)  # vs "Obama": P=1/2, R=1 -> 2/3 beats 1/2


def test_squad_task_strings_and_lists():
    task = tasks.get("squad")
    assert task.score([["Paris", "paris france"], "1999"], ["The Paris", "in 1999"]) == pytest.approx(
        {"em": 50.0, "f1": 100 * (1 + 2 / 3) / 2})


def test_multirc_grouping():
    task = tasks.get("multirc")
    t = lambda g, y: {"targets": y, "group": g}  # noqa: E731
    targets = [t("q1", "True"), t("q1", "False"), t("q2", "True"), t("q2", "True"), t("q2", "False")]
    preds = ["True", "False", "True", "False", "False"]
    out = task.score(targets, preds)
    assert out["em"] == pytest.approx(50.0)  # q1 fully right, q2 not
    assert out["f1a"] == pytest.approx(80.0)  # tp=2, fp=0, fn=1
    with pytest.raises(ValueError, match="group"):
        task.score(["True"], ["True"])


def test_classification_metrics_per_task():
    assert tasks.get("cola").metric_names == ("mcc",)
    assert tasks.get("mrpc").metric_names == ("accuracy", "f1")
    assert tasks.get("qqp").metric_names == ("accuracy", "f1")
    assert tasks.get("stsb").metric_names == ("pearson", "spearman")
    out = tasks.get("mrpc").score(["equivalent", "equivalent", "not_equivalent"],
                                  ["equivalent", "not_equivalent", "not_equivalent"])
    assert out == pytest.approx({"accuracy": 200 / 3, "f1": 200 / 3})


def test_unparseable_predictions_are_wrong_never_crash():
    cola = tasks.get("cola")
    # gold negative + garbage must not become a free true negative
    assert cola.score(["unacceptable", "acceptable"], ["???", "acceptable"])["mcc"] < 100.0
    assert tasks.get("rte").score(["entailment"], ["Entailment "]) == {"accuracy": 100.0}  # case/space tolerant
    assert tasks.get("rte").score(["entailment", "not_entailment"], ["", None]) == {"accuracy": 0.0}
    mrpc = tasks.get("mrpc").score(["not_equivalent", "equivalent"], ["blah", "blah"])
    assert mrpc == {"accuracy": 0.0, "f1": 0.0}
    stsb = tasks.get("stsb").score(["1.0", "4.0", "2.4"], ["one", "nan", "2.4"])
    assert all(math.isfinite(v) for v in stsb.values())
    assert stsb["pearson"] < 0  # garbage pushed to the far end of the range
    assert tasks.get("squad").score(["cat"], [""]) == {"em": 0.0, "f1": 0.0}
    assert tasks.get("multirc").score([{"targets": "True", "group": 1}], ["maybe"]) == {"f1a": 0.0, "em": 0.0}


def test_stsb_targets_round_to_point_two():
    from talora_jax.data import preprocessors as pp

    ex = pp.stsb({"sentence1": b"a", "sentence2": b"b", "label": 3.37}, True)[0]
    assert ex["targets"] == "3.4"
    assert pp.stsb({"sentence1": b"a", "sentence2": b"b", "label": 0.09}, True)[0]["targets"] == "0.0"
    assert pp.stsb({"sentence1": b"a", "sentence2": b"b", "label": 4.91}, True)[0]["targets"] == "5.0"


def test_primary_is_mean_of_metrics():
    assert tasks.get("stsb").primary({"pearson": 80.0, "spearman": 90.0}) == 85.0
