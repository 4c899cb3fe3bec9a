"""Where a training step's time goes, op by op: ours vs PyTorch on the same shapes.

    python experiments/benchmarks/ops.py [--shapes small,demo] [--rounds 3] [--repeats 5]

A profiler cannot answer this for XLA:CPU (its trace shows one event per compiled program,
not per fusion), so every part of the step is timed on its own, forward + backward, at the
step's shapes, in each framework, and multiplied by how often the model runs it:

- attention (x layers): ours (``attention.dot_product_attention``: the fused CPU kernel),
  ``jax.nn.dot_product_attention`` (XLA), ``F.scaled_dot_product_attention``;
- GEMMs: the dense projections of the blocks, the input and the output projection;
- layer norm (x 2 layers + 2), tanh GELU (x layers), the cosine loss;
- the optimizer update: Muon on the block matrices + AdamW on the rest, gradient clipping;
- the whole step (``vs_torch.py``'s workers); "rest" = step - the parts (the glue the
  compiler fuses or the eager framework dispatches).

Each framework runs in its own process (as in ``vs_torch.py``), rounds interleave, the
table shows medians over rounds and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from vs_torch import (
    SHAPES,
    busy_cores,
    load_average,
    load_batch,
    make_batch,
    quietness,
    timed,
)

HERE = Path(__file__).resolve().parent
PARTS = ("attention", "gemm", "layer_norm", "gelu", "loss", "optimizer")


def median_ms(run, repeats: int) -> list[float]:
    """[wall ms, process CPU ms] medians: CPU time stays meaningful on a busy machine when
    the workers run single-threaded (``--single-thread``)."""
    cpu = []

    def counted():
        start = time.process_time()
        run()
        cpu.append(time.process_time() - start)

    wall = timed(counted, repeats)
    return [float(np.median(wall)) * 1e3, float(np.median(cpu[-repeats:])) * 1e3]


def times(n: int, pair: list[float]) -> list[float]:
    return [n * x for x in pair]


def total(pairs) -> list[float]:
    pairs = list(pairs)
    return [sum(p[i] for p in pairs) for i in range(2)]


def gemm_shapes(spec) -> list[tuple[int, int, int, int]]:
    """(rows, d_in, d_out, count) of every dense layer in one step."""
    hidden, layers, _, mlp, window, batch, fused, title = spec
    tokens = batch * (window + 2)
    return [
        (tokens, hidden, hidden, 4 * layers),  # q, k, v, o
        (tokens, hidden, mlp, layers),
        (tokens, mlp, hidden, layers),
        (batch * window, fused, hidden, 1),  # input projection
        (batch, title, hidden, 1),
        (max(1, batch * window // 5), hidden, fused, 1),  # output projection at the targets
    ]


def worker_jax(spec, host, repeats: int) -> dict[str, list[float]]:
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from train_step import jax_step_runner
    from vs_torch import jax_config, jax_dims

    from mediafm_jax import attention, optim
    from mediafm_jax.model import Encoder

    hidden, layers, heads, mlp, window, batch, fused, _ = spec
    t, d = window + 2, hidden // heads
    rng = np.random.default_rng(0)
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
    lengths = jnp.asarray(2 + host["valid"].sum(-1), jnp.int32)
    out = {}

    def fwd_bwd(loss, *args) -> float:
        grad = jax.jit(jax.grad(loss, argnums=tuple(range(len(args)))))
        return median_ms(lambda: jax.block_until_ready(grad(*args)), repeats)

    q, k, v, w = (normal(batch, t, heads, d) for _ in range(4))
    for name, impl in (("attention", None), ("attention_xla", "xla")):
        attend = lambda q, k, v, impl=impl: attention.dot_product_attention(q, k, v, lengths, impl)
        out[name] = times(
            layers, fwd_bwd(lambda q, k, v, f=attend: (f(q, k, v) * w).sum(), q, k, v)
        )

    gemms = [(normal(r, i), normal(i, o), c) for r, i, o, c in gemm_shapes(spec)]
    # tanh: a cheap consumer, so the product is not folded into the sum
    out["gemm"] = total(
        times(c, fwd_bwd(lambda x, m: jnp.tanh(x @ m).sum(), x, m)) for x, m, c in gemms
    )

    x, scale, bias = normal(batch, t, hidden), normal(hidden), normal(hidden)

    def layer_norm(x, scale, bias):
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + 1e-6) * scale + bias

    y = normal(batch, t, hidden)
    ln = lambda x, s, b: (layer_norm(x, s, b) * y).sum()
    out["layer_norm"] = times(2 * layers + 2, fwd_bwd(ln, x, scale, bias))
    xm, ym = normal(batch, t, mlp), normal(batch, t, mlp)
    out["gelu"] = times(layers, fwd_bwd(lambda x: (jax.nn.gelu(x) * ym).sum(), xm))
    k_targets = max(1, window // 5)
    pred, target = normal(batch, k_targets, fused), normal(batch, k_targets, fused)

    def cosine(pred):
        cos = (pred * target).sum(-1) / (
            jnp.linalg.norm(pred, axis=-1) * jnp.linalg.norm(target, axis=-1) + 1e-6
        )
        return (1 - cos).mean()

    out["loss"] = fwd_bwd(cosine, pred)

    cfg = jax_config(spec, 20)
    params = nnx.to_pure_dict(nnx.state(Encoder(cfg.model, jax_dims(spec), nnx.Rngs(0)), nnx.Param))
    tx = optim.build_optimizer(cfg.optim, 20, params)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype) * 1e-3, params)

    @jax.jit
    def update(params, opt_state):
        updates, opt_state = tx.update(grads, opt_state, params)
        return jax.tree.map(lambda p, u: p + u, params, updates), opt_state

    state = (params, tx.init(params))

    def one_update():
        nonlocal state
        state = jax.block_until_ready(update(*state))

    out["optimizer"] = median_ms(one_update, repeats)
    step, mesh = jax_step_runner(cfg, jax_dims(spec), host, jax.devices()[0])
    with jax.set_mesh(mesh):
        out["step"] = median_ms(step, repeats)
    return out


def worker_torch_ops(spec, host, repeats: int, single_thread: bool) -> dict[str, list[float]]:
    import torch
    import torch.nn.functional as F
    import torch_model

    torch.set_num_threads(1 if single_thread else os.cpu_count() or 1)
    torch.manual_seed(0)
    hidden, layers, heads, mlp, window, batch, fused, title = spec
    t, d = window + 2, hidden // heads
    normal = lambda *shape: torch.randn(*shape, requires_grad=True)
    out = {}

    def fwd_bwd(loss, *args) -> float:
        def run():
            for a in args:
                a.grad = None
            loss(*args).backward()

        return median_ms(run, repeats)

    q, k, v = (normal(batch, heads, t, d) for _ in range(3))
    w = torch.randn(batch, heads, t, d)
    keys = np.arange(t)[None] < (2 + host["valid"].sum(-1))[:, None]
    mask = torch.from_numpy(keys)[:, None, None, :]
    sdpa = lambda q, k, v: (F.scaled_dot_product_attention(q, k, v, attn_mask=mask) * w).sum()
    out["attention"] = times(layers, fwd_bwd(sdpa, q, k, v))
    out["gemm"] = total(
        times(c, fwd_bwd(lambda x, m: torch.tanh(x @ m).sum(), normal(r, i), normal(i, o)))
        for r, i, o, c in gemm_shapes(spec)
    )
    x, y = normal(batch, t, hidden), torch.randn(batch, t, hidden)
    norm = torch.nn.LayerNorm(hidden, eps=1e-6)
    out["layer_norm"] = times(2 * layers + 2, fwd_bwd(lambda x: (norm(x) * y).sum(), x))
    xm, ym = normal(batch, t, mlp), torch.randn(batch, t, mlp)
    out["gelu"] = times(layers, fwd_bwd(lambda x: (F.gelu(x, approximate="tanh") * ym).sum(), xm))
    k_targets = max(1, window // 5)
    pred, target = normal(batch, k_targets, fused), torch.randn(batch, k_targets, fused)
    cos = lambda p: (1 - F.cosine_similarity(p, target, dim=-1, eps=1e-6)).mean()
    out["loss"] = fwd_bwd(cos, pred)

    model, optimizers = torch_model.build(spec, title)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3

    def one_update():
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for opt in optimizers:
            opt.step()

    out["optimizer"] = median_ms(one_update, repeats)
    batch = torch_model.tensors(host, "cpu")
    out["step"] = median_ms(torch_model.step_fn(model, optimizers, batch, "cpu", ""), repeats)
    return out


SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def run_worker(framework: str, shape: str, batch_file: str, repeats: int, single: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", framework]
    cmd += ["--shape", shape, "--batch-file", batch_file, "--repeats", str(repeats)]
    env = dict(os.environ)
    if single:
        cmd.append("--single-thread")
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {SINGLE_THREAD_XLA}".strip()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE, env=env)
    if out.returncode:
        tail = out.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return {"error": f"{framework} {shape}: exit {out.returncode}: {tail[0][:300]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="small,demo")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per part")
    parser.add_argument("--out", default=None, help="write ops.json here")
    parser.add_argument(
        "--single-thread",
        action="store_true",
        help="one thread per framework; compare the CPU ms column (robust to a busy machine)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    parser.add_argument("--batch-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        host = load_batch(args.batch_file)
        spec = SHAPES[args.shape]
        if args.worker == "jax":
            print(json.dumps(worker_jax(spec, host, args.repeats)))
        else:
            print(json.dumps(worker_torch_ops(spec, host, args.repeats, args.single_thread)))
        return
    shapes = args.shapes.split(",")
    for name in shapes:
        if name not in SHAPES:
            parser.error(f"--shapes: unknown {name!r} (known: {sorted(SHAPES)})")
    cores = os.cpu_count() or 1
    loads, busy = [load_average()], [busy_cores()]
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name in shapes:
                batch_file = os.path.join(tmp, f"{name}.npz")
                if not os.path.exists(batch_file):
                    np.savez(batch_file, **make_batch(SHAPES[name]))
                for framework in ("jax", "torch"):
                    out = run_worker(framework, name, batch_file, args.repeats, args.single_thread)
                    if "error" in out:
                        print(out["error"], file=sys.stderr)
                        continue
                    results.setdefault((name, framework), []).append(out)
            loads.append(load_average())
            busy.append(busy_cores())
    print(
        f"\n{args.rounds} interleaved rounds x {args.repeats} timed calls per part; {cores} CPUs; "
        f"load average (1, 5, 15 min) before, per round: {' | '.join(loads)}"
    )
    print(quietness(busy, cores))
    threads = "1 thread each" if args.single_thread else f"{cores} threads each"
    print(
        f"ms per training step ({threads}), median over rounds; parts x how often a step runs them\n"
    )
    table = {}
    for name in shapes:
        med = {
            fw: {key: np.median([r[key] for r in rounds], axis=0).tolist() for key in rounds[0]}
            for (shape, fw), rounds in results.items()
            if shape == name
        }
        if len(med) < 2:
            continue
        table[name] = med
        ours, theirs = med["jax"], med["torch"]
        for fw in (ours, theirs):
            fw["rest"] = [fw["step"][i] - sum(fw[key][i] for key in PARTS) for i in range(2)]
        print(
            f"| {name} | ours wall | PyTorch wall | ours CPU | PyTorch CPU | ours / PyTorch (CPU) |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for key in (*PARTS, "attention_xla", "rest", "step"):
            ref = theirs["attention" if key == "attention_xla" else key]
            label = "attention, jax.nn (XLA)" if key == "attention_xla" else key
            ratio = f"{ours[key][1] / ref[1]:.2f}" if ref[1] > 0 else "-"
            print(
                f"| {label} | {ours[key][0]:.0f} | {ref[0]:.0f} | {ours[key][1]:.0f} | "
                f"{ref[1]:.0f} | {ratio} |"
            )
        print()
        if args.out:  # after every shape: a long run on a busy machine keeps what it measured
            Path(args.out).mkdir(parents=True, exist_ok=True)
            payload = {"loads": loads, "quiet": quietness(busy, cores), "ms": table}
            (Path(args.out) / "ops.json").write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
