"""Evaluation decoding against independent references, with a TA-LoRA prompt whose gates are open.

- Cached greedy generation (one jitted fori_loop over the KV cache) equals a step-by-step argmax
  loop that reruns the full, uncached decoder over the tokens so far, including stopping at eos
  and padding after it.
- Rank classification picks, per example, the label word whose summed token log-probability,
  computed here from ``PromptedT5`` logits one label at a time, is highest.

The stand-in backbone is used because it is pretrained: its logits are spread over several nats,
so argmax comparisons are not decided by float noise between near-tied tokens.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.prompt_defaults import get_prompt_config
from talora_jax.data.pipeline import label_word_ids, load_split, make_batch
from talora_jax.model import PromptedT5, init_prompt
from talora_jax.t5 import load_pretrained, load_tokenizer
from talora_jax.train.decode import greedy_generate_fn, rank_classify_fn

MAX_DECODE = 6


@pytest.fixture(scope="module")
def env(standin_dir, tmp_path_factory):
    config, backbone = load_pretrained(standin_dir, dtype="float32")
    tokenizer = load_tokenizer(standin_dir)
    pcfg = get_prompt_config("talora")
    pcfg.num_tasks, pcfg.shared_len, pcfg.task_len, pcfg.rank = 2, 6, 4, 2
    pcfg.init.vocab_range = (3, 400)
    model = PromptedT5(config, pcfg)
    prompt = init_prompt(model, jax.random.PRNGKey(1), backbone)
    rng = np.random.default_rng(0)
    prompt["task_coeffs"] = jnp.asarray(rng.normal(scale=1.0, size=prompt["task_coeffs"].shape), jnp.float32)
    prompt["enc_gate"] = jnp.asarray(rng.uniform(-0.8, 0.8, size=prompt["enc_gate"].shape), jnp.float32)
    prompt["cross_gate"] = jnp.asarray(rng.uniform(-0.8, 0.8, size=prompt["cross_gate"].shape), jnp.float32)
    # real synthetic inputs (topic task), rows alternating between the two task ids
    split = load_split("synth_topic", "dev", tokenizer, 48, 8, cache_dir=str(tmp_path_factory.mktemp("cache")))
    batch = make_batch([split], np.zeros(8, np.int64), np.arange(8), [0])
    batch["task_ids"] = np.arange(8, dtype=np.int32) % 2
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    variables = {"params": {"backbone": backbone, "prompt": prompt}}
    forward = jax.jit(lambda b: model.apply(variables, b))
    return dict(model=model, backbone=backbone, prompt=prompt, batch=batch, forward=forward, tokenizer=tokenizer)


def _reference_greedy(env, eos_id, pad_id=0, start_id=0):
    """Argmax loop over full decoder passes: step t reruns the decoder on [start, y_0 .. y_{t-1}]."""
    batch = env["batch"]
    bsz = batch["task_ids"].shape[0]
    dec_in = np.full((bsz, MAX_DECODE), pad_id, np.int32)
    dec_in[:, 0] = start_id
    out = np.full((bsz, MAX_DECODE), pad_id, np.int32)
    done = np.zeros(bsz, bool)
    gaps = []
    for t in range(MAX_DECODE):
        logits = np.asarray(env["forward"]({**batch, "decoder_input_ids": jnp.asarray(dec_in),
                                             "decoder_attention_mask": jnp.ones_like(jnp.asarray(dec_in))}))[:, t]
        top2 = np.sort(logits, axis=-1)[:, -2:]
        gaps.append(np.where(done, np.inf, top2[:, 1] - top2[:, 0]))
        nxt = np.where(done, pad_id, logits.argmax(-1)).astype(np.int32)
        out[:, t] = nxt
        if t + 1 < MAX_DECODE:
            dec_in[:, t + 1] = nxt
        done |= nxt == eos_id
    return out, float(np.min(gaps))


def test_cached_greedy_equals_uncached_argmax_loop(env):
    generate = lambda eos: jax.jit(greedy_generate_fn(env["model"], MAX_DECODE, eos_id=eos))(  # noqa: E731
        env["prompt"], env["backbone"], env["batch"])
    free = np.asarray(generate(-1))  # no eos: every row decodes all MAX_DECODE tokens
    ref_free, gap = _reference_greedy(env, eos_id=-1)
    assert gap > 1e-4  # the comparison is well conditioned
    np.testing.assert_array_equal(free, ref_free)
    assert len(np.unique(free)) > 2  # the prompts make it produce varied tokens
    # now call the token row 0 produced at position 2 "eos": rows must stop there and pad after it
    eos = int(free[0, 2])
    stopped = np.asarray(generate(eos))
    ref_stopped, _ = _reference_greedy(env, eos_id=eos)
    np.testing.assert_array_equal(stopped, ref_stopped)
    first = int(np.argmax(stopped[0] == eos))
    assert first <= 2 and np.all(stopped[0, first + 1:] == 0)
    assert not np.array_equal(stopped, free)


def test_rank_classification_picks_the_most_likely_label(env):
    labels = label_word_ids("synth_topic", env["tokenizer"], 8)
    lengths = labels["decoder_attention_mask"].sum(-1)
    assert len(set(lengths.tolist())) > 1  # labels of different token lengths
    batch = env["batch"]
    bsz = batch["task_ids"].shape[0]
    scores = np.zeros((bsz, len(lengths)))
    for c in range(len(lengths)):
        row = lambda x: jnp.asarray(np.repeat(x[c:c + 1], bsz, axis=0))  # noqa: E731
        logits = env["forward"]({**batch, "decoder_input_ids": row(labels["decoder_input_ids"]),
                                 "decoder_attention_mask": row(labels["decoder_attention_mask"])})
        logp = np.asarray(jax.nn.log_softmax(logits, axis=-1), np.float64)
        target = labels["labels"][c]
        mask = labels["decoder_attention_mask"][c]
        scores[:, c] = np.sum(logp[:, np.arange(len(target)), target] * mask, axis=-1)
    picked = np.asarray(jax.jit(rank_classify_fn(env["model"]))(
        env["prompt"], env["backbone"], batch, {k: jnp.asarray(v) for k, v in labels.items()}))
    top2 = np.sort(scores, axis=-1)[:, -2:]
    assert np.min(top2[:, 1] - top2[:, 0]) > 1e-4
    np.testing.assert_array_equal(picked, scores.argmax(-1))
    assert len(set(picked.tolist())) > 1, scores  # not a constant answer
