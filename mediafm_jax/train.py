"""Training: a pure ``train_step``, its sharded set-up, and ``train``, the loop.

Read top to bottom: the update step; the set-up (model, shardings, optimizer, state);
metrics; resume and stop; then ``train``, cut into banner sections (checks, data, mesh and
state, compile, the loop, the end) as big_vision's ``train.py`` is.

The model is Flax NNX, used functionally at the jit boundary: ``nnx.split`` gives a static
graph definition and a pure dict of fp32 parameters; the train state is the pytree
``{"step", "params", "opt_state"}``; ``train_step(state, batch, key, *, ...) -> (state,
metrics)`` is jitted with explicit in/out shardings, the state donated, and compiled before
the first step.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import signal
import sys
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
from mediafm_jax import optim, outputs, run, sharding
from mediafm_jax.checkpoint import Checkpointer
from mediafm_jax.config import ExperimentConfig, ObjectiveConfig
from mediafm_jax.data import pipeline
from mediafm_jax.data.store import ShotStore
from mediafm_jax.errors import ConfigError, NonFiniteLossError, UsageError
from mediafm_jax.model import DataDims, Encoder, abstract_encoder
from mediafm_jax.objective import msm_loss
from mediafm_jax.streams import step_key

# ---------------------------------------------------------------------------------------
# The update step: a pure function of pytrees.
# ---------------------------------------------------------------------------------------


def train_step(
    state: dict[str, Any],
    batch: dict[str, jax.Array],
    key: jax.Array,
    *,
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    objective: ObjectiveConfig,
) -> tuple[dict[str, Any], dict[str, jax.Array]]:
    """One optimizer step on a global batch; metrics carry grad/update/param norms."""

    def loss_fn(params):
        return msm_loss(nnx.merge(graphdef, params), batch, objective, key=key, train=True)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = dict(metrics)
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["update_norm"] = optax.tree.norm(updates)
    metrics["param_norm"] = optax.tree.norm(params)
    return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics


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
    param_shardings: Any
    state_shardings: Any
    optimizer: optax.GradientTransformation
    abstract_state: Any

    @classmethod
    def create(cls, config: ExperimentConfig, dims: DataDims, mesh: Mesh) -> TrainSetup:
        graphdef, abstract_vars = abstract_encoder(
            config.model, dims, boundary_head=config.objective.boundary_head
        )
        abstract_params = nnx.to_pure_dict(abstract_vars)
        param_shardings = sharding.param_shardings(
            abstract_params, sharding.param_axes(abstract_vars), mesh
        )
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
            param_shardings,
            state_shardings,
            optimizer,
            abstract_state,
        )

    def init_state(self, seed: int) -> dict[str, Any]:
        """Parameters are created already sharded: no full copy on one device."""

        def init(key):
            head = self.config.objective.boundary_head
            model = Encoder(self.config.model, self.dims, nnx.Rngs(params=key), head)
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

    def jit_train_step(self, example_batch: dict[str, Any]) -> Callable:
        """``train_step`` jitted for batches shaped like ``example_batch`` (host or global)."""
        replicated = NamedSharding(self.mesh, PartitionSpec())
        step = functools.partial(
            train_step,
            graphdef=self.graphdef,
            optimizer=self.optimizer,
            objective=self.config.objective,
        )
        return jax.jit(
            step,
            in_shardings=(self.state_shardings, self.batch_shardings(example_batch), replicated),
            out_shardings=(self.state_shardings, replicated),
            donate_argnums=(0,),
        )

    def compile_train_step(self, state: Any, host_batch: dict[str, np.ndarray], key) -> Callable:
        """The step compiled ahead of the loop for the global batch ``host_batch`` is part
        of (every process's share has the same shape)."""
        n, shardings = jax.process_count(), self.batch_shardings(host_batch)
        global_spec = {
            k: jax.ShapeDtypeStruct((v.shape[0] * n, *v.shape[1:]), v.dtype, sharding=shardings[k])
            for k, v in host_batch.items()
        }
        with jax.set_mesh(self.mesh):
            return self.jit_train_step(host_batch).lower(state, global_spec, key).compile()


# ---------------------------------------------------------------------------------------
# Metrics: every step in exactly one record.
# ---------------------------------------------------------------------------------------


class MetricsAccumulator:
    """Device metrics of the steps since the last record, averaged into the next one.

    Nothing is fetched per step (the device runs ahead); a record covers every step since
    the previous record, so no step is dropped or counted twice. ``check_finite`` fetches
    without closing the window, for a save that must not checkpoint a diverged state.
    """

    def __init__(self, first_step: int):
        self.pending: list[Any] = []
        self.fetched: list[dict[str, float]] = []
        self.shots = 0
        self.since = first_step  # the last step already recorded
        self.started = time.perf_counter()

    def add(self, metrics: Any, shots: int) -> None:
        self.pending.append(metrics)
        self.shots += shots

    def check_finite(self, at_step: int) -> None:
        self.fetched += [{k: float(v) for k, v in m.items()} for m in jax.device_get(self.pending)]
        self.pending = []
        if not all(np.isfinite(m["loss"]) for m in self.fetched):
            raise NonFiniteLossError(
                f"loss is not finite at or before step {at_step}; the run stopped without "
                "checkpointing this state (try a lower optim.learning_rate or optim.clip_norm)"
            )

    def record(self, at_step: int) -> dict[str, float]:
        """The mean of steps (since, at_step], with throughput; starts the next window."""
        self.check_finite(at_step)
        steps = len(self.fetched)
        assert steps == at_step - self.since, (steps, at_step, self.since)
        elapsed = time.perf_counter() - self.started
        record = {k: float(np.mean([m[k] for m in self.fetched])) for k in self.fetched[0]}
        record.update(
            step=at_step,
            steps=steps,
            shots_per_s=self.shots / max(elapsed, 1e-9),
            step_time_s=elapsed / steps,
        )
        self.fetched, self.shots, self.since = [], 0, at_step
        self.started = time.perf_counter()
        return record


def _summary_writer_class() -> type:
    """tensorboardX's ``SummaryWriter``, imported without torch. tensorboardX imports torch
    when it is installed only to accept torch tensors, 2-3 s of every ``mediafm train``
    start; we log floats. ``import torch`` raises ImportError inside the import, which
    tensorboardX catches; torch imports normally afterwards."""
    hold_off = "torch" not in sys.modules  # an imported torch stays as it is
    if hold_off:
        sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hold_off:
            del sys.modules["torch"]
    return SummaryWriter


class MetricsWriter:
    """metrics.jsonl + TensorBoard + a progress line; a no-op off process 0."""

    def __init__(self, workdir: Path, enabled: bool):
        self.enabled = enabled
        self.path = workdir / "metrics.jsonl"
        self.tb = None
        if enabled:
            self.tb = _summary_writer_class()(str(workdir / "tb"))

    def write(self, record: dict[str, float], total_steps: int) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step":
                self.tb.add_scalar(f"train/{key}", value, record["step"])
        self.tb.flush()
        muon = record.get("muon_learning_rate")
        print(
            f"step {record['step']:>6d}/{total_steps}  loss {record['loss']:.4f}  "
            f"cos {record['masked_cosine']:.3f}  |g| {record['grad_norm']:.3f}  "
            f"lr {record['learning_rate']:.2e}{'' if muon is None else f' (muon {muon:.2e})'}  "
            f"{record['shots_per_s']:,.0f} shots/s  {record['step_time_s'] * 1e3:.0f} ms/step",
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


# Settings a resumed run may change: they set how long it runs, how often it logs and
# saves, and how fast its input and devices go, never what it computes.
RESUMABLE_CHANGES = (
    "train.steps",
    "train.log_every",
    "checkpoint.every_steps",
    "checkpoint.keep",
    "checkpoint.async_save",
    "data.threads",
    "data.prefetch",
    "data.in_memory",
    "data.in_memory_max_gb",
    "mesh.data",
    "mesh.fsdp",
    "mesh.tensor",
    "store.root",  # the same data (checksum) at another path
)


def config_changes(saved: dict, current: dict) -> dict[str, tuple[Any, Any]]:
    """``{key: (old, new)}`` for every flattened key that differs; keys the saved record
    lacks (written by an older version) are not compared."""
    old, new = config_lib.flatten(saved), config_lib.flatten(current)
    return {k: (old[k], new.get(k)) for k in sorted(old) if k in new and old[k] != new[k]} | {
        k: (old[k], None) for k in sorted(old) if k not in new
    }


def _resume_guard(workdir: Path, current: dict, allow_change: bool) -> Callable[[int, dict], None]:
    """``check_config`` for the checkpoint search: a resume that would mix two runs stops
    with a readable diff, unless ``--allow-config-change`` records it in the history."""

    def check(step: int, saved: dict) -> None:
        changes = config_changes(run.upgrade(saved), current)
        moved = changes.pop("store.root", None)
        blocking = {k: v for k, v in changes.items() if k not in RESUMABLE_CHANGES}
        if moved is not None and jax.process_index() == 0:
            print(f"resume: the store moved: {moved[0]} -> {moved[1]} (same checksum)")
        if not blocking:
            return
        diff = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in blocking.items())
        if not allow_change:
            raise ConfigError(
                f"{workdir}: resuming step {step} with other settings than the run's: {diff} "
                "(use a new --workdir, or pass --allow-config-change to continue with them)"
            )
        if jax.process_index() == 0:
            entry = {
                "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "step": step,
                "changes": {k: [a, b] for k, (a, b) in blocking.items()},
            }
            with (workdir / run.HISTORY_FILE).open("a") as f:
                f.write(json.dumps(entry) + "\n")
            print(f"resume: continuing step {step} with changed settings: {diff}", flush=True)

    return check


def cut_metrics(path: Path, step: int) -> int:
    """Drops records after ``step`` (they are replayed on resume); returns how many."""
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    keep = [line for line in lines if json.loads(line)["step"] <= step]
    if len(keep) < len(lines):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        tmp.replace(path)
    return len(lines) - len(keep)


def _check_workdir_path(workdir: Path) -> None:
    """A workdir that is a file, or lies under one, is a one-line error, not a traceback."""
    for path in (workdir, *workdir.absolute().parents):
        if path.exists() and not path.is_dir():
            where = "is a file" if path == workdir else f"is under the file {path}"
            raise UsageError(f"--workdir {workdir}: {where}")


class StopSignal:
    """When to stop early, agreed by every process.

    One process: a SIGTERM handler sets a flag. Several: JAX's preemption service (its
    own SIGTERM notifier, so no Python handler here) picks the next step every process
    reaches and ``reached_preemption_sync_point`` turns true there on all of them, at no
    cost to the steps before it. ``stop_at`` is a planned stop, not a preemption.
    """

    def __init__(self, stop_at: int | None):
        self.stop_at = stop_at
        self.reason: str | None = None
        self.flag = False
        self.previous = None
        self.multi = jax.process_count() > 1
        if not self.multi:
            try:
                self.previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            except ValueError:  # not the main thread
                self.previous = None

    def _on_sigterm(self, *_: Any) -> None:
        self.flag = True

    def should_stop(self, done: int) -> bool:
        if self.multi:
            from jax.experimental import multihost_utils

            try:
                if multihost_utils.reached_preemption_sync_point(done):
                    self.reason = "preempted"
            except RuntimeError as err:  # jax_enable_preemption_service is off
                print(f"preemption sync unavailable ({err}); SIGTERM will not save", flush=True)
                self.multi = False
        elif self.flag:
            self.reason = "preempted"
        if self.reason is None and self.stop_at is not None and done >= self.stop_at:
            self.reason = "stop_at"
        return self.reason is not None

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def train(
    config: ExperimentConfig,
    store_path: str,
    workdir: str | Path,
    devices=None,
    stop_at: int | None = None,
    allow_config_change: bool = False,
) -> dict[str, Any]:
    """Trains (or resumes) a run; returns a summary with the final metrics.

    ``stop_at`` stops after that step as a preemption would (save, then return), which
    is how tests and scripts split a run in two; it is reported as a planned stop.
    ``allow_config_change`` lets a resume change settings beyond run length and cadence
    (recorded in config_history.jsonl). Everything that can be checked is checked before
    the run directory is touched.
    """
    # -- Checks, before anything is written ----------------------------------------------
    workdir = Path(workdir)
    is_main = jax.process_index() == 0
    num_devices = len(devices) if devices is not None else jax.device_count()
    config_lib.validate(config, num_devices, jax.process_count())
    if stop_at is not None and stop_at < 1:
        raise UsageError(f"--stop-at {stop_at}: expected a step >= 1")
    _check_workdir_path(workdir)
    store = ShotStore(store_path)
    if is_main:
        outputs.claim_folder(workdir, "run", owns=run.LAYOUT, inputs=[store_path])

    # -- Data ----------------------------------------------------------------------------
    size_gb = store.num_shots * store.num_features * 2 / 1e9
    if config.data.in_memory == "yes" or (
        config.data.in_memory == "auto" and size_gb <= config.data.in_memory_max_gb
    ):
        store.load_into_memory()
    dims = run.data_dims(store, config.model.global_input)
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

    # -- Mesh and state: resume from the newest checkpoint that verifies -----------------
    mesh = sharding.make_mesh(config.mesh, devices)
    setup = TrainSetup.create(config, dims, mesh)
    saved_config = run.record(config, dims, store)
    checkpointer = Checkpointer(
        workdir, keep=config.checkpoint.keep, async_save=config.checkpoint.async_save
    )
    start_step = 0
    if checkpointer.all_steps():
        guard = _resume_guard(workdir, json.loads(json.dumps(saved_config)), allow_config_change)
        try:
            restored = checkpointer.restore_newest(setup.abstract_state, check_config=guard)
        except BaseException:
            checkpointer.close()
            raise
        checkpointer.set_aside([s for s, _ in restored.skipped])
        start_step, state = restored.step, restored.state
        iterator.set_state(restored.data)
        if is_main:
            print(f"resumed from {checkpointer.directory / str(start_step)}", flush=True)
    else:
        state = setup.init_state(config.train.seed)

    # -- Stopping early: SIGTERM (agreed by all processes) or --stop-at -----------------
    stop = StopSignal(stop_at)  # before the summary below: once it prints, SIGTERM saves
    if is_main:
        dropped = cut_metrics(workdir / "metrics.jsonl", start_step)
        if dropped:
            print(f"metrics.jsonl: dropped {dropped} records after step {start_step}", flush=True)
        config_lib.save_json(config, workdir / run.CONFIG_FILE)
        n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
        print(
            f"model: {n_params:,} params; mesh {dict(mesh.shape)}; "
            f"{jax.device_count()} devices, {jax.process_count()} processes",
            flush=True,
        )
        print(optim.summary(state["params"], config.optim.kind), flush=True)

    # -- Compile the step, before the loop -----------------------------------------------
    if start_step < config.train.steps:
        host_batch = next(iterator)
        key = step_key(config.train.seed, start_step)
        step_fn = setup.compile_train_step(state, host_batch, key)

    # -- The loop ------------------------------------------------------------------------
    writer = MetricsWriter(workdir, enabled=is_main)
    rates = optim.learning_rates(config.optim, config.train.steps)
    metrics = MetricsAccumulator(start_step)
    last: dict[str, float] = {}
    stopped = None
    try:
        for step in range(start_step, config.train.steps):
            if step > start_step:
                host_batch = next(iterator)
            batch = sharding.global_batch(host_batch, mesh)
            with jax.set_mesh(mesh):
                state, step_metrics = step_fn(state, batch, step_key(config.train.seed, step))
            metrics.add(step_metrics, int(host_batch["valid"].sum()) * jax.process_count())
            done = step + 1
            at_log = done % config.train.log_every == 0 or done == config.train.steps
            at_save = done % config.checkpoint.every_steps == 0 or done == config.train.steps
            stopping = stop.should_stop(done) and done < config.train.steps
            if at_log or at_save or stopping:  # a record at every save: none lost to a crash
                last = metrics.record(done) | {k: float(lr(done)) for k, lr in rates.items()}
                writer.write(last, config.train.steps)
            if at_save or stopping:
                checkpointer.save(done, state, iterator.get_state(), saved_config)
            if stopping:
                stopped = stop.reason
                if stopped == "preempted":
                    line = f"preempted (SIGTERM): saved step {done}"
                else:
                    line = f"stopped at step {done} as asked (--stop-at): saved"
                if is_main or stop.multi:
                    who = f"process {jax.process_index()}: " if stop.multi else ""
                    print(f"{who}{line}; rerun the same command to resume", flush=True)
                break
        checkpointer.wait()
    finally:
        checkpointer.close()
        writer.close()
        stop.restore()

    # -- The end -------------------------------------------------------------------------
    if is_main and (workdir / "metrics.jsonl").exists():
        plot_loss_curve(workdir / "metrics.jsonl", workdir / "plots" / "loss.png")
    return {
        "state": state,
        "last": last,
        "preempted": stopped == "preempted",
        "stopped": stopped,  # None (ran to the end), "preempted" or "stop_at"
        "setup": setup,
    }
