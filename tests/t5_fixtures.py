"""Builders for tiny, random Hugging Face T5 checkpoints and an offline SentencePiece tokenizer.

Tests never download: they make a random ``T5ForConditionalGeneration`` with
transformers (the independent numerical reference), save it the way the hub
stores models, and load it back through our code.
"""

from __future__ import annotations

import json
import os

import numpy as np

# Two shapes that exercise every variant switch: d_kv * heads != d_model and unequal depths.
TINY_V1 = dict(vocab_size=160, d_model=32, d_kv=12, d_ff=48, num_layers=2, num_decoder_layers=3,
               num_heads=3, feed_forward_proj="relu", tie_word_embeddings=True,
               relative_attention_num_buckets=8, relative_attention_max_distance=20)
TINY_V11 = dict(vocab_size=160, d_model=32, d_kv=12, d_ff=40, num_layers=3, num_decoder_layers=2,
                num_heads=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                relative_attention_num_buckets=8, relative_attention_max_distance=20)

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "premise: a man is sleeping. hypothesis: a person rests.",
    "sst2 sentence: this film is great fun and very moving",
    "question: who wrote the book? context: the book was written by ann.",
    "entailment neutral contradiction positive negative true false yes no",
    "0 1 2 3 4 5 6 7 8 9 red green blue cat dog bird apple banana",
]


def make_hf_t5(out_dir: str, seed: int = 0, logit_scale: float = 1.0, **overrides) -> "torch.nn.Module":
    """Saves a random HF T5 to ``out_dir`` (config.json + model.safetensors) and returns it.

    ``logit_scale`` multiplies the output head (the embedding when tied). Random
    weights give logits of std ~1 with many near-ties; a pretrained T5 spreads its
    logits over several nats, which is what precision tests should see.

    transformers>=5 always ties T5's output head to the embedding when it saves,
    so an untied (v1.1-style) model is written by hand with its own ``lm_head``
    and ``tie_word_embeddings: false``, exactly as v1.1/FLAN checkpoints on the hub are.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import T5Config as HFConfig, T5ForConditionalGeneration

    spec = {**TINY_V1, **overrides}
    tied = spec.pop("tie_word_embeddings")
    torch.manual_seed(seed)
    cfg = HFConfig(**spec, dropout_rate=0.0, tie_word_embeddings=tied)
    model = T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # HF's init leaves norms at 1; randomise them so the test sees them
        for name, p in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.uniform_(0.5, 1.5)
    if not tied:
        model.lm_head = torch.nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        torch.nn.init.normal_(model.lm_head.weight, std=cfg.d_model ** -0.5)
    with torch.no_grad():
        (model.shared if tied else model.lm_head).weight.mul_(logit_scale)
    os.makedirs(out_dir, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
             if not k.endswith("embed_tokens.weight")}
    if tied:
        state.pop("lm_head.weight", None)
    save_file(state, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    hf_json = cfg.to_dict()
    hf_json["tie_word_embeddings"] = tied
    hf_json.pop("scale_decoder_outputs", None)
    hf_json["model_type"] = "t5"
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_json, f, indent=2)
    return model


def make_spm_tokenizer(out_dir: str) -> str:
    """Trains a tiny SentencePiece model (offline) and stores it as ``out_dir/spiece.model``."""
    from talora_jax.t5.tokenizer import train_sentencepiece

    train_sentencepiece(CORPUS * 20, out_dir, vocab_size=56)
    return out_dir


def padded_batch(vocab: int, batch: int = 3, src: int = 9, tgt: int = 6, seed: int = 0):
    """Random ids with right padding in both encoder and decoder inputs (row 0 unpadded)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, vocab, size=(batch, src))
    dec = rng.integers(2, vocab, size=(batch, tgt))
    mask = np.ones((batch, src), np.int32)
    dmask = np.ones((batch, tgt), np.int32)
    for row in range(1, batch):
        mask[row, src - 2 * row:] = 0
        dmask[row, tgt - row:] = 0
    ids = np.where(mask == 1, ids, 0)
    dec[:, 0] = 0  # decoder start token
    dec = np.where(dmask == 1, dec, 0)
    return ids.astype(np.int32), mask, dec.astype(np.int32), dmask
