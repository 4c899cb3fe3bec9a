"""One prepared GPU run: correctness vs CPU fp32, speed and MFU, and PyTorch on the same card.

    python experiments/benchmarks/gpu_check.py [--batch 32] [--steps 10] [--out DIR]
    python experiments/benchmarks/gpu_check.py --smoke     # tiny sizes, runs on a CPU too

1. Correctness: the same initial state and batches, a few steps of the base model in
   bf16 with cuDNN attention on the accelerator vs fp32 (XLA attention) on the CPU; the
   losses must agree within bf16 tolerance (2e-2 relative).
2. Speed: step time, shots/s and MFU of the base config (bf16) with cuDNN attention and
   with XLA's attention, against the card's bf16 matmul peak measured in the same run.
   Target: 45% MFU or more.
3. Baseline: the same model and optimizer in PyTorch on the same card (bf16 autocast,
   ``scaled_dot_product_attention``, ``torch.optim.Muon``, eager), same batch.
Each part is independent (a failure is recorded and the next part runs). Writes
``gpu_check.json`` into --out (default $OUT or .) after every part.
"""

from __future__ import annotations

import argparse
import json
import os
import traceback

import jax
import numpy as np
from train_step import (  # sibling benchmark
    make_batch,
    matmul_peak,
    model_flops,
    step_seconds,
    time_torch,
)

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


def host_batch(batch: int, window: int, seed: int = 0) -> dict:
    host = make_batch(batch, window, FUSED, seed=seed)
    host["title_embedding"] = np.resize(host["title_embedding"], (batch, TITLE)).astype(np.float16)
    return host


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    accelerator = jax.devices()[0]
    cpu = jax.devices("cpu")[0]
    on_gpu = accelerator.platform == "gpu"
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
        + (["model.attention_impl=cudnn"] if on_gpu else []),
    )
    exact = config_lib.apply_overrides(
        base, ["model.compute_dtype=float32", "optim.muon_ns_dtype=float32"]
    )
    report: dict = {
        "device": str(accelerator.device_kind),
        "platform": accelerator.platform,
        "jax": jax.__version__,
        "errors": {},
    }
    os.makedirs(args.out, exist_ok=True)

    def save() -> None:
        with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
            json.dump(report, f, indent=1)

    def part(name: str, fn) -> None:
        try:
            fn()
        except Exception as error:  # a benchmark records the failure and goes on
            traceback.print_exc()
            report["errors"][name] = f"{type(error).__name__}: {error}"[:2000]
            print(f"{name}: FAILED ({type(error).__name__})")
        save()

    def correctness() -> None:
        small = [host_batch(2, w, seed=i) for i in range(3)]
        with jax.default_matmul_precision("highest"):
            reference = losses(exact, cpu, small)
        candidate = losses(fast, accelerator, small)
        rel = [abs(a - b) / abs(b) for a, b in zip(candidate, reference, strict=True)]
        report.update(loss_cpu_fp32=reference, loss_accel_bf16=candidate, max_rel_diff=max(rel))
        print(
            f"1. loss, CPU fp32: {np.round(reference, 5)}  "
            f"{accelerator.platform} bf16: {np.round(candidate, 5)}\n"
            f"   max relative difference {max(rel):.2e} "
            f"({'OK' if max(rel) < 2e-2 else 'TOO LARGE'}, bound 2e-2)"
        )

    m = fast.model
    flops = model_flops(m.hidden_size, m.num_layers, m.mlp_size, w, args.batch, FUSED)
    peak_holder: list[float] = []

    def peak() -> float:
        if not peak_holder:
            n = 1024 if args.smoke else 8192
            peak_holder.append(matmul_peak(n=n, dtype="bfloat16", device=accelerator))
            report["bf16_peak_tflops"] = peak_holder[0] / 1e12
        return peak_holder[0]

    def record(name: str, seconds: float) -> None:
        report[name] = {
            "step_ms": seconds * 1e3,
            "shots_per_s": args.batch * w / seconds,
            "mfu": flops / seconds / peak(),
        }
        print(
            f"   {name:<22}{seconds * 1e3:8.1f} ms/step {args.batch * w / seconds:>12,.0f} "
            f"shots/s   MFU {flops / seconds / peak():.1%}"
        )

    def speed(impl: str) -> None:
        cfg = config_lib.apply_overrides(
            fast, [f"train.batch_size={args.batch}", f"model.attention_impl={impl}"]
        )
        host = host_batch(args.batch, w)
        record(f"mediafm-jax ({impl})", step_seconds(cfg, DIMS, host, args.steps, accelerator))

    def torch_baseline() -> None:
        spec = (m.hidden_size, m.num_layers, m.num_heads, m.mlp_size, w, args.batch, FUSED)
        device = "cuda" if on_gpu else "cpu"
        record("pytorch (eager, SDPA)", time_torch(spec, args.steps, device, TITLE))

    part("correctness", correctness)
    report.update(batch=args.batch, window=w, model_tflop_per_step=flops / 1e12)
    print(f"2. {report['device']}, base model, batch {args.batch} x {w} shots, bf16:")
    for impl in ["cudnn", "xla"] if on_gpu else ["xla"]:
        part(f"speed_{impl}", lambda impl=impl: speed(impl))
    if not args.no_torch:
        part("torch", torch_baseline)
    print(f"   measured bf16 matmul peak: {peak() / 1e12:.3g} TFLOP/s; MFU target 45%")
    if "pytorch (eager, SDPA)" in report:
        ours = min(
            report[k]["step_ms"] for k in report if isinstance(report[k], dict) and "jax" in k
        )
        report["speedup_vs_torch"] = report["pytorch (eager, SDPA)"]["step_ms"] / ours
        print(f"3. ours vs PyTorch on the same card: {report['speedup_vs_torch']:.2f}x")
    save()


if __name__ == "__main__":
    main()
