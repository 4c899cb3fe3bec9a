"""`mediafm plan`: what a config costs on a target, before renting it.

Parameters (exact, from the model itself), training FLOPs per shot, memory per device
(parameters, gradients, optimizer state, activations with and without remat), shots/s per
host at a target MFU, the input bandwidth that implies, and whether the catalog fits in
host RAM. Estimates are first-order: they say which resource binds, not the last percent.
"""

from __future__ import annotations

import dataclasses
import math

from mediafm_jax.config import ExperimentConfig
from mediafm_jax.sharding import resolve_mesh_shape


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
    """(all params, matmul params of the blocks, Muon params), by formula."""
    m = config.model
    h, f = m.hidden_size, m.mlp_size
    block_matrices = 4 * h * h + 2 * h * f
    block_other = 3 * h + f + h + 4 * h  # q/v/o biases, mlp biases, two LayerNorms
    blocks = m.num_layers * (block_matrices + block_other)
    embed = fused * h + h + max(title, 1) * h + h + 2 * h + (m.max_shots + 2) * h + 2 * h
    final = 0 if m.post_ln else 2 * h
    output = h * fused + fused
    return (
        blocks + embed + final + output,
        m.num_layers * block_matrices,
        m.num_layers * block_matrices,
    )


def flops_per_shot(config: ExperimentConfig, fused: int, mask_ratio: float = 0.2) -> float:
    """Training FLOPs per shot: 6 x matmul params + attention + input/output projections."""
    m = config.model
    t = m.max_shots + 2
    blocks = (
        6 * m.num_layers * (4 * m.hidden_size**2 + 2 * m.hidden_size * m.mlp_size) * t / m.max_shots
    )
    attention = 12 * m.num_layers * t * t * m.hidden_size / m.max_shots
    projections = 6 * fused * m.hidden_size * (1 + mask_ratio)
    return blocks + attention + projections


def make_plan(
    config: ExperimentConfig,
    devices: int,
    chip: Chip,
    fused: int = 2304,
    title: int = 768,
    catalog_shots: int = 10_000_000,
    mfu: float = 0.45,
) -> Plan:
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
