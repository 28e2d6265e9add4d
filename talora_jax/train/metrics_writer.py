"""Where metrics go: ``metrics.jsonl`` (one JSON object per write), TensorBoard, and a progress line.

Only process 0 writes; other hosts get disabled writers so the loop needs no
``if process_index == 0`` around every call.
"""

from __future__ import annotations

import json
import os
import time
from typing import Mapping


class MetricWriter:
    """Appends scalars to ``workdir/metrics.jsonl`` and to TensorBoard event files."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        from flax.metrics import tensorboard  # TF's event writer; tensorboard is pinned in requirements
        self._tb = tensorboard.SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        self._jsonl.write(json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.scalar(key, float(value), int(step))
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class ProgressLine:
    """``step 120/1000 (12%) | loss 2.31 | ... | ETA 1m45s``: one line per log step on stdout."""

    def __init__(self, total_steps: int, start_step: int = 0, enabled: bool = True):
        self.total, self.start, self.enabled = total_steps, start_step, enabled
        self.t0 = time.perf_counter()

    def update(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        done = step - self.start
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / max(done, 1) * (self.total - step)
        parts = [f"step {step}/{self.total} ({100 * step / max(self.total, 1):.0f}%)",
                 f"loss {metrics.get('loss', float('nan')):.4f}",
                 f"acc {metrics.get('token_accuracy', float('nan')):.3f}"]
        for key in ("lr_fast", "lr_slow"):
            if key in metrics:
                parts.append(f"{key} {metrics[key]:.3g}")
        if "tokens_per_s" in metrics:
            parts.append(f"{metrics['tokens_per_s']:,.0f} tok/s")
            parts.append(f"{metrics['step_time_s'] * 1e3:.0f} ms/step")
        parts.append(f"ETA {_duration(eta)}")
        print(" | ".join(parts), flush=True)
