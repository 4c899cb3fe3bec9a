"""Longer windows (issue 14, "whole-title context"): step time and memory against 512 shots.

    python experiments/benchmarks/windows.py [--windows 512,1024,2048] [--shots 4096]

The MovieNet model (`experiments/configs/movienet.py`: 192 hidden x 3 layers, 384-d text)
at the same shots per step (``--shots``: 8 windows of 512, 4 of 1,024, 2 of 2,048), so a
row's ratio is the price of seeing more of the film at once. Per window: the median
train-step time (jitted, donated, Muon + AdamW), shots/s, its ratio to the first window
measured in this run, the model FLOPs per shot (``plan``), and the step's peak temporary
memory from XLA's own buffer assignment (``compiled.memory_analysis()``, which holds on
the CPU too; parameters and optimizer state are extra and the same for every row).
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from train_step import (
    MASK_RATIO,
    bench_config,
    bench_dims,
    jax_step_runner,
    make_batch,
    median_seconds,
)

from mediafm_jax import plan

MODEL = (192, 3, 6, 768)  # hidden, layers, heads, mlp: configs/movienet.py
FUSED = TITLE = 384


def measure(window: int, shots: int, steps: int) -> dict:
    """One window length: step seconds, shots/s, FLOPs per shot, peak temporary bytes."""
    hidden, layers, heads, mlp = MODEL
    batch = max(1, shots // window)
    cfg = bench_config(hidden, layers, heads, mlp, window, batch, steps + 3)
    dims = bench_dims(FUSED, TITLE)
    host = make_batch(batch, window, FUSED)
    host["title_embedding"] = np.resize(host["title_embedding"], (batch, TITLE))
    runner, mesh = jax_step_runner(cfg, dims, host, jax.devices()[0])
    with jax.set_mesh(mesh):
        memory = runner.memory_analysis()
        seconds = median_seconds(runner, steps, warmup=2)
    return {
        "window": window,
        "batch": batch,
        "seconds": seconds,
        "shots_per_s": batch * window / seconds,
        "gflop_per_shot": plan.train_flops_per_shot(hidden, layers, mlp, window, FUSED, MASK_RATIO)
        / 1e9,
        "temp_mb": getattr(memory, "temp_size_in_bytes", float("nan")) / 2**20,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", default="512,1024,2048")
    parser.add_argument("--shots", type=int, default=4096, help="shots per step, every row")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    windows = [int(w) for w in args.windows.split(",")]
    rows = [measure(w, args.shots, args.steps) for w in windows]
    base = rows[0]
    print(f"\n{jax.devices()[0].device_kind}; {args.shots} shots per step; medians of {args.steps}")
    print("| window | batch | step ms | shots/s | speed vs first | GFLOP/shot | step temp MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['window']} | {r['batch']} | {1e3 * r['seconds']:.0f} | {r['shots_per_s']:,.0f}"
            f" | {base['seconds'] / r['seconds']:.2f}x | {r['gflop_per_shot']:.4f}"
            f" | {r['temp_mb']:,.0f} |"
        )


if __name__ == "__main__":
    main()
