"""`mediafm plan`: what a config costs on a target, before renting it.

Parameters (exact: counted on the model itself, built abstractly; the Muon share by the
optimizer's own partition rule), training FLOPs per shot, memory per device
(parameters, gradients, optimizer state, activations with and without remat), shots/s per
host at a target MFU, the input bandwidth that implies, and whether the catalog fits in
host RAM. Estimates are first-order: they say which resource binds, not the last percent.
"""

from __future__ import annotations

import dataclasses
import math

import jax
from flax import nnx

from mediafm_jax import optim
from mediafm_jax.config import ExperimentConfig, resolve_mesh_shape
from mediafm_jax.model import DataDims, abstract_encoder


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    bf16_flops: float  # dense peak per chip
    hbm_bytes: float
    chips_per_host: int
    host_ram_bytes: float


CHIPS = {
    "v5p": Chip("TPU v5p", 459e12, 95e9, 4, 448e9),
    "v5e": Chip("TPU v5e", 197e12, 16e9, 8, 192e9),
    "h100": Chip("NVIDIA H100 SXM", 989e12, 80e9, 8, 2000e9),
    "h200": Chip("NVIDIA H200", 989e12, 141e9, 8, 2000e9),
}


@dataclasses.dataclass(frozen=True)
class Plan:
    params: int
    matmul_params: int
    flops_per_shot: float
    param_bytes_per_device: float
    grad_bytes_per_device: float
    optimizer_bytes_per_device: float
    activation_bytes_per_device: float
    activation_bytes_per_device_remat: float
    shots_per_s_per_host: float
    input_bytes_per_s_per_host: float
    catalog_bytes: float
    catalog_fits_host_ram: bool
    mesh: tuple[int, int, int]


def count_params(config: ExperimentConfig, fused: int, title: int) -> tuple[int, int, int]:
    """(all params, params of the block matrices, params Muon trains), counted on the model.

    The model's shapes come from ``model.abstract_encoder`` (nothing allocated); the block
    matrices are the leaves ``optim.param_labels`` routes to Muon, so the plan and the
    optimizer share one partition rule.
    """
    dims = DataDims(fused, title, ((0, fused),))
    _, abstract_params = abstract_encoder(
        config.model, dims, boundary_head=config.objective.boundary_head
    )
    params = nnx.to_pure_dict(abstract_params)
    sizes = [math.prod(p.shape) for p in jax.tree.leaves(params)]
    labels = jax.tree.leaves(optim.param_labels(params))
    matrices = sum(s for s, label in zip(sizes, labels, strict=True) if label == "muon")
    return sum(sizes), matrices, matrices


def train_flops_per_shot(
    hidden: int, layers: int, mlp: int, window: int, fused: int, mask_ratio: float
) -> float:
    """Training FLOPs (forward + backward) per shot of a full window of ``window`` shots:
    6 x block matmul params x tokens + attention + input and (at the ``mask_ratio`` of
    shots that are targets) output projections; the optimizer is not counted."""
    t = window + 2
    blocks = 6 * layers * (4 * hidden**2 + 2 * hidden * mlp) * t / window
    attention = 12 * layers * t * t * hidden / window
    projections = 6 * fused * hidden * (1 + mask_ratio)
    return blocks + attention + projections


def flops_per_shot(config: ExperimentConfig, fused: int) -> float:
    """``train_flops_per_shot`` of a config's model and masking objective."""
    m = config.model
    return train_flops_per_shot(
        m.hidden_size, m.num_layers, m.mlp_size, m.max_shots, fused, config.objective.mask_ratio
    )


