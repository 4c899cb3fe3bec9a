"""Muon, written by hand as an optax ``GradientTransformation`` (docs/DESIGN.md §5).

update = scale(shape) * NS(nesterov(momentum(g))), with NS the quintic Newton-Schulz
iteration that maps a matrix to (nearly) the orthogonal factor of its polar decomposition.

- momentum in fp32 (EMA form, beta 0.95), Nesterov on/off, optional bias correction that
  makes it match ``optax.contrib.muon`` exactly;
- NS: Frobenius-normalize (+eps), transpose tall matrices, T steps of
  X <- a X + (b A + c A^2) X with A = X X^T, in ``ns_dtype`` (bf16 by default);
- scale: ``keller`` sqrt(max(1, fan_out / fan_in)), ``moonlight`` rms * sqrt(max(fan_in,
  fan_out)) (update RMS ~ rms, like AdamW's, so AdamW's lr and decay carry over), ``none``;
- every leaf must be a 2-D [fan_in, fan_out] matrix: anything else is an error.

Under jit the arrays are global, so NS always sees the full logical matrix, however its
rows are sharded. ``stack_sharding`` enables the gather-free layout: matrices of one shape
are stacked, padded to a multiple of the stack's shard count and resharded along the
stack axis, so each device runs NS on whole matrices with no collective inside NS.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

DEFAULT_NS_COEFFS = (3.4445, -4.7750, 2.0315)
# Polar Express (Amsel et al. 2025, arXiv:2505.16932): one minimax-optimal (a, b, c) per
# iteration, for 5 iterations with a 2% safety factor on the normalization (the schedule
# used by modded-nanogpt). Same cost as Keller's 5 steps, about half the distance to the
# exact polar factor (tests/test_muon.py).
POLAR_EXPRESS_COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
POLAR_EXPRESS_SAFETY = 1.02
NS_COEFFS = ("keller", "polar_express")
SCALES = ("moonlight", "keller", "none")


class MuonState(NamedTuple):
    count: jax.Array
    mu: optax.Updates


def newton_schulz(
    x: jax.Array,
    steps: int = 5,
    coeffs=DEFAULT_NS_COEFFS,
    eps: float = 1e-7,
    dtype=jnp.bfloat16,
    safety: float = 1.0,
) -> jax.Array:
    """Orthogonalizes the last two dims of ``x`` ([..., p, q]); returns x's dtype.

    ``coeffs`` is one (a, b, c) triple used for every step, or a [steps, 3] schedule;
    ``safety`` > 1 normalizes to a spectral norm a little below 1 (Polar Express).
    """
    coeffs = jnp.asarray(coeffs, jnp.float32)
    schedule = jnp.broadcast_to(coeffs, (steps, 3)) if coeffs.ndim == 1 else coeffs
    if schedule.shape != (steps, 3):
        raise ValueError(
            f"Newton-Schulz coefficients {coeffs.shape}: expected (3,) or ({steps}, 3)"
        )
    out_dtype = x.dtype
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = jnp.swapaxes(x, -1, -2)
    x = x.astype(jnp.float32)
    x = x / (jnp.linalg.norm(x, axis=(-2, -1), keepdims=True) * safety + eps)
    x = x.astype(dtype)
    for step in range(steps):
        a, b, c = (schedule[step, i].astype(dtype) for i in range(3))
        gram = jnp.einsum("...ij,...kj->...ik", x, x)
        poly = b * gram + c * jnp.einsum("...ij,...jk->...ik", gram, gram)
        x = a * x + jnp.einsum("...ij,...jk->...ik", poly, x)
    if tall:
        x = jnp.swapaxes(x, -1, -2)
    return x.astype(out_dtype)


def shape_scale(shape: tuple[int, ...], scale: str, rms: float = 0.2) -> float:
    """The per-matrix update scale for a [fan_in, fan_out] kernel."""
    fan_in, fan_out = shape[-2], shape[-1]
    if scale == "keller":
        return max(1.0, fan_out / fan_in) ** 0.5
    if scale == "moonlight":
        return rms * max(fan_in, fan_out) ** 0.5
    if scale == "none":
        return 1.0
    raise ValueError(f"muon scale {scale!r}: expected one of {SCALES}")


def _check_matrices(tree) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if jnp.ndim(leaf) != 2:
            raise ValueError(
                f"Muon got a leaf of shape {jnp.shape(leaf)} at {jax.tree_util.keystr(path)}: "
                "only 2-D [fan_in, fan_out] matrices may be routed to Muon"
            )


def _orthogonalize_stacked(
    leaves: list[jax.Array], stack_sharding: Callable[[int], object] | None, ns: Callable
) -> list[jax.Array]:
    """NS on same-shaped matrices stacked along a new leading axis (sharded if given).

    One batched NS per shape instead of one NS per matrix: fewer, larger products (on a
    GPU one kernel per NS product instead of 4 x layers of them).
    """
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, leaf in enumerate(leaves):
        groups[leaf.shape].append(i)
    out: list[jax.Array | None] = [None] * len(leaves)
    for _, members in groups.items():
        stack = jnp.stack([leaves[i] for i in members])
        sharding, shards = stack_sharding(len(members)) if stack_sharding else (None, 1)
        pad = (-len(members)) % shards
        if pad:
            stack = jnp.concatenate([stack, jnp.zeros((pad, *stack.shape[1:]), stack.dtype)])
        if sharding is not None:
            stack = jax.lax.with_sharding_constraint(stack, sharding)
        result = ns(stack)
        for j, i in enumerate(members):
            out[i] = result[j]
    return out  # type: ignore[return-value]


def scale_by_muon(
    beta: float = 0.95,
    nesterov: bool = True,
    ns_steps: int = 5,
    ns_coeffs=DEFAULT_NS_COEFFS,
    eps: float = 1e-7,
    ns_dtype=jnp.bfloat16,
    scale: str = "moonlight",
    rms: float = 0.2,
    bias_correction: bool = False,
    stack_sharding: Callable[[int], tuple[object, int]] | None = None,
    stack: bool = False,
) -> optax.GradientTransformation:
    """Muon's direction and scale; combine with weight decay and a learning rate.

    ``ns_coeffs``: an (a, b, c) triple, a [ns_steps, 3] schedule, or "keller" / "polar_express"
    (the latter for 5 steps). ``stack``: one batched NS per matrix shape instead
    of one per matrix (same result up to float reassociation). ``stack_sharding(n)`` ->
    (sharding for an [n', p, q] stack, shard count) turns on the gather-free layout (see
    the module docstring); it implies stacking.
    """
    if scale not in SCALES:
        raise ValueError(f"muon scale {scale!r}: expected one of {SCALES}")
    safety = 1.0
    if isinstance(ns_coeffs, str):
        if ns_coeffs not in NS_COEFFS:
            raise ValueError(f"muon ns_coeffs {ns_coeffs!r}: expected one of {NS_COEFFS}")
        if ns_coeffs == "polar_express":
            if ns_steps != len(POLAR_EXPRESS_COEFFS):
                # Its first 4 steps alone leave singular values in 0.43-1.58 (Keller's 5:
                # 0.57-1.2): fewer steps need a schedule designed for that count.
                raise ValueError(
                    f"muon ns_steps={ns_steps}: the Polar Express schedule is for "
                    f"{len(POLAR_EXPRESS_COEFFS)} steps"
                )
            ns_coeffs, safety = POLAR_EXPRESS_COEFFS, POLAR_EXPRESS_SAFETY
        else:
            ns_coeffs = DEFAULT_NS_COEFFS
    ns = lambda x: newton_schulz(x, ns_steps, ns_coeffs, eps, ns_dtype, safety)

    def init_fn(params):
        _check_matrices(params)
        mu = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        return MuonState(count=jnp.zeros([], jnp.int32), mu=mu)

    def update_fn(updates, state, params=None):
        del params
        _check_matrices(updates)
        count = optax.safe_increment(state.count)
        mu = jax.tree.map(
            lambda m, g: beta * m + (1 - beta) * g.astype(jnp.float32), state.mu, updates
        )
        if bias_correction:
            correct = lambda tree, t: jax.tree.map(lambda m: m / (1 - beta**t), tree)
            mu_now = correct(mu, optax.safe_increment(count).astype(jnp.float32))
            grads = correct(updates, count.astype(jnp.float32))
        else:
            mu_now, grads = mu, updates
        if nesterov:
            direction = jax.tree.map(lambda m, g: beta * m + (1 - beta) * g, mu_now, grads)
        else:
            direction = mu if not bias_correction else correct(mu, count.astype(jnp.float32))
        leaves, treedef = jax.tree.flatten(direction)
        if stack or stack_sharding is not None:
            leaves = _orthogonalize_stacked(leaves, stack_sharding, ns)
        else:
            leaves = [ns(x) for x in leaves]
        leaves = [x * shape_scale(x.shape, scale, rms) for x in leaves]
        new_updates = jax.tree.unflatten(treedef, leaves)
        new_updates = jax.tree.map(lambda u, g: u.astype(g.dtype), new_updates, updates)
        return new_updates, MuonState(count=count, mu=mu)

    return optax.GradientTransformation(init_fn, update_fn)


def newton_schulz_flops(p: int, q: int, steps: int = 5) -> int:
    """Matmul FLOPs of NS on a p x q matrix (p <= q after transposing): T(4p^2 q + 2p^3)."""
    p, q = min(p, q), max(p, q)
    return steps * (4 * p * p * q + 2 * p**3)
