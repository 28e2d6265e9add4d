"""Tokenize -> cache -> batch, the deterministic sampler, mixtures, few-shot and eval batches."""

import logging
import os

import numpy as np
import pytest

from talora_jax.data import pipeline, sampling, synthetic, tasks
from talora_jax.data.errors import DataError, FewShotError
from talora_jax.t5 import load_tokenizer

N, T = 128, 12
SIZES = {"train": 300, "dev": 41, "test": 30}


@pytest.fixture(scope="module")
def tok(spm_dir):
    return load_tokenizer(spm_dir)


@pytest.fixture(scope="module")
def small_tasks():
    return {t.name: t for t in synthetic.make_suite(seed=1, sizes=SIZES)}


@pytest.fixture(scope="module")
def train_splits(tok, small_tasks):
    return [pipeline.load_split(small_tasks[n], "train", tok, N, T)
            for n in ("synth_sentiment", "synth_topic", "synth_span")]


def test_batch_shapes_and_decoder_shift(tok, train_splits):
    s = sampling.Sampler(train_splits, batch_size=8, seed=0)
    b = s.batch(0)
    assert set(b) == {"task_ids", "input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask",
                      "labels"}
    shapes = {k: v.shape for k, v in b.items()}
    assert shapes == {"task_ids": (8,), "input_ids": (8, N), "attention_mask": (8, N), "labels": (8, T),
                      "decoder_input_ids": (8, T), "decoder_attention_mask": (8, T)}
    assert all(v.dtype == np.int32 for v in b.values())
    assert (b["decoder_input_ids"][:, 0] == 0).all()
    assert (b["decoder_input_ids"][:, 1:] == b["labels"][:, :-1]).all()
    assert (b["labels"][b["decoder_attention_mask"] == 0] == 0).all()
    assert (b["input_ids"][b["attention_mask"] == 0] == 0).all()
    # every real target ends with eos (id 1) at its last unmasked position
    last = b["decoder_attention_mask"].sum(1) - 1
    assert (b["labels"][np.arange(8), last] == tok.eos_token_id).all()
    # rows decode back to the example text of the task they claim
    split_pos, ex = s.global_indices(0)
    row = 0
    text = tok.decode(b["labels"][row][b["decoder_attention_mask"][row] == 1], skip_special_tokens=True)
    assert text == train_splits[split_pos[row]].examples[ex[row]]["targets"]
    assert b["task_ids"][row] == split_pos[row]


def test_truncation_is_counted_and_logged(tok, small_tasks, caplog):
    with caplog.at_level(logging.WARNING, logger="talora_jax.data.pipeline"):
        ts = pipeline.load_split(small_tasks["synth_span"], "dev", tok, 8, 3)
    assert ts.stats["inputs_truncated"] == len(ts) and ts.stats["targets_truncated"] > 0
    assert "truncated" in caplog.text
    inp, am, lab, dm = ts.rows(np.arange(3))
    assert (am.sum(1) == 8).all() and (inp[:, -1] == tok.eos_token_id).all()


