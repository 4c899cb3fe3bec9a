"""Ours vs PyTorch, fairly: one process per measurement, interleaved rounds, same batch.

    pip install -e '.[bench]'    # torch==2.13.0, the CPU wheel
    python experiments/benchmarks/vs_torch.py [--shapes small,base_cpu,demo] [--rounds 3]
        [--steps 5] [--impls jax,jax-plain,torch,torch-compile] [--embed] [--out DIR]
        [--require-quiet]

Why this shape of benchmark: timing PyTorch in a process where JAX's CPU thread pool is
alive (or the other way round) swung the result by 5-20x between machines, and the
development CPU is shared with other jobs. So:

- every (implementation, shape, task) runs in its *own* subprocess that imports only its
  framework, warms up (compiles), then times ``--steps`` steps;
- rounds are interleaved (jax, torch, jax, torch, ...), so a burst of load hits every
  implementation alike; the table shows the median over rounds and the min/max, and the
  ratio's min/max over *same-round* pairs;
- every process reads the same batch from one ``.npz``;
- the load average is printed before, at every round and after, with a warning when the
  1-minute load went above the core count (``--require-quiet`` refuses to start then):
  under load PyTorch's OpenMP threads degrade more than XLA's pool, which flatters us;
- a matmul peak (fp32 2048^3, JAX and torch) is measured in every round; MFU = model FLOPs
  (6 N tokens + attention, forward + backward; optimizer not counted) / the round's
  median JAX peak.

Implementations (``--impls``): ``jax`` (ours: the jitted, donated ``train_step``, Muon +
AdamW), ``jax-adamw`` (ours, AdamW only), ``jax-plain`` (a hand-written JAX step, fused qkv,
einsum attention, AdamW only: what the framework costs), ``torch`` (eager,
``torch_model.py``), ``torch-compile`` (same, forward under ``torch.compile``). ``--embed``
adds inference throughput (shots/s) of the same model: ours (``mediafm embed``'s forward)
vs PyTorch eager. ``--src LABEL=PATH`` + an impl ``jax@LABEL`` runs ours from another
checkout (A/B of a code change in the same run); ``--env LABEL:KEY=VALUE`` sets an
environment variable for ``@LABEL`` workers (A/B of a setting, e.g.
``--env one:GLIBC_TUNABLES=glibc.malloc.arena_max=1 --impls jax,jax@one``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

# name: (hidden, layers, heads, mlp, window, batch, fused, title)
SHAPES = {
    "small": (128, 4, 4, 512, 256, 16, 384, 128),
    "base_cpu": (384, 6, 6, 1536, 512, 4, 2304, 128),
    "demo": (192, 3, 6, 768, 256, 16, 384, 128),  # presets.demo() on the demo's data
}
STEP_IMPLS = ("jax", "jax-adamw", "jax-plain", "torch", "torch-compile", "torch-compile-max")
EMBED_IMPLS = ("jax", "torch", "torch-compile", "torch-compile-max")
COMPILE_MODES = {
    "torch": "",
    "torch-compile": "default",
    "torch-compile-max": "max-autotune-no-cudagraphs",
}


# ---------------------------------------------------------------------------------------
# Workers: each runs in a fresh process and prints one JSON line.
# ---------------------------------------------------------------------------------------


def timed(run, steps: int, warmup: int = 2) -> list[float]:
    from train_step import step_times  # sibling benchmark: the one timing loop

    return step_times(run, steps, warmup)


def load_batch(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def jax_config(spec, steps: int, kind: str = "muon_adamw"):
    from train_step import bench_config  # sibling benchmark: one definition of the setup

    hidden, layers, heads, mlp, window, batch, _, _ = spec
    return bench_config(hidden, layers, heads, mlp, window, batch, steps + 10, kind)


def jax_dims(spec):
    from train_step import bench_dims

    return bench_dims(spec[6], spec[7])


def worker_jax_step(spec, host, steps: int, kind: str) -> list[float]:
    import jax
    from train_step import jax_step_runner

    cfg = jax_config(spec, steps, kind)
    one_step, mesh = jax_step_runner(cfg, jax_dims(spec), host, jax.devices()[0])
    with jax.set_mesh(mesh):
        return timed(one_step, steps)


def worker_jax_plain(spec, host, steps: int) -> list[float]:
    """A hand-written JAX step: same model, no framework code, AdamW only (the floor)."""
    import jax
    import jax.numpy as jnp
    import optax

    hidden, layers, heads, mlp, window, _, fused, title = spec
    d = hidden // heads
    keys = iter(jax.random.split(jax.random.key(0), 8 * layers + 8))
    dense = lambda i, o: jax.random.normal(next(keys), (i, o)) * i**-0.5
    ln = lambda: {"scale": jnp.ones(hidden), "bias": jnp.zeros(hidden)}
    params = {
        "inp": dense(fused, hidden),
        "inp_b": jnp.zeros(hidden),
        "title": dense(title, hidden),
        "cls": jnp.zeros(hidden),
        "mask": jnp.zeros(hidden),
        "pos": jnp.zeros((window + 2, hidden)),
        "ln_in": ln(),
        "ln_out": ln(),
        "out": dense(hidden, fused),
        "blocks": [
            {
                "ln1": ln(),
                "ln2": ln(),
                "qkv": dense(hidden, 3 * hidden),
                "qkv_b": jnp.zeros(3 * hidden),
                "o": dense(hidden, hidden),
                "fc1": dense(hidden, mlp),
                "fc2": dense(mlp, hidden),
            }
            for _ in range(layers)
        ],
    }

    def layer_norm(p, x):
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + 1e-6) * p["scale"] + p["bias"]

    def loss_fn(params, batch):
        x = batch["shots"].astype(jnp.float32)
        fused_in = x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-6)
        b, w, _ = x.shape
        targets = batch["targets"]
        masked = (jnp.arange(w)[None, :, None] == targets[:, None, :]).any(-1)
        h = fused_in @ params["inp"] + params["inp_b"]
        h = jnp.where(masked[..., None], params["mask"], h)
        t = batch["title_embedding"].astype(jnp.float32) @ params["title"]
        h = jnp.concatenate([jnp.broadcast_to(params["cls"], (b, 1, hidden)), t[:, None], h], 1)
        h = layer_norm(params["ln_in"], h + params["pos"])
        keys_bt = jnp.concatenate([jnp.ones((b, 2), bool), batch["valid"]], 1)
        for p in params["blocks"]:
            qkv = (layer_norm(p["ln1"], h) @ p["qkv"] + p["qkv_b"]).reshape(b, w + 2, 3, heads, d)
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
            s = jnp.einsum("btnd,bsnd->bnts", q * d**-0.5, k)
            a = jax.nn.softmax(jnp.where(keys_bt[:, None, None, :], s, -1e30), -1)
            h = h + jnp.einsum("bnts,bsnd->btnd", a, v).reshape(b, w + 2, hidden) @ p["o"]
            h = h + jax.nn.gelu(layer_norm(p["ln2"], h) @ p["fc1"]) @ p["fc2"]
        h = layer_norm(params["ln_out"], h)[:, 2:]
        pos = jnp.maximum(targets, 0)
        weight = (targets >= 0).astype(jnp.float32)
        pred = jnp.take_along_axis(h, pos[..., None], 1) @ params["out"]
        target = jnp.take_along_axis(fused_in, pos[..., None], 1)
        cos = (pred * target).sum(-1) / (
            jnp.linalg.norm(pred, axis=-1) * jnp.linalg.norm(target, axis=-1) + 1e-6
        )
        return ((1 - cos) * weight).sum() / jnp.maximum(weight.sum(), 1)

    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, b2=0.98))
    state = (params, tx.init(params))

    def step(state, batch):
        params, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    step = jax.jit(step, donate_argnums=(0,))
    batch = jax.device_put(host)

    def one_step() -> None:
        nonlocal state
        state, loss = step(state, batch)
        loss.block_until_ready()

    return timed(one_step, steps)


def worker_jax_embed(spec, host, steps: int) -> list[float]:
    """``mediafm embed``'s forward (``Embedder._encode_impl``): fuse -> encoder -> host."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from mediafm_jax.fusion import fuse
    from mediafm_jax.model import NUM_SPECIAL, Encoder

    cfg = jax_config(spec, steps)
    dims = jax_dims(spec)
    graphdef, params = nnx.split(Encoder(cfg.model, dims, nnx.Rngs(0)), nnx.Param)

    @jax.jit
    def encode(params, shots, present, valid, title_embedding):
        model = nnx.merge(graphdef, params)
        fused = fuse(shots, dims.modalities)
        hidden = model(fused, valid, title_embedding)
        return hidden[:, NUM_SPECIAL:].astype(jnp.float32), hidden[:, 0].astype(jnp.float32)

    arrays = [host[k] for k in ("shots", "present", "valid", "title_embedding")]

    def one_pass() -> None:
        shots_h, cls_h = encode(params, *[jax.device_put(a) for a in arrays])
        np.asarray(shots_h), np.asarray(cls_h)

    return timed(one_pass, steps)


