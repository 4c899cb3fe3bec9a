"""One prepared GPU run: correctness vs CPU fp32, speed and MFU, and PyTorch on the same card.

    python experiments/benchmarks/gpu_check.py [--batches 32,64,128] [--steps 10] [--out DIR]
    python experiments/benchmarks/gpu_check.py --smoke     # tiny sizes, runs on a CPU too

Set-up on a GPU image: it must have JAX with its CUDA plugin and a Flax that imports under
it -- JAX 0.11.x needs Flax >= 0.12.10 (0.12.8 does not import), so on such an image
``pip install --no-deps -e . 'flax>=0.12.10'`` and keep the image's jax/jaxlib; PyTorch
(CUDA build) for the comparators. The script says so and exits if Flax is too old.

0. PyTorch first, each row in its own process (before JAX takes the card's memory): the
   same model and optimizer (``torch_model.py``: fused qkv, SDPA, ``torch.optim.Muon``,
   bf16 autocast), eager, ``torch.compile`` (default) and ``torch.compile``
   (``max-autotune-no-cudagraphs``); training step and embedding (inference) throughput.
1. Correctness: the same initial state and batches, a few steps of the base model in
   bf16 with cuDNN attention on the accelerator vs fp32 (XLA attention) on the CPU; the
   losses must agree within bf16 tolerance (2e-2 relative).
2. Speed: step time, shots/s and MFU of the base config (bf16) with cuDNN attention at
   every ``--batches`` size, and at the first size: XLA's attention, AdamW only, Muon with
   one NS per matrix (``optim.muon_stack=off``) vs stacked (the accelerator default), and
   Polar Express coefficients; the optimizer update alone (Muon's share of the step);
   embedding throughput (``mediafm embed``'s forward). MFU against the card's bf16 matmul
   peak measured in the same run. Targets: >= 50% MFU at batch 32, Muon <= 8% of the
   step, >= 1.2x ``torch.compile``.
0b. (before 1, in its own process) ``mediafm extract``'s CLIP ViT-B/32 and wav2vec2-base
   encoders in fp16 on the card: frames/s and x real time per stage (``hub_encoders.py``).
Each part is independent (a failure is recorded and the next part runs). Writes
``gpu_check.json`` into --out (default $OUT or .) after every part.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import jax
import numpy as np
from train_step import make_batch, matmul_peak, median_seconds, model_flops, step_seconds

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


def check_flax() -> None:
    """JAX 0.11 needs Flax >= 0.12.10: say so in one line instead of an import traceback."""
    from importlib.metadata import version

    jax_v = tuple(int(x) for x in jax.__version__.split(".")[:2])
    flax_v = tuple(int(x) for x in version("flax").split(".")[:3])
    if jax_v >= (0, 11) and flax_v < (0, 12, 10):
        sys.exit(
            f"gpu_check: jax {jax.__version__} needs flax >= 0.12.10, found {version('flax')}: "
            "pip install 'flax>=0.12.10' (keep this image's jax)"
        )


def torch_rows(spec, host: dict, steps: int, modes: list[str]) -> dict[str, dict]:
    """PyTorch rows, each in a fresh process (``vs_torch.py``'s worker), before JAX starts."""
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        batch_file = os.path.join(tmp, "batch.npz")
        np.savez(batch_file, **host)
        for task in ("step", "embed"):
            for impl in modes:
                cmd = [sys.executable, str(Path(__file__).with_name("vs_torch.py")), "--worker"]
                cmd += [impl, "--task", task, "--spec", ",".join(map(str, spec))]
                cmd += ["--batch-file", batch_file, "--steps", str(steps)]
                run = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parent)
                key = f"{impl} {task}"
                if run.returncode:
                    tail = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
                    out[key] = {"error": tail[:500]}
                    print(f"   {key}: FAILED: {tail[:200]}")
                else:
                    times = json.loads(run.stdout.strip().splitlines()[-1])["times"]
                    out[key] = {"seconds": float(np.median(times))}
                    print(f"   {key:<28}{out[key]['seconds'] * 1e3:8.1f} ms")
    return out


