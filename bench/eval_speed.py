"""Evaluation speed: greedy generation and rank classification, ours against PEFT, in examples/s.

Same random T5 weights, same fixed eval set (``--examples`` inputs of ``--src_len``
tokens, in batches of ``--eval_batch``), same prompt length, interleaved repeats.

  generation      ours: ``greedy_generate_fn`` (one jitted program: encode once, KV cache,
                  ``fori_loop`` over ``--gen_len`` steps). PEFT: ``PeftModel.generate``
                  (greedy, ``min_new_tokens = max_new_tokens = gen_len`` so both sides emit
                  exactly gen_len tokens; HF's KV cache on).
  rank            ``--labels`` label words of ``--label_len`` tokens each; the most likely
                  label per example. Ours: ``rank_classify_fn`` (encode once, one decoder
                  pass over batch x labels rows). PEFT has no rank-classification API; its
                  side does the same efficient thing by hand: prompt + embeddings through
                  the encoder once, then one ``T5ForConditionalGeneration`` pass with
                  ``encoder_outputs`` repeated per label.

    python bench/eval_speed.py --quick
    python bench/eval_speed.py --preset t5-small --examples 64 --eval_batch 16 --src_len 128 --gen_len 16
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench.common import Workload, hf_config_kwargs, peft_config_kwargs, prompt_config, t5_config  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def eval_set(work: Workload, examples: int, num_labels: int, label_len: int, seed: int = 0):
    import numpy as np
    vocab = t5_config(work).vocab_size
    rng = np.random.default_rng(seed)
    inputs = dict(task_ids=(np.arange(examples) % work.num_tasks).astype(np.int32),
                  input_ids=rng.integers(2, vocab, (examples, work.src_len)).astype(np.int32),
                  attention_mask=np.ones((examples, work.src_len), np.int32))
    words = rng.integers(2, vocab, (num_labels, label_len)).astype(np.int32)
    words[:, -1] = 1  # eos
    dec = np.zeros_like(words)
    dec[:, 1:] = words[:, :-1]
    labels = dict(decoder_input_ids=dec, labels=words, decoder_attention_mask=np.ones_like(words))
    return inputs, labels


def batches(inputs: dict, size: int):
    n = len(inputs["input_ids"])
    return [{k: v[i:i + size] for k, v in inputs.items()} for i in range(0, n, size)]


def build_ours(work: Workload, method: str, backbone: Any, gen_len: int, inputs, labels, eval_batch: int):
    import jax
    from talora_jax.model import PromptedT5, init_prompt
    from talora_jax.train.decode import greedy_generate_fn, rank_classify_fn
    model = PromptedT5(t5_config(work), prompt_config(work, method))
    prompt = init_prompt(model, jax.random.PRNGKey(1), backbone)
    backbone = jax.device_put(backbone)
    gen = jax.jit(greedy_generate_fn(model, gen_len))
    cls = jax.jit(rank_classify_fn(model))
    bs = [jax.device_put(b) for b in batches(inputs, eval_batch)]
    labels = jax.device_put(labels)
    t = time.perf_counter()
    gen(prompt, backbone, bs[0]).block_until_ready()
    gen_compile = time.perf_counter() - t
    t = time.perf_counter()
    cls(prompt, backbone, bs[0], labels).block_until_ready()
    cls_compile = time.perf_counter() - t

    def generate():
        return [gen(prompt, backbone, b) for b in bs][-1].block_until_ready()

    def classify():
        return [cls(prompt, backbone, b, labels) for b in bs][-1].block_until_ready()

    return dict(name=f"ours/{method}", generate=generate, classify=classify,
                compile_s=dict(generate=gen_compile, classify=cls_compile))


def build_peft(work: Workload, method: str, base: Any, gen_len: int, inputs, labels, eval_batch: int):
    import torch
    from peft import MultitaskPromptTuningConfig, PromptTuningConfig, TaskType, get_peft_model
    cls = {"pt": PromptTuningConfig, "mpt": MultitaskPromptTuningConfig}[method]
    model = get_peft_model(base, cls(task_type=TaskType.SEQ_2_SEQ_LM, **peft_config_kwargs(work, method))).eval()
    hf = model.get_base_model()
    bs = [{k: torch.from_numpy(v).long() for k, v in b.items()} for b in batches(inputs, eval_batch)]
    lab = {k: torch.from_numpy(v).long() for k, v in labels.items()}
    num_labels, P = lab["labels"].shape[0], work.prompt_len

    def extra(b):
        return {"task_ids": b["task_ids"]} if method == "mpt" else {}

    def generate():
        with torch.inference_mode():
            for b in bs:
                out = model.generate(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                     max_new_tokens=gen_len, min_new_tokens=gen_len, do_sample=False,
                                     num_beams=1, **extra(b))
        return out

    def classify():
        with torch.inference_mode():
            for b in bs:
                n = b["input_ids"].shape[0]
                prompts = model.get_prompt(batch_size=n, **extra(b))[:, :P]
                embeds = torch.cat([prompts, model.word_embeddings(b["input_ids"])], 1)
                mask = torch.cat([torch.ones(n, P, dtype=torch.long), b["attention_mask"]], 1)
                enc = hf.encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
                rows = lambda x: x.repeat(n, *([1] * (x.ndim - 1)))  # noqa: E731
                logits = hf(encoder_outputs=(enc.repeat_interleave(num_labels, 0),),
                            attention_mask=mask.repeat_interleave(num_labels, 0),
                            decoder_input_ids=rows(lab["decoder_input_ids"]),
                            decoder_attention_mask=rows(lab["decoder_attention_mask"])).logits
                lp = torch.log_softmax(logits, -1).gather(-1, rows(lab["labels"])[..., None])[..., 0]
                pred = (lp * rows(lab["decoder_attention_mask"])).sum(-1).view(n, num_labels).argmax(-1)
        return pred

    return dict(name=f"peft/{method}", generate=generate, classify=classify,
                compile_s=dict(generate=0.0, classify=0.0))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Workload()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--preset", default=d.preset)
    parser.add_argument("--src_len", type=int, default=d.src_len)
    parser.add_argument("--gen_len", type=int, default=d.tgt_len)
    parser.add_argument("--prompt_len", type=int, default=d.prompt_len)
    parser.add_argument("--task_len", type=int, default=d.task_len)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--eval_batch", type=int, default=16)
    parser.add_argument("--labels", type=int, default=3)
    parser.add_argument("--label_len", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ours", default="talora,pt")
    args = parser.parse_args(argv)
    shrink = False
    if args.quick:
        args.src_len, args.gen_len, args.prompt_len, args.task_len = 32, 8, 20, 4
        args.examples, args.eval_batch, shrink = 16, 8, True
    work = Workload(args.preset, args.eval_batch, args.src_len, args.gen_len, args.prompt_len, args.task_len,
                    shrink=shrink)

    import jax
    import torch
    from talora_jax.t5.weights import convert_state_dict
    from transformers import T5Config as HFConfig, T5ForConditionalGeneration

    torch.manual_seed(0)
    base = T5ForConditionalGeneration(HFConfig(**hf_config_kwargs(work)))
    state = {k: v.detach().numpy() for k, v in base.state_dict().items()
             if not k.endswith("embed_tokens.weight") and k != "lm_head.weight"}
    backbone = convert_state_dict(t5_config(work), state)
    inputs, labels = eval_set(work, args.examples, args.labels, args.label_len)
    sides = [build_ours(work, m, backbone, args.gen_len, inputs, labels, args.eval_batch)
             for m in args.ours.split(",")]
    sides += [build_peft(work, m, copy.deepcopy(base), args.gen_len, inputs, labels, args.eval_batch)
              for m in ("pt", "mpt")]
    print(f"eval set: {args.examples} examples x {args.src_len} tokens, prompt {args.prompt_len}, batch "
          f"{args.eval_batch}; generate {args.gen_len} tokens; rank {args.labels} labels x {args.label_len} "
          f"tokens; {work.preset}{' (shrunk)' if shrink else ''}, float32, jax {jax.__version__}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    results: dict[str, Any] = dict(args=vars(args), modes={})
    for mode in ("generate", "classify"):
        for s in sides:
            s[mode]()  # warm-up
        times: dict[str, list[float]] = {s["name"]: [] for s in sides}
        for r in range(args.repeats):
            for s in sides[r % len(sides):] + sides[:r % len(sides)]:
                t = time.perf_counter()
                s[mode]()
                times[s["name"]].append(time.perf_counter() - t)
        ref = statistics.median(times["peft/pt"])
        print(f"\n{mode}: {'side':>12} {'examples/s':>10} {'min s':>7} {'vs peft/pt':>10} {'compile s':>9}")
        results["modes"][mode] = {}
        for s in sides:
            med = statistics.median(times[s["name"]])
            per = [p / o for p, o in zip(times["peft/pt"], times[s["name"]])]
            results["modes"][mode][s["name"]] = dict(examples_per_s=args.examples / med, times=times[s["name"]],
                                                     ratio_vs_peft_pt=statistics.median(per),
                                                     compile_s=s["compile_s"][mode])
            print(f"{'':>10}{s['name']:>12} {args.examples / med:10.1f} {min(times[s['name']]):7.2f} "
                  f"{ref / med:10.2f} {s['compile_s'][mode]:9.1f}")
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "eval_speed_quick.json" if args.quick else "eval_speed.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
