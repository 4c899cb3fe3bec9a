"""Muon: Newton-Schulz FLOPs, optimizer share of a step, and speed vs optax.contrib.muon.

    python experiments/benchmarks/muon.py [--configs demo,base]

1. NS FLOPs that XLA's cost analysis counts vs the formula T(4 p^2 q + 2 p^3), p <= q.
2. The optimizer's share of a training step: the jitted Muon + AdamW update alone vs the
   whole train step, on the real parameter tree of each config.
3. One Muon update (momentum + NS + scaling) on the block matrices of each config: ours
   vs ``optax.contrib.muon`` with explicit dimension numbers, both fp32, same run; ours
   with same-shape matrices stacked into one batched NS (``optim.muon_stack``), with
   Polar Express coefficients, and in bf16 (the default on accelerators; slow on CPUs
   without bf16 matmul units).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from train_step import median_seconds  # sibling benchmark (run from this folder or the root)

from mediafm_jax import config as config_lib
from mediafm_jax import optim, presets, sharding, train
from mediafm_jax.model import DataDims
from mediafm_jax.optim.muon import newton_schulz, newton_schulz_flops, scale_by_muon


def bench(fn, *args, repeats=10) -> float:
    return median_seconds(lambda: jax.block_until_ready(fn(*args)), repeats)


def flops_table() -> None:
    print(f"{'shape':<12}{'XLA FLOPs':>18}{'formula':>18}{'ratio':>8}")
    for p, q in ((128, 512), (512, 128), (768, 768), (768, 3072)):
        x = jnp.zeros((p, q), jnp.float32)
        compiled = jax.jit(lambda m: newton_schulz(m, dtype=jnp.float32)).lower(x).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        xla = cost.get("flops", float("nan"))
        formula = newton_schulz_flops(p, q)
        print(f"{f'{p}x{q}':<12}{xla:>18,.0f}{formula:>18,}{xla / formula:>8.3f}")


def config_for(name: str):
    cfg = presets.demo() if name == "demo" else presets.base()
    overrides = ["optim.muon_ns_dtype=float32", "model.compute_dtype=float32", "train.batch_size=2"]
    if name == "base":
        overrides.append("model.max_shots=256")  # a step that fits this CPU's patience
    return config_lib.apply_overrides(cfg, overrides)


def optimizer_share(name: str) -> tuple[float, float]:
    from train_step import make_batch, step_seconds

    cfg = config_for(name)
    fused = 384 if name == "demo" else 2304
    third = fused // 3
    dims = DataDims(fused, 128, ((0, third), (third, 2 * third), (2 * third, fused)))
    host = make_batch(cfg.train.batch_size, cfg.model.max_shots, fused)
    host["title_embedding"] = host["title_embedding"][:, :128]
    step_time = step_seconds(cfg, dims, host, 3, jax.devices()[0])
    mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
    setup = train.TrainSetup.create(cfg, dims, mesh)
    state = setup.init_state(0)
    with jax.set_mesh(mesh):
        grads = jax.tree.map(jnp.ones_like, state["params"])
        update = jax.jit(setup.optimizer.update)
        opt_time = bench(update, grads, state["opt_state"], state["params"], repeats=5)
    return opt_time, step_time


def muon_vs_optax(name: str) -> dict[str, float]:
    cfg = config_for(name)
    h, m = cfg.model.hidden_size, cfg.model.mlp_size
    rng = np.random.default_rng(0)
    shapes = [(h, h)] * 4 * cfg.model.num_layers + [(h, m), (m, h)] * cfg.model.num_layers
    tree = {f"w{i}": jnp.asarray(rng.normal(size=s), jnp.float32) for i, s in enumerate(shapes)}
    dim_nums = jax.tree.map(lambda _: optax.contrib.MuonDimensionNumbers(0, 1), tree)
    candidates = {
        "optax.contrib.muon fp32": optax.contrib.muon(1e-3, muon_weight_dimension_numbers=dim_nums),
        "ours fp32": optax.chain(
            scale_by_muon(ns_dtype=jnp.float32, scale="keller"), optax.scale(-1e-3)
        ),
        "ours fp32 stacked": optax.chain(
            scale_by_muon(ns_dtype=jnp.float32, scale="keller", stack=True), optax.scale(-1e-3)
        ),
        "ours fp32 polar express": optax.chain(
            scale_by_muon(ns_dtype=jnp.float32, scale="keller", ns_coeffs="polar_express"),
            optax.scale(-1e-3),
        ),
        "ours bf16": optax.chain(
            scale_by_muon(ns_dtype=jnp.bfloat16, scale="keller"), optax.scale(-1e-3)
        ),
    }
    out = {}
    for label, tx in candidates.items():
        state = tx.init(tree)
        out[label] = bench(jax.jit(lambda g, s, tx=tx: tx.update(g, s, tree)[0]), tree, state)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="demo,base")
    args = parser.parse_args()
    print("1. Newton-Schulz FLOPs (5 steps)")
    flops_table()
    print("\n2. optimizer share of a training step (fp32, batch 2)")
    print(f"{'config':<8}{'update ms':>11}{'step ms':>10}{'share':>8}")
    for name in args.configs.split(","):
        opt_time, step_time = optimizer_share(name)
        print(
            f"{name:<8}{opt_time * 1e3:>11.1f}{step_time * 1e3:>10.1f}{opt_time / step_time:>8.1%}"
        )
    print("\n3. one Muon update on the block matrices (ms; ratio = optax time / ours)")
    for name in args.configs.split(","):
        times = muon_vs_optax(name)
        base = times["optax.contrib.muon fp32"]
        for label, seconds in times.items():
            print(f"{name:<8}{label:<26}{seconds * 1e3:>9.1f}{base / seconds:>8.2f}x")
    print(f"\n{optim.__name__}: partition rule and chain as in training (see optim/__init__.py)")


if __name__ == "__main__":
    main()