def encoder_rows(smoke: bool) -> dict:
    """``mediafm extract``'s CLIP ViT-B/32 + wav2vec2-base on this card (``hub_encoders.py``,
    fp16 on CUDA), in a fresh process before JAX takes the card's memory."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(Path(__file__).with_name("hub_encoders.py"))]
        cmd += ["--json", os.path.join(tmp, "rows.json")] + (
            ["--smoke", "--shots", "8"] if smoke else []
        )
        run = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parent)
        print("\n".join("   " + line for line in run.stdout.strip().splitlines()[-6:]))
        if run.returncode:
            raise RuntimeError((run.stderr.strip().splitlines() or ["(no output)"])[-1][:500])
        return json.loads(Path(tmp, "rows.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="32,64,128", help="batch sizes for the MFU table")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    check_flax()
    batches = [int(b) for b in args.batches.split(",")]
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
        batches = [2]  # the correctness rows' batch: with a compilation cache, one compile
    base = config_lib.apply_overrides(base, overrides)
    w, m = base.model.max_shots, base.model
    first = batches[0]
    report: dict = {"jax": jax.__version__, "batches": batches, "window": w, "errors": {}}
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

    spec = (m.hidden_size, m.num_layers, m.num_heads, m.mlp_size, w, first, FUSED, TITLE)
    if not args.no_torch:
        print(f"0. PyTorch, batch {first} x {w}, one process per row:")
        modes = ["torch", "torch-compile", "torch-compile-max"]
        part(
            "torch",
            lambda: report.update(torch=torch_rows(spec, host_batch(first, w), args.steps, modes)),
        )

    print("0b. extract encoders (CLIP ViT-B/32 frames, wav2vec2-base audio), own process:")
    part("extract_encoders", lambda: report.update(extract_encoders=encoder_rows(args.smoke)))

    accelerator = jax.devices()[0]
    cpu = jax.devices("cpu")[0]
    on_gpu = accelerator.platform == "gpu"
    report.update(device=str(accelerator.device_kind), platform=accelerator.platform)
    fast = config_lib.apply_overrides(
        base,
        ["model.compute_dtype=bfloat16", "optim.muon_ns_dtype=bfloat16"]
        + (["model.attention_impl=cudnn"] if on_gpu else []),
    )
    exact = config_lib.apply_overrides(
        base, ["model.compute_dtype=float32", "optim.muon_ns_dtype=float32"]
    )

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

    peak_holder: list[float] = []

    def peak() -> float:
        if not peak_holder:
            n = 1024 if args.smoke else 8192
            peak_holder.append(matmul_peak(n=n, dtype="bfloat16", device=accelerator))
            report["bf16_peak_tflops"] = peak_holder[0] / 1e12
        return peak_holder[0]

    def record(name: str, seconds: float, batch: int, task: str = "step") -> None:
        flops = model_flops(m.hidden_size, m.num_layers, m.mlp_size, w, batch, FUSED)
        flops /= 3 if task == "embed" else 1  # forward only
        report[name] = {
            "batch": batch,
            "step_ms": seconds * 1e3,
            "shots_per_s": batch * w / seconds,
            "mfu": flops / seconds / peak(),
        }
        print(
            f"   {name:<34}{seconds * 1e3:8.1f} ms {batch * w / seconds:>12,.0f} "
            f"shots/s   MFU {flops / seconds / peak():.1%}"
        )

    def speed(name: str, batch: int, extra: list[str], trace_only: bool = False) -> None:
        cfg = config_lib.apply_overrides(fast, [f"train.batch_size={batch}", *extra])
        host = host_batch(batch, w)
        if trace_only:  # --smoke on a busy CPU: check the variant builds and lowers, untimed
            mesh = sharding.make_mesh(cfg.mesh, [accelerator])
            setup = train.TrainSetup.create(cfg, DIMS, mesh)
            with jax.set_mesh(mesh):
                batch_arrays = sharding.global_batch(host, mesh)
                setup.jit_train_step(host).lower(
                    setup.abstract_state, batch_arrays, train.step_key(0, 0)
                )
            report[name] = {"lowered": True}
            print(f"   {name:<34}lowered (--smoke: not timed)")
            return
        record(name, step_seconds(cfg, DIMS, host, args.steps, accelerator), batch)

    def optimizer_alone() -> None:
        cfg = config_lib.apply_overrides(fast, [f"train.batch_size={first}"])
        mesh = sharding.make_mesh(cfg.mesh, [accelerator])
        setup = train.TrainSetup.create(cfg, DIMS, mesh)
        state = setup.init_state(0)
        with jax.set_mesh(mesh):
            update = jax.jit(setup.optimizer.update)
            args_ = (state["params"], state["opt_state"], state["params"])
            seconds = median_seconds(lambda: jax.block_until_ready(update(*args_)), args.steps)
        step = report.get(f"mediafm-jax b{first}", {}).get("step_ms")
        report["optimizer_update_ms"] = seconds * 1e3
        share = f", {seconds * 1e3 / step:.1%} of the step" if step else ""
        print(f"   optimizer update alone (Muon + AdamW): {seconds * 1e3:.1f} ms{share}")

    def embedding() -> None:
        import jax.numpy as jnp
        from flax import nnx

        from mediafm_jax.fusion import fuse
        from mediafm_jax.model import NUM_SPECIAL, Encoder

        graphdef, params = nnx.split(Encoder(fast.model, DIMS, nnx.Rngs(0)), nnx.Param)
        params = jax.device_put(params, accelerator)

        @jax.jit
        def encode(params, shots, present, valid, title):
            model = nnx.merge(graphdef, params)
            hidden = model(fuse(shots, DIMS.modalities), valid, title)
            return hidden[:, NUM_SPECIAL:].astype(jnp.float32), hidden[:, 0].astype(jnp.float32)

        host = host_batch(first, w)
        arrays = [host[k] for k in ("shots", "present", "valid", "title_embedding")]

        def one_pass() -> None:
            out = encode(params, *[jax.device_put(a, accelerator) for a in arrays])
            np.asarray(out[0]), np.asarray(out[1])  # embeddings come back to the host

        record("mediafm-jax embed", median_seconds(one_pass, args.steps), first, "embed")

    part("correctness", correctness)
    print(f"2. {report['device']}, base model, {w}-shot windows, bf16:")
    for batch in batches:
        part(f"speed_b{batch}", lambda b=batch: speed(f"mediafm-jax b{b}", b, []))
    variants = {
        "XLA attention": ["model.attention_impl=xla"] if on_gpu else [],
        "AdamW only": ["optim.kind=adamw"],
        "Muon, one NS per matrix": ["optim.muon_stack=off"],
        "Muon, stacked NS": ["optim.muon_stack=on"],
        "Muon, Polar Express": ["optim.muon_ns_coeffs=polar_express"],
    }
    for label, extra in variants.items():
        trace_only = args.smoke  # --smoke: every variant builds and lowers; none timed
        part(
            label,
            lambda label=label, extra=extra, trace_only=trace_only: speed(
                f"{label} b{first}", first, extra, trace_only
            ),
        )
    part("optimizer", optimizer_alone)
    part("embed", embedding)
    print(f"   measured bf16 matmul peak: {peak() / 1e12:.3g} TFLOP/s")
    ours = report.get(f"mediafm-jax b{first}", {}).get("step_ms")
    adamw = report.get(f"AdamW only b{first}", {}).get("step_ms")
    if ours and adamw:
        report["muon_share"] = 1 - adamw / ours
        print(f"   Muon's share of the step (1 - AdamW-only / Muon): {report['muon_share']:.1%}")
    for key, row in report.get("torch", {}).items():
        if "seconds" not in row:
            continue
        impl, task = key.split()
        mine = report.get(f"mediafm-jax b{first}" if task == "step" else "mediafm-jax embed")
        if mine:
            row["ours_speedup"] = row["seconds"] * 1e3 / mine["step_ms"]
            print(f"3. ours vs {impl} ({task}): {row['ours_speedup']:.2f}x")
    save()


if __name__ == "__main__":
    main()
