"""Train-step throughput and memory: our jitted TA-LoRA step against HF PEFT prompt tuning and MPT.

All sides run in this one process on the same random T5 weights (transformers'
init, converted to ours), the same numpy batch and the same total prompt length,
interleaved repeat by repeat (the order rotates), so machine noise hits all
sides alike; read the ratios, not the absolute numbers.

  ours/<m>   talora_jax's real train step (``train_step_fn`` + ``jit_train_step``, as
             the trainer builds it), prompt method m (talora by default; --ours adds pt,
             mpt for like-for-like rows), Adam + global-norm clipping, after compilation.
  peft/pt    ``get_peft_model(T5ForConditionalGeneration, PromptTuningConfig)``, AdamW over
             the prompt only, clip_grad_norm_, loss.backward().
  peft/mpt   the same with ``MultitaskPromptTuningConfig`` (rank 1, task ids per example).

tokens/s counts real input+target tokens (batch x (src_len + tgt_len)), the same
number on every side. Memory is measured in a fresh subprocess per side (so one
framework's allocations cannot hide the other's): the Linux RSS high-water mark
is reset after warm-up (/proc/self/clear_refs) and read after 3 more steps.
"peak" is the whole process; "workload" is peak minus the RSS right after the
framework imports (what the model, batch, optimizer and step add). For ours XLA's
compiled memory analysis (arguments + temporaries) is printed too.

    python bench/throughput.py --quick
    python bench/throughput.py --preset t5-small --batch 8 --src_len 128 --tgt_len 16 --prompt_len 100

The last line printed is ``ratio_vs_peft_pt=<median>`` (ours-talora tokens/s over peft-pt tokens/s).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench.common import (QUICK, Workload, describe_ours, describe_peft, hf_config_kwargs,  # noqa: E402
                          make_batch, peak_rss_probe, peft_config_kwargs, prompt_config, t5_config)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


# ----------------------------------------------------------------------------------- our side


def build_ours(work: Workload, method: str, backbone: Any = None, batch: Any = None,
               num_devices: int = 1) -> dict[str, Any]:
    """Our trainer's step for ``method`` (data-parallel over ``num_devices``): the compiled
    step, its state and timings."""
    import jax
    import jax.numpy as jnp
    from configs.base import get_base_config
    from talora_jax import parallel
    from talora_jax.model import PromptedT5, init_prompt
    from talora_jax.t5 import init_params
    from talora_jax.train.optim import make_optimizer
    from talora_jax.train.step import TrainState, jit_train_step, train_step_fn

    cfg = t5_config(work)
    if backbone is None:
        backbone = init_params(cfg, jax.random.PRNGKey(0))
    batch = make_batch(work) if batch is None else batch
    model = PromptedT5(cfg, prompt_config(work, method))
    prompt = init_prompt(model, jax.random.PRNGKey(1), backbone)
    optim_cfg = get_base_config(method).optim
    optim_cfg.optimizer, optim_cfg.warmup_steps = "adam", 0
    optimizer, schedules = make_optimizer(optim_cfg, 10_000)
    mesh = parallel.make_mesh({"data": num_devices, "fsdp": 1, "model": 1}, jax.devices()[:num_devices])
    rep = parallel.replicated(mesh)
    state = TrainState(jnp.int32(0), prompt, optimizer.init(prompt))
    state_sh = jax.tree_util.tree_map(lambda _: rep, state)
    bb_sh = parallel.backbone_shardings(cfg, mesh)
    backbone = jax.device_put(backbone, bb_sh)
    state = jax.device_put(state, state_sh)
    dev_batch = jax.device_put(dict(batch), parallel.batch_sharding(mesh))
    step = jit_train_step(train_step_fn(model, optimizer, schedules), state_sh, bb_sh,
                          parallel.batch_sharding(mesh), rep)
    t = time.perf_counter()
    compiled = step.lower(state, backbone, dev_batch).compile()
    compile_s = time.perf_counter() - t
    box = {"state": state}

    def run() -> float:
        box["state"], metrics = compiled(box["state"], backbone, dev_batch)
        return float(metrics["loss"])

    t = time.perf_counter()
    first_loss = run()
    first_s = time.perf_counter() - t
    return dict(name=f"ours/{method}", run=run, compile_s=compile_s, first_step_s=first_s,
                first_loss=first_loss, compiled=compiled, model=model, prompt=prompt, box=box,
                backbone=backbone, batch=dev_batch)


def xla_memory(compiled: Any) -> dict[str, float]:
    m = compiled.memory_analysis()
    mib = 1 / 2**20
    if m is None:
        return {}
    return dict(arguments_mib=m.argument_size_in_bytes * mib, outputs_mib=m.output_size_in_bytes * mib,
                temp_mib=m.temp_size_in_bytes * mib, alias_mib=m.alias_size_in_bytes * mib,
                peak_mib=(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                          + m.temp_size_in_bytes) * mib)


def xla_flops(compiled: Any) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0]
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


# ---------------------------------------------------------------------------------- PEFT side


def hf_base(work: Workload):
    import torch
    from transformers import T5Config as HFConfig, T5ForConditionalGeneration
    torch.manual_seed(0)
    return T5ForConditionalGeneration(HFConfig(**hf_config_kwargs(work)))


def build_peft(work: Workload, method: str, base: Any, batch: Any) -> dict[str, Any]:
    import torch
    from peft import MultitaskPromptTuningConfig, PromptTuningConfig, TaskType, get_peft_model
    cls = {"pt": PromptTuningConfig, "mpt": MultitaskPromptTuningConfig}[method]
    model = get_peft_model(base, cls(task_type=TaskType.SEQ_2_SEQ_LM, **peft_config_kwargs(work, method)))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=0.3, weight_decay=1e-5)
    t = {k: torch.from_numpy(v).long() for k, v in batch.items()}
    if method == "pt":
        kwargs = dict(input_ids=t["input_ids"], attention_mask=t["attention_mask"],
                      decoder_input_ids=t["decoder_input_ids"], decoder_attention_mask=t["decoder_attention_mask"],
                      labels=t["labels"])
    else:  # PEFT's MPT path derives decoder inputs from labels (shift right), as ours are built
        kwargs = dict(input_ids=t["input_ids"], attention_mask=t["attention_mask"], labels=t["labels"],
                      task_ids=t["task_ids"])

    def run() -> float:
        opt.zero_grad(set_to_none=True)
        loss = model(**kwargs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return float(loss.detach())

    start = time.perf_counter()
    first_loss = run()
    return dict(name=f"peft/{method}", run=run, compile_s=0.0, first_step_s=time.perf_counter() - start,
                first_loss=first_loss, model=model, kwargs=kwargs,
                trainable=sum(p.numel() for p in params))


def peft_shapes(side: dict[str, Any]) -> dict[str, Any]:
    """The shapes PEFT really feeds T5's encoder and decoder (forward pre-hooks)."""
    import torch
    seen: dict[str, Any] = {}
    base = side["model"].get_base_model()

    def hook(name):
        def fn(_module, args, kwargs):
            x = kwargs.get("inputs_embeds")
            ids = kwargs.get("input_ids")
            seen[name] = tuple(x.shape[:2]) if x is not None else tuple(ids.shape)
        return fn

    handles = [base.encoder.register_forward_pre_hook(hook("encoder"), with_kwargs=True),
               base.decoder.register_forward_pre_hook(hook("decoder"), with_kwargs=True)]
    with torch.no_grad():
        side["model"](**side["kwargs"])
    for h in handles:
        h.remove()
    return seen


