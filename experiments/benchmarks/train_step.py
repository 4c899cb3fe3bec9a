"""Training-step speed: ours vs the same model and optimizer in PyTorch, same run.

    pip install -e '.[bench]'    # torch's CPU wheel
    python experiments/benchmarks/train_step.py [--configs small,base_cpu] [--steps 10]

For each config: step time, shots/s and model FLOP utilization (MFU) against a matmul
peak measured in this run (a large fp32 jnp.dot), for

- ``mediafm-jax``: the jitted, donated ``train_step`` (Muon + AdamW);
- ``pytorch``: the same model and optimizer in eager PyTorch (``torch_model.py``), timed
  in the same process after JAX. That is *not* a fair CPU comparison (JAX's thread pool
  stays alive); ``vs_torch.py`` is: one process per framework, interleaved rounds.

Model FLOPs per step = 6 x (matmul params) x tokens + 12 x layers x tokens^2 x hidden per
window (attention), forward + backward; the optimizer is not counted.

``--diagnose`` adds where the time goes: both steps again with attention replaced by its
``v`` input (the difference is attention's share), and one layer's attention forward +
backward alone (``jax.nn.dot_product_attention``, a plain einsum-softmax-einsum, and
PyTorch's ``scaled_dot_product_attention``).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import numpy as np

from mediafm_jax import masking, plan
from mediafm_jax.config import ObjectiveConfig

MASK_RATIO = ObjectiveConfig().mask_ratio  # the batches' targets, and so their FLOPs

CONFIGS = {
    # name: (hidden, layers, heads, mlp, window, batch, fused)
    "small": (128, 4, 4, 512, 256, 16, 384),
    "base_cpu": (384, 6, 6, 1536, 512, 4, 2304),
}


def model_flops(hidden, layers, mlp, window, batch, fused) -> float:
    """Training FLOPs of one step on ``batch`` full windows (``plan``'s formula)."""
    flops = plan.train_flops_per_shot(hidden, layers, mlp, window, fused, MASK_RATIO)
    return flops * batch * window


def step_times(run: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall times of ``repeats`` calls of ``run()`` after ``warmup`` untimed ones.

    The one timing loop of the benchmarks; ``run`` must wait for its own work to finish.
    """
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return times


def median_seconds(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median of ``step_times``."""
    return float(np.median(step_times(run, repeats, warmup)))


def matmul_peak(n: int = 2048, repeats: int = 10, dtype: str = "float32", device=None) -> float:
    """FLOP/s of an n x n matmul in ``dtype`` on ``device`` (default: the first device)."""
    import jax
    import jax.numpy as jnp

    a = jax.device_put(jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype)), device)
    f = jax.jit(lambda x: x @ x)
    return 2 * n**3 / median_seconds(lambda: f(a).block_until_ready(), repeats)


