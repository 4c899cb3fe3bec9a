"""Fusion: raw modality columns -> the encoder's unit-norm input vectors.

The one definition, for training (``objective``), inference (``embed``), the input-space
baselines (``search``, ``probe``) and ingest's title summary. It is written against the
array's own namespace (``x.__array_namespace__()``: ``jax.numpy`` for JAX arrays and
tracers, ``numpy`` for NumPy), so the device and the host compute the same function and
this module loads no JAX. Its one setting, ``model.per_modality_norm``, belongs to the
model's input; modality dropout is training's (``objective``), passed in as a keep mask.
"""

from __future__ import annotations

from collections.abc import Sequence

EPS = 1e-6  # added to every norm here and in the objective's cosines


def unit(x_nf):
    """Rows scaled to unit norm; all-zero rows stay zero (they match nothing)."""
    xp = x_nf.__array_namespace__()
    return x_nf / (xp.linalg.norm(x_nf, axis=-1, keepdims=True) + EPS)


def fuse(
    shots_nf,
    modalities: Sequence[tuple[int, int]],
    per_modality_norm: bool = False,
    keep_nm=None,
):
    """Fused, unit-norm shot vectors [..., F]; all-zero shots stay zero.

    In float32 (float64 stays float64: ingest's title summary accumulates in it). With
    ``per_modality_norm`` each modality ``[start, stop)`` is unit-normed first (so a
    modality's scale does not decide its weight); ``keep_nm`` [..., M] zeroes whole
    modalities of a shot (training's modality dropout).
    """
    xp = shots_nf.__array_namespace__()
    x_nf = shots_nf.astype(xp.result_type(shots_nf.dtype, xp.float32))
    if per_modality_norm or keep_nm is not None:
        parts = [x_nf[..., a:b] for a, b in modalities]
        if per_modality_norm:
            parts = [unit(p) for p in parts]
        if keep_nm is not None:
            parts = [p * keep_nm[..., i : i + 1] for i, p in enumerate(parts)]
        x_nf = xp.concatenate(parts, axis=-1)
    return unit(x_nf)