def check_same_work(work: Workload, ours: dict, peft: dict[str, dict], hf_state: dict) -> list[str]:
    """Asserts equal shapes on all sides; for pt and mpt also equal losses on copied prompts."""
    import jax
    import numpy as np
    import torch
    from talora_jax.model import PromptedT5, init_prompt
    from talora_jax.train.step import eval_loss_fn

    batch = make_batch(work)
    lines = []
    enc_shape = jax.eval_shape(lambda p: ours["model"].apply(
        {"params": {"backbone": ours["backbone"], "prompt": p}}, batch["task_ids"], batch["input_ids"],
        batch["attention_mask"], method=PromptedT5.encode)[0], ours["prompt"]).shape
    mine = describe_ours(work, "talora", batch)
    assert enc_shape == (mine["batch"], mine["encoder_len"], mine["d_model"]), (enc_shape, mine)
    for method, side in peft.items():
        seen = peft_shapes(side)
        want = describe_peft(work, method, batch)
        assert seen["encoder"] == (want["batch"], want["encoder_len"]), (method, seen, want)
        assert seen["decoder"] == (want["batch"], want["decoder_len"]), (method, seen, want)
        assert {k: v for k, v in want.items() if k != "dtype"} == \
            {k: v for k, v in describe_ours(work, method, batch).items() if k != "dtype"}
        lines.append(f"shapes {method}: ours encoder {enc_shape[:2]}, peft encoder {seen['encoder']}, "
                     f"decoder {seen['decoder']} (equal)")
        # Same computation: copy PEFT's prompt into our module of the same method, compare the loss.
        model = PromptedT5(t5_config(work), prompt_config(work, method))
        prompt = init_prompt(model, jax.random.PRNGKey(0), ours["backbone"])
        enc = side["model"].prompt_encoder["default"]
        emb = enc.embedding.weight.detach().numpy()[: work.prompt_len]
        prompt = jax.tree_util.tree_map(np.asarray, prompt)
        prompt["shared_prompt"] = emb
        if method == "mpt":
            prompt["task_u"] = enc.prefix_task_cols.detach().numpy()
            prompt["task_v"] = np.swapaxes(enc.prefix_task_rows.detach().numpy(), 1, 2)
        sums = jax.jit(eval_loss_fn(model))(prompt, ours["backbone"], batch)
        ours_loss = float(sums["nll_sum"] / sums["num_tokens"])
        side["model"].eval()
        with torch.no_grad():
            ref = float(side["model"](**side["kwargs"]).loss)
        side["model"].train()
        lines.append(f"loss {method}: ours {ours_loss:.6f} peft {ref:.6f} |diff| {abs(ours_loss - ref):.1e}")
        assert abs(ours_loss - ref) < 1e-3 * max(1.0, abs(ref)), lines[-1]
    return lines