def test_cache_reused_and_invalidated(tok, small_tasks, tmp_path, monkeypatch):
    task = small_tasks["synth_topic"]
    cache = str(tmp_path / "cache")
    first = pipeline.load_split(task, "dev", tok, N, T, cache_dir=cache)
    calls = []
    orig = type(task).text_examples
    monkeypatch.setattr(type(task), "text_examples", lambda self, *a, **k: calls.append(1) or orig(self, *a, **k))
    again = pipeline.load_split(task, "dev", tok, N, T, cache_dir=cache)
    assert calls == [] and (again.input_ids == first.input_ids).all() and again.examples == first.examples
    pipeline.load_split(task, "dev", tok, N + 8, T, cache_dir=cache)  # lengths changed -> re-tokenized
    assert len(calls) == 1
    pipeline.load_split(task, "dev", tok, N, T + 1, cache_dir=cache)
    assert len(calls) == 2
    # a different tokenizer has a different fingerprint -> never served the old ids
    monkeypatch.setattr("talora_jax.t5.tokenizer.tokenizer_fingerprint", lambda t: "another-tokenizer")
    pipeline.load_split(task, "dev", tok, N, T, cache_dir=cache)
    assert len(calls) == 3
    monkeypatch.undo()
    # a cache whose stored key does not match (tampered / stale) is ignored and rebuilt
    calls.clear()
    monkeypatch.setattr(type(task), "text_examples", lambda self, *a, **k: calls.append(1) or orig(self, *a, **k))
    from talora_jax.t5 import tokenizer_fingerprint
    key = pipeline.cache_key(task, "dev", tokenizer_fingerprint(tok), N, T)
    meta = os.path.join(pipeline._cache_path(cache, key), "meta.json")
    with open(meta) as f:
        text = f.read()
    with open(meta, "w") as f:
        f.write(text.replace('"max_input_len": 128', '"max_input_len": 99'))
    pipeline.load_split(task, "dev", tok, N, T, cache_dir=cache)
    assert calls == [1]


def test_task_definition_change_changes_key(tok):
    a = synthetic.SyntheticTask("synth_pair", seed=0, sizes=SIZES)
    b = synthetic.SyntheticTask("synth_pair", seed=1, sizes=SIZES)
    assert pipeline.cache_key(a, "train", "fp", N, T) != pipeline.cache_key(b, "train", "fp", N, T)


def test_sampler_deterministic_and_restartable(train_splits):
    s1 = sampling.Sampler(train_splits, batch_size=16, seed=7)
    s2 = sampling.Sampler(train_splits, batch_size=16, seed=7)
    for step in (0, 5, 123):
        a, b = s1.batch(step), s2.batch(step)
        assert all((a[k] == b[k]).all() for k in a)
    assert not (s1.batch(1)["input_ids"] == sampling.Sampler(train_splits, 16, seed=8).batch(1)["input_ids"]).all()
    it = s1.iterate()
    run = [next(it) for _ in range(6)]
    state = it.state()
    assert state == {"step": 6}
    cont = [next(it) for _ in range(3)]
    resumed = s2.iterate()
    resumed.restore(state)
    for a, b in zip(cont, [next(resumed) for _ in range(3)]):
        assert all((a[k] == b[k]).all() for k in a)
    assert not all((run[0][k] == run[1][k]).all() for k in run[0])


def test_host_slices_disjoint_and_complete(train_splits):
    full = sampling.Sampler(train_splits, batch_size=12, seed=3).batch(4)
    parts = [sampling.Sampler(train_splits, 12, seed=3, process_index=i, process_count=3).batch(4) for i in range(3)]
    for k in full:
        assert (np.concatenate([p[k] for p in parts]) == full[k]).all()
    assert all(len(p["task_ids"]) == 4 for p in parts)
    with pytest.raises(DataError, match="divisible"):
        sampling.Sampler(train_splits, 10, process_index=0, process_count=3)