def make_batch(batch, window, fused, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(window // 2, window + 1, batch)
    valid = np.arange(window)[None] < lengths[:, None]
    targets = masking.draw_targets(rng, valid, MASK_RATIO)
    return {
        "shots": (rng.normal(size=(batch, window, fused)) * valid[..., None]).astype(np.float16),
        "present": np.ones((batch, window, 3), np.uint8),
        "valid": valid,
        "targets": targets,
        "title_embedding": rng.normal(size=(batch, 128)).astype(np.float16),
    }


def bench_config(hidden, layers, heads, mlp, window, batch, steps: int, kind="muon_adamw"):
    """The benchmarks' model and optimizer at these shapes (fp32 Newton-Schulz on the CPU)."""
    from mediafm_jax import config as config_lib

    return config_lib.apply_overrides(
        config_lib.ExperimentConfig(),
        [
            f"model.hidden_size={hidden}",
            f"model.num_layers={layers}",
            f"model.num_heads={heads}",
            f"model.mlp_size={mlp}",
            f"model.max_shots={window}",
            f"train.batch_size={batch}",
            f"optim.kind={kind}",
            "optim.muon_ns_dtype=float32",
            f"train.steps={steps}",
        ],
    )


def bench_dims(fused: int, title: int):
    """Three equal modality columns of ``fused`` features and a ``title``-d title vector."""
    from mediafm_jax.model import DataDims

    third = fused // 3
    return DataDims(fused, title, ((0, third), (third, 2 * third), (2 * third, fused)))


def time_jax(spec, steps: int) -> float:
    import jax

    hidden, layers, heads, mlp, window, batch, fused = spec
    cfg = bench_config(hidden, layers, heads, mlp, window, batch, steps + 3)
    dims = bench_dims(fused, 128)
    return step_seconds(cfg, dims, make_batch(batch, window, fused), steps, jax.devices()[0])


class StepRunner:
    """One jitted, donated train step on one device; calling it runs a step and waits."""

    def __init__(self, cfg, dims, host: dict, device):
        from mediafm_jax import sharding, train

        self.mesh = sharding.make_mesh(cfg.mesh, [device])
        setup = train.TrainSetup.create(cfg, dims, self.mesh)
        self.state = setup.init_state(0)
        self.step = setup.jit_train_step(host)
        self.batch = sharding.global_batch(host, self.mesh)
        self.done = 0

    def _key(self):
        from mediafm_jax import train

        return train.step_key(0, self.done)

    def __call__(self) -> None:
        import jax

        # the state is donated: carry it from step to step
        self.state, metrics = self.step(self.state, self.batch, self._key())
        jax.block_until_ready(metrics)
        self.done += 1

    def memory_analysis(self):
        """XLA's buffer assignment for the step (compiled once more, ahead of time)."""
        return self.step.lower(self.state, self.batch, self._key()).compile().memory_analysis()


def jax_step_runner(cfg, dims, host: dict, device) -> tuple[StepRunner, object]:
    """(one jitted, donated train step on ``device`` that waits for itself, its mesh)."""
    runner = StepRunner(cfg, dims, host, device)
    return runner, runner.mesh


def step_seconds(cfg, dims, host: dict, steps: int, device) -> float:
    """Median time of the jitted, donated train step on ``device`` (after 2 warm-ups)."""
    import jax

    one_step, mesh = jax_step_runner(cfg, dims, host, device)
    with jax.set_mesh(mesh):
        return median_seconds(one_step, steps, warmup=2)


def time_torch(
    spec, steps: int, device: str = "cpu", title_dim: int = 128, compiled: str = ""
) -> float:
    """Median step time of the PyTorch version (``torch_model.py``); on CUDA in bf16 autocast.

    In-process: for a fair CPU comparison use ``vs_torch.py`` (one process per framework).
    """
    import torch
    import torch_model

    if device == "cpu":
        torch.set_num_threads(2)
    torch.manual_seed(0)
    model, optimizers = torch_model.build(spec, title_dim, device)
    hidden, layers, heads, mlp, window, batch, fused = spec
    host = make_batch(batch, window, fused)
    host["title_embedding"] = np.resize(host["title_embedding"], (batch, title_dim))
    one_step = torch_model.step_fn(
        model, optimizers, torch_model.tensors(host, device), device, compiled
    )
    return median_seconds(one_step, steps, warmup=2)


@contextlib.contextmanager
def attention_replaced_by_v():
    """Both frameworks' attention returns ``v``: what the step costs without attention."""
    import jax
    import torch.nn.functional as F

    saved = jax.nn.dot_product_attention, F.scaled_dot_product_attention
    jax.nn.dot_product_attention = lambda q, k, v, **_: v
    F.scaled_dot_product_attention = lambda q, k, v, **_: v
    try:
        yield
    finally:
        jax.nn.dot_product_attention, F.scaled_dot_product_attention = saved


def attention_layer_ms(spec, repeats: int = 10) -> dict[str, float]:
    """One layer's attention, forward + backward, on the config's shapes (ms, median)."""
    import jax
    import jax.numpy as jnp
    import torch

    hidden, _, heads, _, window, batch, _ = spec
    t, d = window + 2, hidden // heads
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(batch, t, heads, d)).astype(np.float32) for _ in range(3))
    lengths = rng.integers(t // 2, t + 1, batch).astype(np.int32)

    def library(q, k, v):
        return jax.nn.dot_product_attention(
            q, k, v, query_seq_lengths=lengths, key_value_seq_lengths=lengths
        ).sum()

    def plain(q, k, v):
        scores = jnp.einsum("btnh,bsnh->bnts", q * d**-0.5, k)
        keys = jnp.arange(t)[None, :] < lengths[:, None]
        weights = jax.nn.softmax(jnp.where(keys[:, None, None, :], scores, -1e30), -1)
        return jnp.einsum("bnts,bsnh->btnh", weights, v).sum()

    def median_ms(run) -> float:
        return median_seconds(run, repeats) * 1e3

    out = {}
    for name, fn in (("jax.nn.dot_product_attention", library), ("einsum-softmax-einsum", plain)):
        grad = jax.jit(jax.grad(fn, argnums=(0, 1, 2)))
        out[name] = median_ms(lambda grad=grad: jax.block_until_ready(grad(q, k, v)))
    torch.set_num_threads(2)
    tq, tk, tv = (
        torch.from_numpy(x).transpose(1, 2).contiguous().requires_grad_() for x in (q, k, v)
    )
    mask = torch.from_numpy(np.arange(t)[None, :] < lengths[:, None])[:, None, None, :]
    out["torch scaled_dot_product_attention"] = median_ms(
        lambda: (
            torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=mask)
            .sum()
            .backward()
        )
    )
    return out


