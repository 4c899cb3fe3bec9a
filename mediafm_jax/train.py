"""Training: the train state, a pure ``train_step``, and the loop.

The model is Flax NNX, used functionally at the jit boundary: ``nnx.split`` gives a static
graph definition and a pure dict of fp32 parameters; the train state is the pytree
``{"step", "params", "opt_state"}``; ``train_step(state, batch, key) -> (state, metrics)``
is jitted with explicit in/out shardings and the state donated.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mediafm_jax import config as config_lib
from mediafm_jax import optim, outputs, sharding
from mediafm_jax.checkpoint import Checkpointer
from mediafm_jax.config import ExperimentConfig
from mediafm_jax.data import pipeline
from mediafm_jax.data.store import ShotStore
from mediafm_jax.errors import NonFiniteLossError
from mediafm_jax.model import DataDims, Encoder
from mediafm_jax.objective import msm_loss
from mediafm_jax.streams import step_key


def data_dims(store: ShotStore, global_input: str = "title_embedding") -> DataDims:
    return DataDims(
        fused=store.num_features,
        title=store.global_vectors(global_input).shape[1],
        modalities=tuple((m.start, m.stop) for m in store.modalities),
    )


# ---------------------------------------------------------------------------------------
# Model and state set-up: sharded from the first line.
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainSetup:
    """Everything that turns a config + data dims + mesh into jitted functions."""

    config: ExperimentConfig
    dims: DataDims
    mesh: Mesh
    graphdef: Any
    param_axes: Any
    param_shardings: Any
    state_shardings: Any
    optimizer: optax.GradientTransformation
    abstract_state: Any

    @classmethod
    def create(cls, config: ExperimentConfig, dims: DataDims, mesh: Mesh) -> TrainSetup:
        abstract_model = nnx.eval_shape(lambda: Encoder(config.model, dims, nnx.Rngs(0)))
        graphdef, abstract_vars = nnx.split(abstract_model, nnx.Param)
        axes = sharding.param_axes(abstract_vars)
        abstract_params = nnx.to_pure_dict(abstract_vars)
        param_shardings = sharding.param_shardings(abstract_params, axes, mesh)
        optimizer = optim.build_optimizer(config.optim, config.train.steps, abstract_params, mesh)
        abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
        replicated = NamedSharding(mesh, PartitionSpec())
        state_shardings = {
            "step": replicated,
            "params": param_shardings,
            "opt_state": sharding.opt_state_shardings(
                optimizer, abstract_opt, param_shardings, mesh
            ),
        }
        abstract_state = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            {
                "step": jax.ShapeDtypeStruct((), jnp.int32),
                "params": abstract_params,
                "opt_state": abstract_opt,
            },
            state_shardings,
        )
        return cls(
            config,
            dims,
            mesh,
            graphdef,
            axes,
            param_shardings,
            state_shardings,
            optimizer,
            abstract_state,
        )

    def init_state(self, seed: int) -> dict[str, Any]:
        """Parameters are created already sharded: no full copy on one device."""

        def init(key):
            model = Encoder(self.config.model, self.dims, nnx.Rngs(params=key))
            params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
            return {
                "step": jnp.zeros([], jnp.int32),
                "params": params,
                "opt_state": self.optimizer.init(params),
            }

        with jax.set_mesh(self.mesh):
            return jax.jit(init, out_shardings=self.state_shardings)(jax.random.key(seed))

    def model(self, params: Any) -> Encoder:
        return nnx.merge(self.graphdef, params)

    def batch_shardings(self, batch: dict[str, Any]) -> dict[str, NamedSharding]:
        return {k: sharding.batch_sharding(self.mesh, np.ndim(v)) for k, v in batch.items()}

    def make_train_step(self) -> Callable:
        objective = self.config.objective

        def train_step(state, batch, key):
            def loss_fn(params):
                return msm_loss(self.model(params), batch, objective, key=key, train=True)

            (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
            updates, opt_state = self.optimizer.update(grads, state["opt_state"], state["params"])
            params = optax.apply_updates(state["params"], updates)
            metrics = dict(metrics)
            metrics["grad_norm"] = optax.tree.norm(grads)
            metrics["update_norm"] = optax.tree.norm(updates)
            metrics["param_norm"] = optax.tree.norm(params)
            return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics

        return train_step

    def jit_train_step(self, example_batch: dict[str, Any]) -> Callable:
        replicated = NamedSharding(self.mesh, PartitionSpec())
        return jax.jit(
            self.make_train_step(),
            in_shardings=(self.state_shardings, self.batch_shardings(example_batch), replicated),
            out_shardings=(self.state_shardings, replicated),
            donate_argnums=(0,),
        )


# ---------------------------------------------------------------------------------------
# Logging helpers.
# ---------------------------------------------------------------------------------------


class MetricsWriter:
    """metrics.jsonl + TensorBoard + a progress line; a no-op off process 0."""

    def __init__(self, workdir: Path, enabled: bool):
        self.enabled = enabled
        self.path = workdir / "metrics.jsonl"
        self.tb = None
        if enabled:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(workdir / "tb"))

    def write(self, record: dict[str, float], total_steps: int) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step":
                self.tb.add_scalar(f"train/{key}", value, record["step"])
        self.tb.flush()
        print(
            f"step {record['step']:>6d}/{total_steps}  loss {record['loss']:.4f}  "
            f"cos {record['masked_cosine']:.3f}  |g| {record['grad_norm']:.3f}  "
            f"lr {record['learning_rate']:.2e}  {record['shots_per_s']:,.0f} shots/s  "
            f"{record['step_time_s'] * 1e3:.0f} ms/step",
            flush=True,
        )

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def plot_loss_curve(
    metrics: Path | dict[str, Path], out_png: Path, title: str = "masked shot modeling"
) -> None:
    """Loss against step from a metrics.jsonl, or from several (label -> file) on one axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = metrics if isinstance(metrics, dict) else {"": metrics}
    curves = {
        label: [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        for label, path in runs.items()
    }
    if not any(curves.values()):
        return
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, records in curves.items():
        ax.plot([r["step"] for r in records], [r["loss"] for r in records], label=label or None)
    if len(curves) > 1:
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("masked cosine distance")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------------------


def check_resumable(saved: dict, config: ExperimentConfig, dims: DataDims) -> None:
    if saved.get("model") != dataclasses.asdict(config.model):
        raise config_lib.ConfigError(
            "the run directory holds a checkpoint of a different model config; "
            "use a new --workdir or the same model settings"
        )
    saved_dims = saved.get("data_dims") or {}
    if saved_dims.get("fused", dims.fused) != dims.fused:
        raise config_lib.ConfigError(
            f"the checkpoint was trained on fused dim {saved_dims['fused']}, "
            f"this store has {dims.fused}"
        )


def train_and_evaluate(
    config: ExperimentConfig,
    store_path: str,
    workdir: str | Path,
    devices=None,
    stop_at: int | None = None,
) -> dict[str, Any]:
    """Trains (or resumes) a run; returns a summary with the final metrics.

    ``stop_at`` stops after that step as a preemption would (save, then return), which
    is how tests and scripts split a run in two.
    """
    workdir = Path(workdir)
    is_main = jax.process_index() == 0
    if is_main:
        outputs.claim_folder(workdir, "run", inputs=[store_path])

    # -- Data --------------------------------------------------------------------------
    store = ShotStore(store_path)
    size_gb = store.num_shots * store.num_features * 2 / 1e9
    if config.data.in_memory == "yes" or (
        config.data.in_memory == "auto" and size_gb <= config.data.in_memory_max_gb
    ):
        store.load_into_memory()
    dims = data_dims(store, config.model.global_input)
    dataset = pipeline.make_dataset(
        store,
        global_batch_size=config.train.batch_size,
        max_shots=config.model.max_shots,
        seed=config.train.seed,
        split=config.data.split,
        mask_ratio=config.objective.mask_ratio,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        span_mean=config.objective.span_mean_shots,
        global_input=config.model.global_input,
    )
    iterator = pipeline.BatchIterator(
        dataset, prefetch=config.data.prefetch, threads=config.data.threads
    )

    # -- Mesh and state ----------------------------------------------------------------
    mesh = sharding.make_mesh(config.mesh, devices)
    setup = TrainSetup.create(config, dims, mesh)
    saved_config = {**config_lib.to_dict(config), "data_dims": dataclasses.asdict(dims)}
    checkpointer = Checkpointer(
        workdir, keep=config.checkpoint.keep, async_save=config.checkpoint.async_save
    )
    start_step = checkpointer.latest_step()
    if start_step is not None:
        check_resumable(checkpointer.restore_config(start_step), config, dims)
        state, data_state, _ = checkpointer.restore(start_step, setup.abstract_state)
        iterator.set_state(data_state)
        if is_main:
            print(f"resumed from {checkpointer.directory / str(start_step)}", flush=True)
    else:
        start_step = 0
        state = setup.init_state(config.train.seed)
    if is_main:
        config_lib.save_json(config, workdir / "config.json")
        n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
        print(
            f"model: {n_params:,} params; mesh {dict(mesh.shape)}; "
            f"{jax.device_count()} devices, {jax.process_count()} processes",
            flush=True,
        )
        print(optim.summary(state["params"], config.optim.kind), flush=True)

    # -- Preemption: SIGTERM saves and exits cleanly -----------------------------------
    preempted = {"flag": False}
    previous_handler = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, lambda *_: preempted.__setitem__("flag", True))
    except ValueError:  # not the main thread
        previous_handler = None

    writer = MetricsWriter(workdir, enabled=is_main)
    schedule = optim.learning_rate_schedule(
        config.optim.learning_rate, config.optim, config.train.steps
    )
    train_step = None
    pending: list[Any] = []
    window_shots, window_start = 0, time.perf_counter()
    last: dict[str, float] = {}
    step = start_step

    def flush_metrics(at_step: int) -> dict[str, float]:
        nonlocal pending, window_shots, window_start
        fetched = jax.device_get(pending)
        elapsed = time.perf_counter() - window_start
        record = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[-1]}
        if not np.isfinite(record["loss"]) or not all(
            np.isfinite(float(m["loss"])) for m in fetched
        ):
            raise NonFiniteLossError(
                f"loss is not finite at or before step {at_step}; the run stopped without "
                "checkpointing this state (try a lower optim.learning_rate or optim.clip_norm)"
            )
        record.update(
            step=at_step,
            shots_per_s=window_shots / max(elapsed, 1e-9),
            step_time_s=elapsed / len(fetched),
            learning_rate=float(schedule(at_step)),
        )
        pending, window_shots, window_start = [], 0, time.perf_counter()
        return record

    try:
        for step in range(start_step, config.train.steps):
            host_batch = next(iterator)
            window_shots += int(host_batch["valid"].sum()) * jax.process_count()
            batch = sharding.global_batch(host_batch, mesh)
            if train_step is None:
                train_step = setup.jit_train_step(host_batch)
            with jax.set_mesh(mesh):
                state, metrics = train_step(state, batch, step_key(config.train.seed, step))
            pending.append(metrics)
            done = step + 1
            at_log = done % config.train.log_every == 0 or done == config.train.steps
            at_save = done % config.checkpoint.every_steps == 0 or done == config.train.steps
            if stop_at is not None and done >= stop_at:
                preempted["flag"] = True
            if at_log or at_save or preempted["flag"]:
                last = flush_metrics(done)
                if at_log:
                    writer.write(last, config.train.steps)
            if at_save or preempted["flag"]:
                checkpointer.save(done, state, iterator.get_state(), saved_config)
            if preempted["flag"]:
                if is_main:
                    print(f"stopped early: saved step {done}", flush=True)
                break
        checkpointer.wait()
    finally:
        checkpointer.close()
        writer.close()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    if is_main and (workdir / "metrics.jsonl").exists():
        plot_loss_curve(workdir / "metrics.jsonl", workdir / "plots" / "loss.png")
    return {"state": state, "last": last, "preempted": preempted["flag"], "setup": setup}