def worker_torch(spec, host, steps: int, task: str, compiled: str) -> list[float]:
    """PyTorch on the GPU when there is one (bf16 autocast), else on all CPU threads."""
    import torch
    import torch_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model, optimizers = torch_model.build(spec, spec[7], device)
    batch = torch_model.tensors(host, device)
    if task == "embed":
        return timed(torch_model.embed_fn(model, batch, device, compiled), steps)
    return timed(torch_model.step_fn(model, optimizers, batch, device, compiled), steps)


def worker_peak(framework: str, n: int = 2048, repeats: int = 10) -> float:
    """fp32 n^3 matmul FLOP/s (median) in ``framework``."""
    if framework == "jax":
        import jax

        a = jax.random.normal(jax.random.key(0), (n, n))
        f = jax.jit(lambda x: x @ x)
        times = timed(lambda: f(a).block_until_ready(), repeats)
    else:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        a = torch.randn(n, n)
        times = timed(lambda: a @ a, repeats)
    return 2 * n**3 / float(np.median(times))


def worker_main(args) -> None:
    if args.worker.startswith("peak-"):
        print(json.dumps({"peak": worker_peak(args.worker[5:])}))
        return
    spec = tuple(int(x) for x in args.spec.split(",")) if args.spec else SHAPES[args.shape]
    host = load_batch(args.batch_file)
    impl = args.worker.split("@")[0]
    if args.task == "embed":
        if impl == "jax":
            times = worker_jax_embed(spec, host, args.steps)
        else:
            times = worker_torch(spec, host, args.steps, "embed", compile_mode(impl))
    elif impl in ("jax", "jax-adamw"):
        times = worker_jax_step(
            spec, host, args.steps, "adamw" if impl == "jax-adamw" else "muon_adamw"
        )
    elif impl == "jax-plain":
        times = worker_jax_plain(spec, host, args.steps)
    else:
        times = worker_torch(spec, host, args.steps, "step", compile_mode(impl))
    print(json.dumps({"times": times}))


