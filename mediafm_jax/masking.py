"""Which shots are prediction targets: the one owner of the masking rule.

Of a window's shots *with content* (at least one modality present), a share ``ratio`` is
selected uniformly at random, at least one when there is any; padding and content-less
shots are never selected, so a silent window selects none. The pipeline draws the
selection on the host (``draw_targets``, a pure function of its generator) and ships it as
positions ``targets`` [B, K]: ascending, padded with -1, K = ``max_targets(W, ratio)``.
K bounds every row's count, so an over-full selection cannot be represented, and the
objective predicts exactly the listed shots (``target_mask`` turns them back into [B, W]).

Span masking (``span_mean > 0``, ``objective.span_mean_shots``): shots of one scene are
near-duplicates, so a lone target is solved by copying a neighbour. Instead the selectable
shots of a row are cut, in order, into consecutive runs of geometric length (mean
``span_mean``), and whole runs are taken in random order until the same budget
``num_targets`` is met (the last one cut short), as in SpanBERT: a target's nearest
unmasked neighbours are then a run away. The count per row, and so K, is unchanged.
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


def draw_targets(
    rng: np.random.Generator, selectable_bw: np.ndarray, ratio: float, span_mean: float = 0.0
) -> np.ndarray:
    """Target positions [B, K] (ascending, -1 padded) drawn among the selectable shots.

    A uniform key per shot; a row's targets are its ``num_targets`` smallest keys among the
    selectable shots (keys are distinct almost surely). With ``span_mean > 0``, contiguous
    runs instead (``draw_span_mask``); 0 keeps the single-shot draws exactly.
    """
    if span_mean > 0:
        k = max_targets(selectable_bw.shape[1], ratio)
        return targets_from_mask(draw_span_mask(rng, selectable_bw, ratio, span_mean), k)
    b, w = selectable_bw.shape
    keys_bw = rng.random((b, w))
    keys_bw[~selectable_bw] = np.inf
    k = max_targets(w, ratio)
    count_b = selectable_bw.sum(1)
    kth_b = np.sort(keys_bw, axis=1)[np.arange(b), num_targets(count_b, ratio) - 1]
    return targets_from_mask((keys_bw <= kth_b[:, None]) & selectable_bw, k)


def draw_span_mask(
    rng: np.random.Generator, selectable_bw: np.ndarray, ratio: float, span_mean: float
) -> np.ndarray:
    """[B, W] selection of exactly ``num_targets`` selectable shots per row, in runs.

    Vectorized: the selectable shots of a row, numbered 0..n-1 in window order, are cut
    into runs at the cumulative sums of geometric lengths (mean ``span_mean``); runs get
    a uniform key and are taken in key order while the budget lasts (the run that crosses
    it contributes its first shots only). Content-less shots inside a run are skipped, not
    counted, so runs are contiguous among the shots with content.
    """
    if span_mean < 1.0:
        raise ValueError(f"span_mean={span_mean}: runs are at least one shot long")
    selectable_bw = np.asarray(selectable_bw, bool)
    b, w = selectable_bw.shape
    count_b = selectable_bw.sum(1)
    budget_b = np.where(count_b > 0, num_targets(count_b, ratio), 0)
    # At most w runs per row (each >= 1 shot); run s covers numbers [end[s-1], end[s]).
    lengths_bs = np.minimum(rng.geometric(1.0 / span_mean, (b, w)), w)
    end_bs = np.minimum(np.cumsum(lengths_bs, axis=1), count_b[:, None])
    begin_bs = np.concatenate([np.zeros((b, 1), np.int64), end_bs[:, :-1]], axis=1)
    size_bs = end_bs - begin_bs  # 0 for runs past the row's last selectable shot
    keys_bs = rng.random((b, w))
    keys_bs[size_bs == 0] = np.inf  # empty runs last (they take nothing anyway)
    order_bs = np.argsort(keys_bs, axis=1)
    taken_sorted_bs = np.cumsum(np.take_along_axis(size_bs, order_bs, axis=1), axis=1)
    before_sorted_bs = taken_sorted_bs - np.take_along_axis(size_bs, order_bs, axis=1)
    before_bs = np.empty_like(before_sorted_bs)
    np.put_along_axis(before_bs, order_bs, before_sorted_bs, axis=1)
    # Each selectable shot: its number, its run, and its place inside the run.
    number_bw = np.cumsum(selectable_bw, axis=1) - 1
    # The run of a number = how many run ends are <= it: one searchsorted over all rows,
    # each row shifted by (w + 1) so the flattened ends stay ascending.
    shift_b1 = np.arange(b)[:, None] * (w + 1)
    run_bw = np.searchsorted((end_bs + shift_b1).ravel(), (number_bw + shift_b1).ravel(), "right")
    run_bw = np.clip(run_bw.reshape(b, w) - np.arange(b)[:, None] * w, 0, w - 1)
    offset_bw = number_bw - np.take_along_axis(begin_bs, run_bw, axis=1)
    chosen_bw = np.take_along_axis(before_bs, run_bw, axis=1) + offset_bw < budget_b[:, None]
    return chosen_bw & selectable_bw


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
