"""A stand-in for a pretrained T5, for offline demos and tests only.

A randomly initialised frozen T5 cannot be prompt-tuned into anything: prompt
tuning steers knowledge a backbone already has. Offline we cannot download
one, so this module *pretrains a tiny T5 on separate synthetic data*, saves it
as a real Hugging Face checkpoint (``config.json`` + ``model.safetensors`` +
``spiece.model``) and from then on it is loaded and frozen like any hub model.

What the stand-in learns (and why it does not hand out the answers):

- span-corruption denoising over synthetic text (language statistics);
- the synthetic task families under *code words* instead of task names, each
  family twice: once with its label words in the canonical order and once
  permuted (``alpha`` says "positive" where ``kilo`` says "negative"). Without
  the right code the backbone cannot know which mapping is wanted, so at step 0
  a prompt-tuned run starts near chance on the label tasks and has to *learn*
  the task, which is what the demo and the learning test measure.

Its pretraining examples are drawn with their own seed, and any input that also
occurs in the synthetic suite's dev/test splits is dropped, so evaluation never
sees a pretraining example. Nothing here is used with real checkpoints.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from talora_jax.data import synthetic
from talora_jax.losses import token_cross_entropy
from talora_jax.t5 import T5, T5Config, init_params, load_tokenizer, save_pretrained
from talora_jax.t5.tokenizer import train_sentencepiece

STANDIN_VERSION = 1
CODES = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
         "lima")
VOCAB_PIECES = 500   # SentencePiece pieces; T5 sentinels come on top
VOCAB_ROWS = 640     # embedding rows: >= pieces + 100 sentinels, a multiple of 128 for sharding


def _spec(d_model: int, layers: int, heads: int) -> dict:
    return dict(vocab_size=VOCAB_ROWS, d_model=d_model, d_kv=d_model // heads, d_ff=4 * d_model,
                num_layers=layers, num_decoder_layers=layers, num_heads=heads, feed_forward_proj="gated-gelu",
                tie_word_embeddings=False, scale_decoder_outputs=False)


def pretraining_examples(seed: int, per_task: int) -> list[tuple[str, str]]:
    """(input, target) pairs: coded task families, each in canonical and permuted label order."""
    held_out = {ex["inputs"] for task in synthetic.make_suite() for split in ("dev", "test")
                for ex in task.text_examples(split)}
    suite = synthetic.make_suite(seed=seed, sizes={"train": per_task, "dev": 1, "test": 1})
    pairs, code = [], iter(CODES)
    for task in suite:
        prefix = task.name.replace("_", " ") + " "
        examples = [ex for ex in task.text_examples("train") if ex["inputs"] not in held_out]
        words = task.label_words
        mappings = [None] if not words else [words, words[1:] + words[:1]]  # canonical, then rotated
        for mapping in mappings:
            c = next(code)
            for ex in examples:
                body = ex["inputs"][len(prefix):]
                target = ex["targets"] if mapping is None else mapping[words.index(ex["targets"])]
                pairs.append((f"{c} {body}", target))
    return pairs


def _span_corrupt(ids: list[int], sentinels: list[int], rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """T5's denoising: ~15% of tokens in short spans become sentinels; the target lists the spans."""
    n = len(ids)
    mask = np.zeros(n, bool)
    for start in rng.choice(n, size=max(1, int(0.15 * n) // 2), replace=False):
        mask[start:start + 2] = True
    inputs, targets, s, prev = [], [], 0, False
    for token, masked in zip(ids, mask):
        if masked and not prev:
            inputs.append(sentinels[s])
            targets.append(sentinels[s])
            s += 1
        (targets if masked else inputs).append(token)
        prev = masked
    return inputs, targets


def build_standin_backbone(out_dir: str, *, d_model: int = 64, layers: int = 2, heads: int = 4,
                           steps: int = 1500, batch_size: int = 32, seed: int = 1234,
                           log: Callable[[str], None] = print) -> str:
    """Pretrains (or reuses, if already built with the same settings) the stand-in in ``out_dir``."""
    settings = dict(version=STANDIN_VERSION, d_model=d_model, layers=layers, heads=heads, steps=steps,
                    batch_size=batch_size, seed=seed)
    stamp = os.path.join(out_dir, "standin.json")
    if os.path.isfile(stamp) and os.path.isfile(os.path.join(out_dir, "model.safetensors")):
        with open(stamp) as f:
            if json.load(f) == settings:
                log(f"stand-in backbone: reusing {out_dir}")
                return out_dir
    start = time.perf_counter()
    pairs = pretraining_examples(seed, per_task=3000)
    vocabulary = sorted({w for task in synthetic.make_suite(seed=seed, sizes={"train": 500, "dev": 1, "test": 1})
                         for ex in task.text_examples("train")
                         for w in (ex["inputs"] + " " + ex["targets"]).split()} | set(CODES))
    for task in synthetic.make_suite():
        vocabulary += task.label_words or []
    train_sentencepiece([f"{a}\n{b}" for a, b in pairs] + vocabulary * 20, out_dir, VOCAB_PIECES)
    tokenizer = load_tokenizer(out_dir)
    sentinels = [tokenizer.convert_tokens_to_ids(f"<extra_id_{i}>") for i in range(100)]
    config = T5Config(**_spec(d_model, layers, heads))
    if len(tokenizer) > config.vocab_size:
        raise ValueError(f"stand-in tokenizer has {len(tokenizer)} tokens > {config.vocab_size} rows")
    log(f"stand-in backbone: pretraining a {d_model}-wide {layers}+{layers}-layer T5 on {len(pairs):,} "
        f"synthetic examples + denoising for {steps} steps (a stand-in for a pretrained checkpoint)")

    enc = [tokenizer(a).input_ids[:-1] for a, _ in pairs]  # without eos
    tgt = [tokenizer(b).input_ids for _, b in pairs]
    n_len, t_len = 48, 16
    rng = np.random.default_rng(seed)

    def batch():
        inp = np.zeros((batch_size, n_len), np.int32)
        lab = np.zeros((batch_size, t_len), np.int32)
        for r in range(batch_size):
            i = int(rng.integers(len(enc)))
            ids = enc[i][:n_len - 1]
            if rng.random() < 0.3:
                x, y = _span_corrupt(ids, sentinels, rng)
                x, y = x + [1], (y[:t_len - 1] + [1])
            else:
                x, y = ids + [1], tgt[i][:t_len]
            inp[r, :len(x)] = x[:n_len]
            lab[r, :len(y)] = y
        dec = np.zeros_like(lab)
        dec[:, 1:] = lab[:, :-1]
        return inp, (inp > 0).astype(np.int32), dec, (lab > 0).astype(np.int32), lab

    model = T5(config)
    params = init_params(config, jax.random.PRNGKey(seed))
    warmup = min(100, max(steps // 10, 1))
    tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 3e-3, warmup, max(steps, warmup + 1)),
                     weight_decay=0.01)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, inp, mask, dec, dmask, lab):
        def loss_fn(p):
            logits = model.apply({"params": p}, inp, mask, dec, dmask)
            return token_cross_entropy(logits, lab, dmask)[0]
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    for i in range(steps):
        params, opt_state, loss = step(params, opt_state, *batch())
        if (i + 1) % max(steps // 5, 1) == 0:
            log(f"  stand-in pretraining step {i + 1}/{steps}: loss {float(loss):.3f} "
                f"({time.perf_counter() - start:.0f}s)")
    save_pretrained(config, jax.device_get(params), out_dir)
    with open(stamp, "w") as f:
        json.dump(settings, f)
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write("Stand-in T5 pretrained by talora_jax.train.standin on synthetic data, for offline demos "
                "and tests. It is not a real language model.\n")
    log(f"stand-in backbone: saved to {out_dir} ({time.perf_counter() - start:.0f}s)")
    return out_dir


def standin_dir(root: str, **kwargs) -> str:
    """``build_standin_backbone`` into ``root/standin_t5`` (shared cache for repeated runs)."""
    return build_standin_backbone(os.path.join(root, "standin_t5"), **kwargs)


