"""Fusion: raw modality columns -> the encoder's unit-norm input vectors.

One owner for training (``objective``) and inference (``embed``); ``search`` mirrors it in
NumPy for the input-space baseline. Only ``per_modality_norm`` and ``modality_dropout``
of the ``ObjectiveConfig`` are read.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mediafm_jax.config import ObjectiveConfig
from mediafm_jax.model import DataDims

EPS = 1e-6


def fuse(shots_bwf, present_bwm, dims: DataDims, config: ObjectiveConfig, drop_key=None):
    """Fused, unit-norm shot vectors [B, W, F] in fp32; all-zero shots stay zero.

    With ``per_modality_norm`` each modality is unit-normed first (so a modality's scale
    does not decide its weight); with ``modality_dropout`` and a key, whole modalities of a
    shot are zeroed at that rate (never all of a shot's present ones).
    """
    x_bwf = shots_bwf.astype(jnp.float32)
    if config.per_modality_norm or (config.modality_dropout > 0 and drop_key is not None):
        parts = [x_bwf[..., a:b] for a, b in dims.modalities]
        if config.per_modality_norm:
            parts = [p / (jnp.linalg.norm(p, axis=-1, keepdims=True) + EPS) for p in parts]
        if config.modality_dropout > 0 and drop_key is not None:
            keep_bwm = jax.random.bernoulli(
                drop_key, 1.0 - config.modality_dropout, present_bwm.shape
            )
            keep_bwm = keep_bwm & (present_bwm > 0)
            # A shot keeps everything when dropout would have removed all it has.
            keep_bwm = jnp.where(keep_bwm.any(-1, keepdims=True), keep_bwm, True)
            parts = [p * keep_bwm[..., i : i + 1] for i, p in enumerate(parts)]
        x_bwf = jnp.concatenate(parts, axis=-1)
    return x_bwf / (jnp.linalg.norm(x_bwf, axis=-1, keepdims=True) + EPS)
