"""One prepared GPU run: correctness vs CPU fp32, then speed and MFU of the base config.

    python experiments/benchmarks/gpu_check.py [--batch 32] [--steps 10] [--out DIR]
    python experiments/benchmarks/gpu_check.py --smoke     # tiny sizes, runs on a CPU too

1. Correctness: the same initial state and batches, a few steps of the base model in
   bf16 with cuDNN attention on the accelerator vs fp32 (XLA attention) on the CPU; the
   losses must agree within bf16 tolerance (2e-2 relative).
2. Speed: step time, shots/s and MFU of the base config (bf16, cuDNN attention) against
   the card's bf16 matmul peak measured in the same run. Target: 45% MFU or more.
Writes ``gpu_check.json`` into --out (default $OUT or .).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np
from train_step import make_batch, matmul_peak, model_flops  # sibling benchmark

from mediafm_jax import config as config_lib
from mediafm_jax import presets, sharding, train
from mediafm_jax.model import DataDims

FUSED, TITLE = 2304, 768
DIMS = DataDims(FUSED, TITLE, ((0, 768), (768, 1536), (1536, 2304)))


def losses(cfg, device, batches) -> list[float]:
    mesh = sharding.make_mesh(cfg.mesh, [device])
    setup = train.TrainSetup.create(cfg, DIMS, mesh)
    state = setup.init_state(0)
    step = setup.jit_train_step(batches[0])
    out = []
    with jax.set_mesh(mesh):
        for i, host in enumerate(batches):
            state, metrics = step(state, sharding.global_batch(host, mesh), train.step_key(0, i))
            out.append(float(metrics["loss"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    accelerator = jax.devices()[0]
    cpu = jax.devices("cpu")[0]
    base = presets.base()
    overrides = ["optim.warmup_steps=1", "train.steps=100"]
    if args.smoke:
        overrides += [
            "model.hidden_size=64",
            "model.num_layers=2",
            "model.num_heads=4",
            "model.mlp_size=128",
            "model.max_shots=64",
        ]
        args.batch = min(args.batch, 4)
    base = config_lib.apply_overrides(base, overrides)
    w = base.model.max_shots
    fast = config_lib.apply_overrides(
        base,
        ["model.compute_dtype=bfloat16", "optim.muon_ns_dtype=bfloat16"]
        + (["model.attention_impl=cudnn"] if accelerator.platform == "gpu" else []),
    )
    exact = config_lib.apply_overrides(
        base, ["model.compute_dtype=float32", "optim.muon_ns_dtype=float32"]
    )
    report: dict = {"device": str(accelerator.device_kind), "platform": accelerator.platform}

    small = [make_batch(2, w, FUSED, seed=i) for i in range(3)]
    for b in small:
        b["title_embedding"] = np.resize(b["title_embedding"], (2, TITLE)).astype(np.float16)
    with jax.default_matmul_precision("highest"):
        reference = losses(exact, cpu, small)
    candidate = losses(fast, accelerator, small)
    rel = [abs(a - b) / abs(b) for a, b in zip(candidate, reference, strict=True)]
    report["loss_cpu_fp32"], report["loss_accel_bf16"], report["max_rel_diff"] = (
        reference,
        candidate,
        max(rel),
    )
    print(
        f"1. loss, CPU fp32: {np.round(reference, 5)}  {accelerator.platform} bf16: {np.round(candidate, 5)}"
    )
    print(
        f"   max relative difference {max(rel):.2e} ({'OK' if max(rel) < 2e-2 else 'TOO LARGE'}, bound 2e-2)"
    )

    cfg = config_lib.apply_overrides(fast, [f"train.batch_size={args.batch}"])
    mesh = sharding.make_mesh(cfg.mesh, [accelerator])
    setup = train.TrainSetup.create(cfg, DIMS, mesh)
    state = setup.init_state(0)
    host = make_batch(args.batch, w, FUSED)
    host["title_embedding"] = np.resize(host["title_embedding"], (args.batch, TITLE)).astype(
        np.float16
    )
    step = setup.jit_train_step(host)
    batch = sharding.global_batch(host, mesh)
    times = []
    with jax.set_mesh(mesh):
        for i in range(args.steps + 2):
            t0 = time.perf_counter()
            state, metrics = step(state, batch, train.step_key(0, i))
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - t0)
    seconds = float(np.median(times[2:]))
    m = cfg.model
    flops = model_flops(m.hidden_size, m.num_layers, m.mlp_size, w, args.batch, FUSED)
    peak = matmul_peak(n=1024 if args.smoke else 8192, dtype="bfloat16", device=accelerator)
    report.update(
        step_ms=seconds * 1e3,
        shots_per_s=args.batch * w / seconds,
        bf16_peak_tflops=peak / 1e12,
        mfu=flops / seconds / peak,
        batch=args.batch,
        window=w,
    )
    print(
        f"2. {report['device']}: {seconds * 1e3:.1f} ms/step, {report['shots_per_s']:,.0f} shots/s, "
        f"MFU {report['mfu']:.1%} of a measured {peak / 1e12:.0f} TFLOP/s bf16 peak (target 45%)"
    )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
