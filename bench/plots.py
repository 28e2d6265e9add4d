"""PNG figures for docs/BENCHMARKS.md from the JSON the benchmark scripts write to bench/results/.

    python bench/plots.py            # writes docs/img/bench_*.png for every results file present
"""

from __future__ import annotations

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
OUT = os.path.join(os.path.dirname(HERE), "docs", "img")


def _load(name: str):
    path = os.path.join(RESULTS, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def main() -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(OUT, exist_ok=True)
    written = []

    tp = _load("throughput.json")
    if tp:
        names = list(tp["sides"])
        vals = [tp["sides"][n]["tokens_per_s"] for n in names]
        fig, ax = plt.subplots(figsize=(6, 3.2))
        bars = ax.bar(names, vals, color=["tab:blue" if n.startswith("ours") else "tab:orange" for n in names])
        ax.bar_label(bars, fmt="%.0f")
        w = tp["workload"]
        ax.set_ylabel("tokens/s (median)")
        ax.set_title(f"train step, {w['preset']} b={w['batch']} src={w['src_len']} tgt={w['tgt_len']} "
                     f"prompt={w['prompt_len']}, CPU f32", fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(OUT, "bench_throughput.png"), dpi=120)
        written.append("bench_throughput.png")

    ev = _load("eval_speed.json")
    if ev:
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
        for ax, mode in zip(axes, ("generate", "classify")):
            rows = ev["modes"][mode]
            names = list(rows)
            bars = ax.bar(names, [rows[n]["examples_per_s"] for n in names],
                          color=["tab:blue" if n.startswith("ours") else "tab:orange" for n in names])
            ax.bar_label(bars, fmt="%.1f")
            ax.set_title({"generate": "greedy generation", "classify": "rank classification"}[mode], fontsize=9)
            ax.set_ylabel("examples/s (median)")
            ax.tick_params(axis="x", labelsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(OUT, "bench_eval_speed.png"), dpi=120)
        written.append("bench_eval_speed.png")

    sc = _load("scaling.json")
    if sc:
        for key, label in (("batch", "batch size"), ("seq", "input length (tokens, + prompt)")):
            rows = sc.get(key)
            if not rows:
                continue
            fig, ax = plt.subplots(figsize=(5, 3.2))
            xs = [r["value"] for r in rows]
            for side in rows[0]["median_s"]:
                ax.plot(xs, [r["median_s"][side] * 1e3 for r in rows], "o-", label=side)
            ax.set_xlabel(label)
            ax.set_ylabel("ms / train step (median)")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.legend()
            ax.set_title(f"cost curve, {sc['workload']['preset']}, CPU f32", fontsize=9)
            fig.tight_layout()
            fig.savefig(os.path.join(OUT, f"bench_scaling_{key}.png"), dpi=120)
            written.append(f"bench_scaling_{key}.png")
        rows = sc.get("devices")
        if rows:
            fig, ax = plt.subplots(figsize=(5, 3.2))
            xs = [r["devices"] for r in rows]
            ax.plot(xs, [r["median_s"] * 1e3 for r in rows], "o-", label="ours/talora, same global batch")
            ax.set_xlabel("simulated devices (data parallel)")
            ax.set_ylabel("ms / train step (median)")
            ax.set_xticks(xs)
            ax.set_ylim(bottom=0)
            ax.legend()
            ax.set_title("sharded step overhead (devices share the same 2 cores)", fontsize=9)
            fig.tight_layout()
            fig.savefig(os.path.join(OUT, "bench_devices.png"), dpi=120)
            written.append("bench_devices.png")
    for name in written:
        print(os.path.relpath(os.path.join(OUT, name)))


if __name__ == "__main__":
    main()