def test_single_task_is_epoch_without_replacement(train_splits):
    s = sampling.Sampler(train_splits[:1], batch_size=20, seed=0)
    n = len(train_splits[0])
    seen = np.concatenate([s.global_indices(step)[1] for step in range(n // 20)])
    assert sorted(seen.tolist()) == list(range(n))


def test_mixture_rates_formula_and_empirical():
    sizes = {"a": 1000, "b": 100, "c": 10}
    assert sampling.mixture_rates(sizes) == pytest.approx({"a": 1000 / 1110, "b": 100 / 1110, "c": 10 / 1110})
    capped = sampling.mixture_rates(sizes, cap=100)
    assert capped == pytest.approx({"a": 100 / 210, "b": 100 / 210, "c": 10 / 210})
    temp = sampling.mixture_rates(sizes, mode="temperature", temperature=2.0)
    w = np.sqrt([1000, 100, 10])
    assert list(temp.values()) == pytest.approx(list(w / w.sum()))
    assert sampling.mixture_rates(sizes, mode="temperature", temperature=1.0) == pytest.approx(
        sampling.mixture_rates(sizes))
    assert sampling.mixture_rates(sizes, mode="equal") == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    with pytest.raises(DataError):
        sampling.mixture_rates(sizes, mode="bogus")


def test_sampler_follows_rates(train_splits):
    rates = [0.6, 0.3, 0.1]
    s = sampling.Sampler(train_splits, batch_size=64, seed=0, rates=rates)
    counts = np.bincount(np.concatenate([s.global_indices(k)[0] for k in range(200)]), minlength=3)
    assert counts / counts.sum() == pytest.approx(rates, abs=0.01)


def test_eval_batches_cover_every_example_once(tok, small_tasks):
    ts = pipeline.load_split(small_tasks["synth_sentiment"], "dev", tok, N, T)  # 41 examples
    for hosts in (1, 2):
        seen = []
        for i in range(hosts):
            batches = list(pipeline.eval_batches(ts, batch_size=8, task_id=5, process_index=i, process_count=hosts))
            assert len(batches) == 6
            for b in batches:
                assert b["input_ids"].shape == (8 // hosts, N) and (b["task_ids"] == 5).all()
                assert ((b["example_index"] >= 0) == (b["example_mask"] == 1)).all()
                assert (b["attention_mask"].sum(1) > 0).all()  # padding rows are never fully masked
                seen += b["example_index"][b["example_mask"] == 1].tolist()
        assert sorted(seen) == list(range(len(ts)))
    batches = list(pipeline.eval_batches(ts, batch_size=8))
    preds = [[ts.examples[i]["targets"] if i >= 0 else "pad" for i in b["example_index"]] for b in batches]
    ordered = pipeline.scatter_predictions(len(ts), [b["example_index"] for b in batches], preds)
    assert tasks.get("synth_sentiment").score(ts.examples, ordered) == {"accuracy": 100.0}
    with pytest.raises(DataError, match="no prediction"):
        pipeline.scatter_predictions(len(ts), [b["example_index"] for b in batches[:-1]], preds[:-1])


def test_few_shot(train_splits):
    ts = train_splits[0]
    a = sampling.few_shot(ts, 16, seed=1)
    b = sampling.few_shot(ts, 16, seed=1)
    c = sampling.few_shot(ts, 16, seed=2)
    assert len(a) == 16 and a.examples == b.examples and a.examples != c.examples
    assert (a.input_ids == b.input_ids).all()
    idx = sampling.few_shot_indices(len(ts), 16, 1, ts.task)
    assert len(set(idx.tolist())) == 16
    assert (a.rows(np.arange(16))[0] == ts.rows(idx)[0]).all()
    runs = list(sampling.few_shot_over_seeds(train_splits, 4, seeds=[0, 1, 2]))
    assert [seed for seed, _ in runs] == [0, 1, 2] and all(len(s) == 4 for _, ss in runs for s in ss)
    with pytest.raises(FewShotError, match="larger than the training set"):
        sampling.few_shot(ts, len(ts) + 1, seed=0)
    s = sampling.Sampler([a], batch_size=8, seed=0)  # few-shot splits train like any split
    assert s.batch(3)["input_ids"].shape == (8, N)


def test_label_word_ids(tok):
    out = pipeline.label_word_ids("synth_topic", tok, T)
    assert out["labels"].shape == (3, T)
    for i, w in enumerate(tasks.get("synth_topic").label_words):
        assert tok.decode(out["labels"][i][out["decoder_attention_mask"][i] == 1], skip_special_tokens=True) == w
    with pytest.raises(DataError, match="no label words"):
        pipeline.label_word_ids("synth_span", tok, T)