# ------------------------------------------------------------------------------ memory probes


def probe(work: Workload, side: str) -> dict[str, Any]:
    """Runs in a fresh process: build one side, warm up, reset the RSS high-water mark, step."""
    reset, read = peak_rss_probe()
    # Framework baseline: imports done, runtime up, one trivial op run.
    if side.startswith("ours"):
        import flax  # noqa: F401
        import jax
        import optax  # noqa: F401
        jax.jit(lambda x: x + 1)(jax.numpy.ones(4)).block_until_ready()
    else:
        import peft  # noqa: F401
        import torch
        import transformers.models.t5.modeling_t5  # noqa: F401
        (torch.ones(4, requires_grad=True) + 1).sum().backward()
    import_rss, _ = read()
    batch = make_batch(work)
    if side.startswith("ours"):
        built = build_ours(work, side.split("/")[1], batch=batch)
        extra = xla_memory(built["compiled"])
    else:
        built = build_peft(work, side.split("/")[1], hf_base(work), batch)
        extra = {}
    built["run"]()
    built["run"]()
    before, _ = read()
    reset()
    for _ in range(3):
        built["run"]()
    _, peak = read()
    return dict(side=side, import_rss_mib=import_rss, steady_rss_mib=before, peak_rss_mib=peak,
                workload_mib=peak - import_rss, step_delta_mib=peak - before, xla=extra)


def run_probe(args: argparse.Namespace, side: str) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--_probe", side] + _work_argv(args)
    # Same glibc policy for every side: large blocks are mmapped and returned on free, so RSS
    # follows live memory and the high-water mark is the step's real peak, not allocator slack.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    for line in out.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"memory probe {side} failed:\n{out.stderr[-3000:]}")


