"""Named random streams: every random draw is a pure function of (seed, stream, index).

A run has one integer seed. The parameters are initialized from ``jax.random.key(seed)``
itself; every other consumer folds in its own stream id, then its index, so no two
consumers share draws and a run resumed at step i redraws exactly what step i drew.
"""

from __future__ import annotations

import jax
import numpy as np

DATA = 1  # window starts and targets of global batch i (NumPy, on the host)
STEP = 2  # corruption, modality drop-out and dropout of train step i (JAX, on the device)


def data_rng(seed: int, index: int) -> np.random.Generator:
    """The host's generator for global batch ``index`` (NumPy's analogue of fold_in)."""
    return np.random.default_rng([seed, DATA, index])


def step_key(seed: int, step: int) -> jax.Array:
    """The key of train step ``step``: fold_in(fold_in(key(seed), STEP), step)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), STEP), step)
