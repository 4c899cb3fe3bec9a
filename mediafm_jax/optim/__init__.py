"""The optimizer: which leaves Muon trains, and the optax chain around it.

Muon takes the hidden matrices of the encoder blocks (q, k, v, o, mlp_in, mlp_out
kernels); AdamW takes everything else (input/output/[GLOBAL] projections, [CLS]/[MASK],
positions, norms, biases). Gradient clipping comes first; gradient accumulation wraps the
whole chain, so Newton-Schulz runs once per optimizer step, never per micro-batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mediafm_jax.config import OptimConfig
from mediafm_jax.optim.muon import scale_by_muon
from mediafm_jax.sharding import path_key

MUON_MATRICES = ("q", "k", "v", "o", "mlp_in", "mlp_out")


def _names(path) -> list[str]:
    return [str(k) for k in path_key(path)]


def param_labels(params: Any, kind: str = "muon_adamw") -> Any:
    """'muon' or 'adamw' for every leaf (a tree shaped like ``params``)."""

    def label(path, leaf) -> str:
        names = _names(path)
        is_block_matrix = (
            kind == "muon_adamw"
            and "blocks" in names
            and len(names) >= 2
            and names[-1] == "kernel"
            and names[-2] in MUON_MATRICES
        )
        if is_block_matrix and jnp.ndim(leaf) != 2:
            raise ValueError(
                f"{'/'.join(names)}: a block matrix must be 2-D, got {jnp.shape(leaf)}"
            )
        return "muon" if is_block_matrix else "adamw"

    return jax.tree_util.tree_map_with_path(label, params)


def decay_mask(params: Any) -> Any:
    """Weight decay on 2-D kernels only (not biases, norms, tokens or positions)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: _names(path)[-1] == "kernel" and jnp.ndim(leaf) == 2, params
    )


def summary(params: Any, kind: str = "muon_adamw") -> str:
    """A printable table: leaves and parameters per optimizer group."""
    labels = jax.tree.leaves(param_labels(params, kind))
    sizes = [math.prod(jnp.shape(p)) for p in jax.tree.leaves(params)]
    lines = ["optimizer groups:"]
    for group in ("muon", "adamw"):
        count = sum(1 for label in labels if label == group)
        total = sum(s for s, label in zip(sizes, labels, strict=True) if label == group)
        lines.append(f"  {group:<6} {count:4d} leaves {total:>12,d} params")
    return "\n".join(lines)


def learning_rate_schedule(peak: float, config: OptimConfig, total_steps: int) -> optax.Schedule:
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=peak * config.min_lr_ratio,
    )


def learning_rates(config: OptimConfig, total_steps: int) -> dict[str, optax.Schedule]:
    """Each optimizer group's schedule, under the metrics key it is logged as (Muon's
    peak is ``muon_learning_rate``, else ``learning_rate``: the moonlight scale)."""
    rates = {"learning_rate": learning_rate_schedule(config.learning_rate, config, total_steps)}
    if config.kind == "muon_adamw":
        muon_peak = config.muon_learning_rate or config.learning_rate
        rates["muon_learning_rate"] = learning_rate_schedule(muon_peak, config, total_steps)
    return rates


def stack_sharding_for(mesh: Mesh | None):
    """The gather-free layout's stack sharding on the mesh's fsdp axis (None: off)."""
    if mesh is None or mesh.shape["fsdp"] == 1:
        return None
    shards = mesh.shape["fsdp"]
    return lambda n: (NamedSharding(mesh, PartitionSpec("fsdp", None, None)), shards)


def stack_newton_schulz(mode: str, mesh: Mesh | None) -> bool:
    """``optim.muon_stack``: "auto" stacks except on CPUs (a batched product is one kernel
    on a GPU/TPU; XLA:CPU loops over the batch, and stacking measured no faster there)."""
    if mode == "auto":
        platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
        return platform != "cpu"
    return mode == "on"


def build_optimizer(
    config: OptimConfig, total_steps: int, params: Any, mesh: Mesh | None = None
) -> optax.GradientTransformation:
    """Clip -> (Muon on block matrices | AdamW on the rest), under optional accumulation."""
    rates = learning_rates(config, total_steps)
    adamw = optax.adamw(
        rates["learning_rate"],
        b1=config.b1,
        b2=config.b2,
        eps=config.eps,
        weight_decay=config.weight_decay,
        mask=decay_mask,
    )
    transforms: Mapping[str, optax.GradientTransformation] = {"adamw": adamw}
    if config.kind == "muon_adamw":
        transforms = {
            "adamw": adamw,
            "muon": optax.chain(
                scale_by_muon(
                    beta=config.muon_momentum,
                    nesterov=config.muon_nesterov,
                    ns_steps=config.muon_ns_steps,
                    ns_dtype=jnp.dtype(config.muon_ns_dtype),
                    scale=config.muon_scale,
                    stack_sharding=stack_sharding_for(mesh) if config.muon_gather_free else None,
                    stack=stack_newton_schulz(config.muon_stack, mesh),
                    ns_coeffs=config.muon_ns_coeffs,
                ),
                optax.add_decayed_weights(config.weight_decay),
                optax.scale_by_learning_rate(rates["muon_learning_rate"]),
            ),
        }
    chain = optax.partition(transforms, lambda p: param_labels(p, config.kind))
    if config.clip_norm:
        chain = optax.chain(optax.clip_by_global_norm(config.clip_norm), chain)
    if config.accumulate_steps > 1:
        chain = optax.MultiSteps(chain, every_k_schedule=config.accumulate_steps)
    return chain