# --------------------------------------------------------------------------------------- main


def interleave(sides: list[dict[str, Any]], repeats: int, steps: int) -> dict[str, list[float]]:
    """Seconds per step for each side, repeat by repeat; the order rotates every repeat."""
    times: dict[str, list[float]] = {s["name"]: [] for s in sides}
    for r in range(repeats):
        order = sides[r % len(sides):] + sides[:r % len(sides)]
        for side in order:
            time.sleep(0.2)  # untimed gap: the other runtime's worker threads stop spinning first
            start = time.perf_counter()
            for _ in range(steps):
                side["run"]()
            times[side["name"]].append((time.perf_counter() - start) / steps)
    return times


def _work_argv(args: argparse.Namespace) -> list[str]:
    out = []
    for k in ("preset", "batch", "src_len", "tgt_len", "prompt_len", "task_len", "rank", "num_tasks"):
        out += [f"--{k}", str(getattr(args, k))]
    return out + (["--shrink"] if args.shrink else [])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Workload()
    parser.add_argument("--quick", action="store_true", help="tiny config, under a minute")
    parser.add_argument("--preset", default=d.preset)
    parser.add_argument("--batch", type=int, default=d.batch)
    parser.add_argument("--src_len", type=int, default=d.src_len)
    parser.add_argument("--tgt_len", type=int, default=d.tgt_len)
    parser.add_argument("--prompt_len", type=int, default=d.prompt_len, help="total prompt positions")
    parser.add_argument("--task_len", type=int, default=d.task_len, help="talora m (within prompt_len)")
    parser.add_argument("--rank", type=int, default=d.rank)
    parser.add_argument("--num_tasks", type=int, default=d.num_tasks)
    parser.add_argument("--shrink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="steps per timed repeat")
    parser.add_argument("--ours", default="talora", help="our methods to time, e.g. talora,pt,mpt")
    parser.add_argument("--no_memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--json", default="", help="write results here (default bench/results/throughput*.json)")
    parser.add_argument("--_probe", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
        args.repeats, args.steps = min(args.repeats, 5), 2
    return args


def workload(args: argparse.Namespace) -> Workload:
    return Workload(args.preset, args.batch, args.src_len, args.tgt_len, args.prompt_len, args.task_len,
                    args.rank, args.num_tasks, shrink=args.shrink)


def main(argv=None) -> None:
    args = parse_args(argv)
    work = workload(args)
    if args._probe:
        print(json.dumps(probe(work, args._probe)))
        return

    import jax
    import numpy as np
    import torch
    from talora_jax.t5.weights import convert_state_dict

    from bench.flops import matmul_peak, torch_matmul_peak, train_step_flops

    cfg = t5_config(work)
    base = hf_base(work)
    hf_state = {k: v.detach().numpy() for k, v in base.state_dict().items()
                if not k.endswith("embed_tokens.weight") and k != "lm_head.weight"}
    backbone = convert_state_dict(cfg, hf_state)
    batch = make_batch(work)
    print(f"workload: {work}")
    print(f"machine: {os.cpu_count()} CPUs, jax {jax.__version__} ({jax.devices()[0].platform}), "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), float32 on both sides")

    ours_sides = [build_ours(work, m, backbone, batch) for m in args.ours.split(",")]
    peft_sides = {m: build_peft(work, m, copy.deepcopy(base), batch) for m in ("pt", "mpt")}
    for line in check_same_work(work, ours_sides[0], peft_sides, hf_state):
        print(line)
    sides = ours_sides + list(peft_sides.values())
    for s in sides:
        s["run"]()  # one more warm step each (allocator, caches)

    times = interleave(sides, args.repeats, args.steps)
    peak_jax, peak_torch = matmul_peak(), torch_matmul_peak()
    enc = work.prompt_len + work.src_len
    flops = train_step_flops(cfg, work.batch, enc, work.tgt_len)
    ours = ours_sides[0]
    results: dict[str, Any] = dict(workload=work.__dict__, repeats=args.repeats, steps=args.steps,
                                   times=times, flops=flops, xla_flops=xla_flops(ours["compiled"]),
                                   matmul_peak=dict(jax=peak_jax, torch=peak_torch), sides={})
    print(f"\n{'side':>12} {'median ms':>10} {'min ms':>8} {'tokens/s':>9} {'compile s':>9} "
          f"{'1st step s':>10} {'GFLOP/s':>8}")
    for s in sides:
        t = times[s["name"]]
        med = statistics.median(t)
        results["sides"][s["name"]] = dict(median_s=med, min_s=min(t), tokens_per_s=work.tokens_per_step / med,
                                           compile_s=s["compile_s"], first_step_s=s["first_step_s"],
                                           model_flops_per_s=flops["train"] / med)
        print(f"{s['name']:>12} {med * 1e3:10.1f} {min(t) * 1e3:8.1f} {work.tokens_per_step / med:9.0f} "
              f"{s['compile_s']:9.1f} {s['first_step_s']:10.2f} {flops['train'] / med / 1e9:8.1f}")

    def ratios(other: str, mine: str = ours["name"]) -> tuple[float, float]:
        per = [o / m for o, m in zip(times[other], times[mine])]  # tokens/s ratio = time ratio
        return statistics.median(per), min(per)

    peak = max(peak_jax["flops_per_s"], peak_torch["flops_per_s"])
    achieved = flops["train"] / statistics.median(times[ours["name"]])
    print(f"\nFLOP model (frozen backbone, matmuls): {flops['train'] / 1e9:.2f} GFLOP/step "
          f"(forward {flops['forward'] / 1e9:.2f}, train/forward {flops['train'] / flops['forward']:.2f}); "
          f"XLA cost analysis of our step: {results['xla_flops'] / 1e9:.2f} GFLOP")
    print(f"matmul peak (n=1024 f32): jax {peak_jax['flops_per_s'] / 1e9:.1f} GFLOP/s, "
          f"torch {peak_torch['flops_per_s'] / 1e9:.1f} GFLOP/s")
    util = {s: flops["train"] / statistics.median(times[s]) / peak for s in times}
    results["utilisation"] = util
    print("utilisation vs measured peak: " + ", ".join(f"{s} {u * 100:.1f}%" for s, u in util.items()))
    print(f"ours achieved {achieved / 1e9:.1f} GFLOP/s")
    for name in times:
        if name.startswith("peft/"):
            med, lo = ratios(name)
            results[f"ratio_vs_{name.replace('/', '_')}"] = dict(median=med, min=lo)
            print(f"ratio {ours['name']} / {name} tokens/s: median {med:.2f}  min {lo:.2f}")
    for s in ours_sides[1:]:
        m = s["name"].split("/")[1]
        med, lo = ratios(f"peft/{m}", s["name"])
        print(f"like-for-like {s['name']} / peft/{m}: median {med:.2f}  min {lo:.2f}")

    if not args.no_memory:
        print("\nmemory (fresh process per side; MiB):")
        results["memory"] = {}
        for side in [ours["name"], "peft/pt", "peft/mpt"]:
            mem = run_probe(args, side)
            results["memory"][side] = mem
            xla = mem["xla"]
            extra = (f"  XLA: args {xla['arguments_mib']:.0f} + temp {xla['temp_mib']:.0f} "
                     f"= {xla['peak_mib']:.0f}") if xla else ""
            print(f"{side:>12}: peak RSS {mem['peak_rss_mib']:.0f}, after imports {mem['import_rss_mib']:.0f}, "
                  f"workload {mem['workload_mib']:.0f}, step delta {mem['step_delta_mib']:.0f}{extra}")

    os.makedirs(RESULTS, exist_ok=True)
    path = args.json or os.path.join(RESULTS, "throughput_quick.json" if args.quick else "throughput.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1, default=float)
    print(f"wrote {os.path.relpath(path)}")
    print(f"ratio_vs_peft_pt={results['ratio_vs_peft_pt']['median']:.3f}")


if __name__ == "__main__":
    main()