def compile_mode(impl: str) -> str:
    return COMPILE_MODES[impl]


# ---------------------------------------------------------------------------------------
# The orchestrator.
# ---------------------------------------------------------------------------------------


def make_batch(spec, seed: int = 0) -> dict[str, np.ndarray]:
    """Windows of random length W/2..W (padding a suffix), 20% targets, unit-scale shots."""
    from train_step import MASK_RATIO

    from mediafm_jax import masking

    _, _, _, _, window, batch, fused, title = spec
    rng = np.random.default_rng(seed)
    lengths = rng.integers(window // 2, window + 1, batch)
    valid = np.arange(window)[None] < lengths[:, None]
    return {
        "shots": (rng.normal(size=(batch, window, fused)) * valid[..., None]).astype(np.float16),
        "present": np.ones((batch, window, 3), np.uint8),
        "valid": valid,
        "targets": masking.draw_targets(rng, valid, MASK_RATIO),
        "title_embedding": rng.normal(size=(batch, title)).astype(np.float16),
    }


def model_flops(spec) -> float:
    from train_step import model_flops as flops

    hidden, layers, _, mlp, window, batch, fused, _ = spec
    return flops(hidden, layers, mlp, window, batch, fused)


def run_worker(worker: str, env_extra: dict[str, str], *args: str) -> dict:
    env = dict(os.environ, **env_extra)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", worker, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE)
    if out.returncode:
        tail = out.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return {"error": f"{worker} {' '.join(args)}: exit {out.returncode}: {tail[0][:300]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def busy_cores() -> float | None:
    """The 1-minute load average (runnable processes), or None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def quietness(loads: list[float | None], cores: int) -> str:
    """One line: how busy the machine was; a warning when load exceeded the core count.

    Above the core count the workers share cores with other jobs, and PyTorch's OpenMP
    threads degrade more than XLA's pool under load, so the ratio is flattered.
    """
    seen = [x for x in loads if x is not None]
    if not seen:
        return "load average: unavailable on this OS; quietness was not checked"
    worst = max(seen)
    if worst > cores:
        return (
            f"WARNING: not a quiet machine: 1-min load average reached {worst:.1f} on {cores} "
            "cores; ratios are unreliable (PyTorch degrades more under load), rerun when idle"
        )
    return f"quiet: 1-min load average at most {worst:.1f} on {cores} cores"


def summarize(rounds: list[float]) -> tuple[float, float, float]:
    return float(np.median(rounds)), float(min(rounds)), float(max(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="small,base_cpu,demo")
    parser.add_argument("--impls", default="jax,jax-plain,torch,torch-compile")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per process")
    parser.add_argument("--embed", action="store_true", help="add inference shots/s")
    parser.add_argument("--src", action="append", default=[], help="LABEL=PATH of a checkout")
    parser.add_argument(
        "--env", action="append", default=[], help="LABEL:KEY=VALUE for @LABEL workers"
    )
    parser.add_argument("--xla-flags", default="", help="extra XLA_FLAGS for the jax workers")
    parser.add_argument("--out", default=None, help="write vs_torch.json here")
    parser.add_argument(
        "--require-quiet",
        action="store_true",
        help="refuse to start (exit 2) when the 1-min load average is above the core count",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--task", default="step", help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)  # h,l,n,m,w,b,f,g instead of --shape
    parser.add_argument("--batch-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return

    sources = dict(s.split("=", 1) for s in args.src)
    label_env: dict[str, dict[str, str]] = {}
    for item in args.env:
        label, colon, assignment = item.partition(":")
        key, equals, value = assignment.partition("=")
        if not (colon and equals and key):
            parser.error(f"--env: {item!r} is not LABEL:KEY=VALUE")
        label_env.setdefault(label, {})[key] = value
    impls = args.impls.split(",")
    for impl in impls:
        base, _, label = impl.partition("@")
        if base not in STEP_IMPLS or (label and label not in sources and label not in label_env):
            parser.error(
                f"--impls: unknown {impl!r} (known: {STEP_IMPLS}; @LABEL needs --src or --env)"
            )
    shapes = args.shapes.split(",")
    for name in shapes:
        if name not in SHAPES:
            parser.error(f"--shapes: unknown {name!r} (known: {sorted(SHAPES)})")

    cores = os.cpu_count() or 1
    start_load = busy_cores()
    if args.require_quiet and start_load is not None and start_load > cores:
        print(
            f"vs_torch: refusing to start: 1-min load average {start_load:.1f} is above the "
            f"{cores} cores (--require-quiet); wait for the machine to be idle",
            file=sys.stderr,
        )
        sys.exit(2)

    def env_for(impl: str) -> dict[str, str]:
        label = impl.partition("@")[2]
        env = dict(label_env.get(label, {}))
        if label in sources:
            env["PYTHONPATH"] = str(Path(sources[label]).resolve())
        if impl.startswith("jax") and args.xla_flags:
            env["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
        return env

    jobs = [(name, "step", impl) for name in shapes for impl in impls]
    if args.embed:
        embed_impls = [i for i in impls if i.partition("@")[0] in EMBED_IMPLS]
        jobs += [(name, "embed", impl) for name in shapes for impl in embed_impls]
    results: dict[tuple[str, str, str], list[float]] = {job: [] for job in jobs}
    peaks: dict[str, list[float]] = {"jax": [], "torch": []}
    errors: list[str] = []
    loads = [load_average()]
    busy = [start_load]
    print(f"load average before: {loads[0]} (1, 5, 15 min) on {cores} cores", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name in shapes:
            files[name] = os.path.join(tmp, f"{name}.npz")
            np.savez(files[name], **make_batch(SHAPES[name]))
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover
            tqdm = lambda x, **_: x  # noqa: E731
        order = [(r, job) for r in range(args.rounds) for job in [("peak",) * 3, *jobs]]
        for _, job in tqdm(order, desc="processes"):
            if job[0] == "peak":
                for framework in peaks:
                    out = run_worker(f"peak-{framework}", {})
                    if "peak" in out:
                        peaks[framework].append(out["peak"])
                loads.append(load_average())
                busy.append(busy_cores())
                continue
            name, task, impl = job
            out = run_worker(
                impl,
                env_for(impl),
                "--task",
                task,
                "--shape",
                name,
                "--batch-file",
                files[name],
                "--steps",
                str(args.steps),
            )
            if "error" in out:
                errors.append(out["error"])
                print(out["error"], file=sys.stderr)
            else:
                results[job].append(float(np.median(out["times"])))
    loads.append(load_average())
    busy.append(busy_cores())
    report(args, shapes, impls, results, peaks, loads, errors, quietness(busy, cores))


def report(args, shapes, impls, results, peaks, loads, errors, quiet: str) -> None:
    peak = float(np.median(peaks["jax"])) if peaks["jax"] else float("nan")
    print(
        f"\n{args.rounds} interleaved rounds x {args.steps} timed steps per process; "
        f"{os.cpu_count()} CPUs; load average (1, 5, 15 min) before, at each round, after: "
        f"{' | '.join(loads)}"
    )
    print(quiet)
    if peaks["jax"]:
        lo, hi = min(peaks["jax"]), max(peaks["jax"])
        print(
            f"fp32 2048^3 matmul peak: jax {peak / 1e9:.0f} GFLOP/s ({lo / 1e9:.0f}-{hi / 1e9:.0f})",
            end="",
        )
    if peaks["torch"]:
        print(f", torch {np.median(peaks['torch']) / 1e9:.0f} GFLOP/s", end="")
    print("\n")
    head = f"{'shape':<9}{'task':<6}{'impl':<16}{'ms (median)':>12}{'min-max':>14}{'shots/s':>10}{'MFU':>6}"
    ref_name = "torch" if "torch" in impls else impls[0]
    print(f"ratio: {ref_name}'s median time / this one's (>1: faster than {ref_name})")
    print(head + f"{'ratio':>12}{'same-round range':>18}")
    table = []
    for name in shapes:
        spec = SHAPES[name]
        shots = spec[5] * spec[4]
        for task in ("step", "embed"):
            rows = {
                impl: results[(name, task, impl)] for impl in impls if (name, task, impl) in results
            }
            reference = rows.get("torch") or next(iter(rows.values()), [])
            for impl, rounds in rows.items():
                if not rounds:
                    continue
                med, lo, hi = summarize(rounds)
                flops = model_flops(spec) / (3 if task == "embed" else 1)
                ratio = ratio_range = ""
                row = {
                    "rounds_ms": [x * 1e3 for x in rounds],
                    "shape": name,
                    "task": task,
                    "impl": impl,
                    "ms": med * 1e3,
                    "ms_min": lo * 1e3,
                    "ms_max": hi * 1e3,
                    "shots_per_s": shots / med,
                    "mfu": flops / med / peak,
                }
                if reference:
                    row["reference"] = ref_name
                    pairs = [t / s for t, s in zip(reference, rounds, strict=False)]
                    row["vs_torch"] = float(np.median(reference)) / med
                    row["vs_torch_rounds"] = [min(pairs), max(pairs)]
                    ratio = f"{row['vs_torch']:.2f}x"
                    ratio_range = f"{min(pairs):.2f}-{max(pairs):.2f}"
                table.append(row)
                print(
                    f"{name:<9}{task:<6}{impl:<16}{med * 1e3:>12.0f}"
                    f"{f'{lo * 1e3:.0f}-{hi * 1e3:.0f}':>14}{shots / med:>10,.0f}"
                    f"{flops / med / peak:>6.0%}{ratio:>12}{ratio_range:>18}"
                )
    print(
        "\nMFU: model FLOPs (training: 6 N tokens + attention; embed: a third of that) / the jax "
        "peak."
    )
    for error in errors:
        print("ERROR", error)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        payload = {
            "peaks": peaks,
            "loads": loads,
            "quiet": quiet,
            "rows": table,
            "errors": errors,
        }
        (Path(args.out) / "vs_torch.json").write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