def make_plan(
    config: ExperimentConfig,
    devices: int,
    chip: Chip,
    fused: int = 2304,
    title: int = 768,
    catalog_shots: int = 10_000_000,
    mfu: float = 0.45,
) -> Plan:
    for flag, value, ok, want in (
        ("--devices", devices, devices >= 1, "a count >= 1"),
        ("--mfu", mfu, 0 < mfu <= 1, "a fraction in (0, 1]"),
        ("--fused", fused, fused >= 1, "a dim >= 1"),
        ("--title-dim", title, title >= 0, "a dim >= 0"),
        ("--catalog-shots", catalog_shots, catalog_shots >= 1, "a count >= 1"),
    ):
        if not ok:  # a plan of 0 devices or -1 MFU is a traceback or nonsense numbers
            raise ValueError(f"{flag} {value}: expected {want}")
    mesh = resolve_mesh_shape(config.mesh, devices)
    data, fsdp, tensor = mesh
    params, matmul, muon = count_params(config, fused, title)
    m = config.model
    shard = fsdp * tensor  # the block matrices are split over both
    param_bytes = 4 * (matmul / shard + (params - matmul) / fsdp)
    optimizer_bytes = 4 * (muon / shard + 2 * (params - muon) / fsdp)
    if config.optim.kind == "adamw":
        optimizer_bytes = 2 * param_bytes
    windows_per_device = max(1, config.train.batch_size // (data * fsdp))
    tokens = windows_per_device * (m.max_shots + 2)
    act = 2 if m.compute_dtype == "bfloat16" else 4
    # Per layer and token, saved for backward: ~10 hidden-sized tensors + 2 mlp-sized
    # (flash attention keeps no T x T matrix), split over tensor where the dim is.
    per_layer = tokens * (10 * m.hidden_size + 2 * m.mlp_size / tensor) * act
    activations = m.num_layers * per_layer
    remat = m.num_layers * tokens * m.hidden_size * act + per_layer
    shots_per_s = chip.bf16_flops * mfu / flops_per_shot(config, fused) * chip.chips_per_host
    catalog = catalog_shots * fused * 2
    return Plan(
        params=params,
        matmul_params=matmul,
        flops_per_shot=flops_per_shot(config, fused),
        param_bytes_per_device=param_bytes,
        grad_bytes_per_device=param_bytes,
        optimizer_bytes_per_device=optimizer_bytes,
        activation_bytes_per_device=activations,
        activation_bytes_per_device_remat=remat,
        shots_per_s_per_host=shots_per_s,
        input_bytes_per_s_per_host=shots_per_s * fused * 2,
        catalog_bytes=catalog,
        catalog_fits_host_ram=catalog < 0.5 * chip.host_ram_bytes,
        mesh=mesh,
    )


def format_plan(plan: Plan, chip: Chip, devices: int, mfu: float) -> str:
    gb = lambda b: f"{b / 1e9:,.2f} GB"
    total = (
        plan.param_bytes_per_device + plan.grad_bytes_per_device + plan.optimizer_bytes_per_device
    )
    hosts = max(1, math.ceil(devices / chip.chips_per_host))
    lines = [
        f"target               {devices} x {chip.name} ({hosts} host(s)), mesh data x fsdp x tensor = "
        + " x ".join(map(str, plan.mesh)),
        f"parameters           {plan.params:,} ({plan.matmul_params:,} in block matrices)",
        f"train FLOPs / shot   {plan.flops_per_shot / 1e9:,.3f} GFLOP",
        f"per device: params   {gb(plan.param_bytes_per_device)}  grads {gb(plan.grad_bytes_per_device)}  "
        f"optimizer {gb(plan.optimizer_bytes_per_device)}",
        f"per device: activ.   {gb(plan.activation_bytes_per_device)} (remat: "
        f"{gb(plan.activation_bytes_per_device_remat)}); total with remat "
        f"{gb(total + plan.activation_bytes_per_device_remat)} of {gb(chip.hbm_bytes)} HBM",
        f"throughput / host    {plan.shots_per_s_per_host:,.0f} shots/s at {mfu:.0%} MFU",
        f"input / host         {plan.input_bytes_per_s_per_host / 1e9:,.2f} GB/s of shot data",
        f"catalog              {gb(plan.catalog_bytes)}: "
        + (
            "fits in host RAM (data.in_memory=auto)"
            if plan.catalog_fits_host_ram
            else "stream from TensorStore (data.in_memory=no)"
        ),
    ]
    return "\n".join(lines)
