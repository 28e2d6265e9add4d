"""Cost curves: train-step time against batch size and input length (ours and PEFT prompt tuning),
and our sharded step over 1, 2, 4 and 8 simulated devices.

    python bench/scaling.py --what batch,seq,devices
    python bench/scaling.py --quick

``devices`` runs in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``:
the same global batch, data-parallel over a ``('data', 'fsdp', 'model')`` mesh of n
devices (``talora_jax.parallel``), the step built exactly as the trainer builds it.
On a CPU host the simulated devices share the same cores, so this measures the
overhead of partitioning and the gradient all-reduce, not a speed-up.
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench.common import QUICK, Workload, make_batch, t5_config  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _time(fn, repeats: int, steps: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        out.append((time.perf_counter() - t) / steps)
    return out


def sweep(base_work: Workload, field: str, values: list[int], repeats: int, steps: int, peft: bool) -> list[dict]:
    import dataclasses
    from talora_jax.t5.weights import convert_state_dict
    from bench.throughput import build_ours, build_peft, hf_base
    from bench.flops import train_step_flops

    rows = []
    for v in values:
        work = dataclasses.replace(base_work, **{field: v})
        base = hf_base(work)
        state = {k: t.detach().numpy() for k, t in base.state_dict().items()
                 if not k.endswith("embed_tokens.weight") and k != "lm_head.weight"}
        batch = make_batch(work)
        sides = [build_ours(work, "talora", convert_state_dict(t5_config(work), state), batch)]
        if peft:
            sides.append(build_peft(work, "pt", copy.deepcopy(base), batch))
        for s in sides:
            s["run"]()
        times = {s["name"]: [] for s in sides}
        for r in range(repeats):  # interleaved
            for s in sides[r % len(sides):] + sides[:r % len(sides)]:
                times[s["name"]] += _time(s["run"], 1, steps)
        flops = train_step_flops(t5_config(work), work.batch, work.prompt_len + work.src_len, work.tgt_len)
        row = dict(field=field, value=v, tokens=work.tokens_per_step, model_flops=flops["train"],
                   compile_s=sides[0]["compile_s"],
                   median_s={k: statistics.median(t) for k, t in times.items()},
                   min_s={k: min(t) for k, t in times.items()})
        rows.append(row)
        print(f"{field}={v:>4}: " + "  ".join(f"{k} {m * 1e3:8.1f} ms ({work.tokens_per_step / m:7.0f} tok/s)"
                                              for k, m in row["median_s"].items())
              + f"  ours compile {row['compile_s']:.1f}s", flush=True)
    return rows


def devices_child(work: Workload, counts: list[int], repeats: int, steps: int) -> list[dict]:
    import jax
    from bench.throughput import build_ours
    rows = []
    for n in counts:
        side = build_ours(work, "talora", batch=make_batch(work), num_devices=n)
        side["run"]()
        hlo = side["compiled"].as_text()
        times = _time(side["run"], repeats, steps)
        rows.append(dict(devices=n, median_s=statistics.median(times), min_s=min(times),
                         compile_s=side["compile_s"], all_reduces=hlo.count("all-reduce("),
                         platform=jax.devices()[0].platform))
        print(f"devices={n}: {rows[-1]['median_s'] * 1e3:8.1f} ms/step (min {rows[-1]['min_s'] * 1e3:.1f}), "
              f"{rows[-1]['all_reduces']} all-reduce ops, compile {side['compile_s']:.1f}s", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--what", default="batch,seq,devices")
    parser.add_argument("--preset", default="t5-small")
    parser.add_argument("--batches", default="1,2,4,8,16")
    parser.add_argument("--src_lens", default="32,64,128,256")
    parser.add_argument("--device_counts", default="1,2,4,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--no_peft", action="store_true")
    parser.add_argument("--_devices_child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    work = Workload(args.preset)
    if args.quick:
        work = Workload(**QUICK)
        args.batches, args.src_lens = "1,4,16", "16,32,64"
    if args._devices_child:
        print(json.dumps(devices_child(Workload(**json.loads(os.environ["BENCH_WORK"])),
                                       [int(x) for x in args.device_counts.split(",")], args.repeats,
                                       args.steps)))
        return

    what = args.what.split(",")
    out = dict(workload=work.__dict__)
    path = os.path.join(RESULTS, "scaling_quick.json" if args.quick else "scaling.json")
    if os.path.exists(path):
        with open(path) as f:
            out = {**json.load(f), **out}
    if "batch" in what:
        out["batch"] = sweep(work, "batch", [int(x) for x in args.batches.split(",")], args.repeats, args.steps,
                             not args.no_peft)
    if "seq" in what:
        out["seq"] = sweep(work, "src_len", [int(x) for x in args.src_lens.split(",")], args.repeats, args.steps,
                           not args.no_peft)
    if "devices" in what:
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
                   BENCH_WORK=json.dumps(work.__dict__))
        cmd = [sys.executable, os.path.abspath(__file__), "--_devices_child", "--device_counts",
               args.device_counts, "--repeats", str(args.repeats), "--steps", str(max(args.steps, 2))]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("devices=")]
        print("\n".join(lines))
        if proc.returncode:
            raise RuntimeError(proc.stderr[-3000:])
        out["devices"] = json.loads(proc.stdout.splitlines()[-1])
    os.makedirs(RESULTS, exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