def diagnose(spec, steps: int, full: dict[str, float]) -> None:
    with attention_replaced_by_v():
        without = {"mediafm-jax": time_jax(spec, steps), "pytorch": time_torch(spec, steps)}
    for impl, seconds in without.items():
        print(
            f"  {impl:<12} attention {1e3 * (full[impl] - seconds):6.0f} ms of "
            f"{1e3 * full[impl]:.0f}; the rest {1e3 * seconds:.0f} ms"
        )
    for name, ms in attention_layer_ms(spec).items():
        print(f"  one layer's attention, fwd+bwd: {name:<36}{ms:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="small,base_cpu")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--diagnose", action="store_true", help="where the time goes")
    args = parser.parse_args()
    peak = matmul_peak()
    print(f"measured fp32 matmul peak (2048^3 jnp.dot): {peak / 1e9:.1f} GFLOP/s\n")
    print(f"{'config':<10}{'impl':<13}{'ms/step':>9}{'shots/s':>10}{'MFU':>7}{'speed-up':>10}")
    for name in args.configs.split(","):
        spec = CONFIGS[name]
        hidden, layers, heads, mlp, window, batch, fused = spec
        flops = model_flops(hidden, layers, mlp, window, batch, fused)
        results = {"mediafm-jax": time_jax(spec, args.steps)}
        if not args.no_torch:
            results["pytorch"] = time_torch(spec, args.steps)
        reference = results.get("pytorch")
        for impl, seconds in results.items():
            speedup = f"{reference / seconds:.2f}x" if reference else "-"
            print(
                f"{name:<10}{impl:<13}{seconds * 1e3:>9.0f}{batch * window / seconds:>10,.0f}"
                f"{flops / seconds / peak:>7.0%}{speedup:>10}"
            )
        if args.diagnose and reference:
            diagnose(spec, args.steps, results)
    print(
        "\nMFU: model FLOPs (6 N tokens + attention, fwd+bwd; optimizer not counted) / measured peak"
    )
    print("speed-up: pytorch step time / this step time (1.00x for the baseline itself)")


if __name__ == "__main__":
    main()
