"""Mesh, logical-axis rules, state and batch shardings, multi-host start-up.

The mesh has three axes (data, fsdp, tensor), built with ``AxisType.Auto`` so that
``NamedSharding``s from logical rules drive XLA's propagation. Model parameters carry
logical names (``embed``, ``heads``, ``mlp``, ...; see ``model.py``); ``LOGICAL_RULES``
maps them to mesh axes. A dimension that its mesh axes do not divide stays replicated.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from mediafm_jax.config import MeshConfig, resolve_mesh_shape

MESH_AXES = ("data", "fsdp", "tensor")
LOGICAL_RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),
    "embed": "fsdp",
    "heads": "tensor",
    "mlp": "tensor",
    "features": None,
    "boundary": None,  # the pseudo-boundary head's one output
    "title": None,
    "pos": None,
    "norm": None,
}


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(devices) if devices is not None else jax.devices()
    shape = resolve_mesh_shape(config, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def logical_to_spec(
    axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: Mapping = LOGICAL_RULES
) -> PartitionSpec:
    """The PartitionSpec of one array; dims its mesh axes do not divide are replicated."""
    spec = []
    for name, dim in zip(axes, shape, strict=True):
        target = rules.get(name) if name is not None else None
        if target is not None:
            names = (target,) if isinstance(target, str) else tuple(target)
            size = math.prod(mesh.shape[n] for n in names)
            if size == 1 or dim % size:
                target = None
        spec.append(target)
    return PartitionSpec(*spec)


def param_axes(model_state: nnx.State) -> dict:
    """The pure-dict tree of logical axis names of a model's Params."""
    axes = jax.tree.map(
        lambda v: v.axes, model_state, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )
    return nnx.to_pure_dict(axes) if isinstance(axes, nnx.State) else axes


def param_shardings(abstract_params: Any, axes: Any, mesh: Mesh) -> Any:
    return jax.tree.map(
        lambda p, a: NamedSharding(mesh, logical_to_spec(a, p.shape, mesh)),
        abstract_params,
        axes,
        is_leaf=lambda x: isinstance(x, tuple) and all(isinstance(n, str | None) for n in x),
    )


def path_key(path) -> tuple:
    """A pytree key path as plain values: dict keys, sequence indices, attribute names."""
    return tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path)


def opt_state_shardings(
    optimizer: optax.GradientTransformation, abstract_opt: Any, params_shardings: Any, mesh: Mesh
) -> Any:
    """Shardings of an optimizer state: every parameter-shaped copy in it (momenta, second
    moments, accumulated gradients) takes the parameters' shardings; the rest (counters) is
    replicated. ``optax.tree_map_params`` finds the copies by initializing the optimizer on
    a placeholder; a parameter that a partition masks out stays an empty ``MaskedNode``.
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    return optax.tree_map_params(
        optimizer,
        lambda leaf, sharding: leaf if isinstance(leaf, optax.MaskedNode) else sharding,
        abstract_opt,
        params_shardings,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, optax.MaskedNode),
    )


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Leading (batch) dim over (data, fsdp); the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(LOGICAL_RULES["batch"], *([None] * (ndim - 1))))


def global_batch(host_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Host-local batch rows -> global arrays sharded over (data, fsdp)."""
    return {
        key: jax.make_array_from_process_local_data(batch_sharding(mesh, value.ndim), value)
        for key, value in host_batch.items()
    }


def maybe_initialize_distributed(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> bool:
    """Starts JAX's multi-controller runtime when launched as one of several processes.

    Explicit arguments win; otherwise MEDIAFM_COORDINATOR / MEDIAFM_NUM_PROCESSES /
    MEDIAFM_PROCESS_ID; otherwise JAX's own detection on TPU pods and under SLURM.
    """
    coordinator = coordinator or os.environ.get("MEDIAFM_COORDINATOR")
    if num_processes is None and "MEDIAFM_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["MEDIAFM_NUM_PROCESSES"])
    if process_id is None and "MEDIAFM_PROCESS_ID" in os.environ:
        process_id = int(os.environ["MEDIAFM_PROCESS_ID"])
    if coordinator:
        if os.environ.get("JAX_PLATFORMS", "").startswith("cpu"):
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator, num_processes, process_id)
        return True
    if "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()
        return True
    if os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0:
        jax.distributed.initialize()
        return True
    return False
