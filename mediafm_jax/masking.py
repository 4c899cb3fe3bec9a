"""Which shots are prediction targets: the one owner of the masking rule.

Of a window's shots *with content* (at least one modality present), a share ``ratio`` is
selected uniformly at random, at least one when there is any; padding and content-less
shots are never selected, so a silent window selects none. The pipeline draws the
selection on the host (``draw_targets``, a pure function of its generator) and ships it as
positions ``targets`` [B, K]: ascending, padded with -1, K = ``max_targets(W, ratio)``.
K bounds every row's count, so an over-full selection cannot be represented, and the
objective predicts exactly the listed shots (``target_mask`` turns them back into [B, W]).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def num_targets(count, ratio: float) -> np.ndarray:
    """Targets per window with ``count`` selectable shots: round(ratio * count), >= 1, <= count.

    At count 0 it says 1, but nothing is selectable, so nothing is selected.
    """
    count = np.asarray(count)
    return np.maximum(1, np.minimum(count, np.round(ratio * count).astype(np.int64)))


def max_targets(window: int, ratio: float) -> int:
    """K: the most targets a window of ``window`` shots can have (``num_targets`` is monotone)."""
    return int(num_targets(window, ratio))


def draw_targets(rng: np.random.Generator, selectable_bw: np.ndarray, ratio: float) -> np.ndarray:
    """Target positions [B, K] (ascending, -1 padded) drawn among the selectable shots.

    A uniform key per shot; a row's targets are its ``num_targets`` smallest keys among the
    selectable shots (keys are distinct almost surely).
    """
    b, w = selectable_bw.shape
    keys_bw = rng.random((b, w))
    keys_bw[~selectable_bw] = np.inf
    k = max_targets(w, ratio)
    count_b = selectable_bw.sum(1)
    kth_b = np.sort(keys_bw, axis=1)[np.arange(b), num_targets(count_b, ratio) - 1]
    return targets_from_mask((keys_bw <= kth_b[:, None]) & selectable_bw, k)


def targets_from_mask(masked_bw: np.ndarray, k: int) -> np.ndarray:
    """[B, W] selection -> positions [B, k], ascending, -1 padded; more than k is an error.

    For batches built by hand (tests, benchmarks): a row with more than k is a bug there.
    """
    masked_bw = np.asarray(masked_bw, bool)
    over = masked_bw.sum(1) > k
    if over.any():
        row = int(np.argmax(over))
        raise ValueError(
            f"window {row} selects {int(masked_bw[row].sum())} targets, more than the "
            f"{k} a batch row holds (masking.max_targets)"
        )
    # A stable sort of "not selected" puts the selected positions first, in order.
    order_bw = np.argsort(~masked_bw, axis=1, kind="stable")[:, :k]
    chosen_bk = np.take_along_axis(masked_bw, order_bw, axis=1)
    return np.where(chosen_bk, order_bw, -1).astype(np.int32)


def target_mask(targets_bk: jax.Array, width: int) -> jax.Array:
    """Positions [B, K] (-1 = none) -> the selection [B, W] as booleans, on the device."""
    return (jnp.arange(width)[None, :, None] == targets_bk[:, None, :]).any(-1)
