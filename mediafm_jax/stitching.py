"""Stitching: a title longer than the model's window, covered by overlapping windows.

Windows stride W/2, the last one flush with the title's end; each shot is taken from the
window in which it is most central, so every shot sees context on both sides wherever the
title has it. The title's [CLS] is the mean of its windows' [CLS]. Pure NumPy: the
ownership rule and the averaging are tested without a model (``tests/test_stitching.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Window:
    title: int
    start: int  # first shot (within the title)
    length: int
    keep_from: int  # shots [keep_from, keep_to) of the window are taken from it
    keep_to: int


def plan_windows(title: int, length: int, window: int) -> list[Window]:
    """Overlapping windows of a title; each shot is kept from its most central window."""
    if length <= window:
        return [Window(title, 0, length, 0, length)]
    stride = max(1, window // 2)
    starts = list(range(0, length - window, stride)) + [length - window]
    centers = np.array([s + (window - 1) / 2 for s in starts])
    owner = np.argmin(np.abs(np.arange(length)[:, None] - centers[None, :]), axis=1)
    windows = []
    for index, start in enumerate(starts):
        shots = np.flatnonzero(owner == index)
        if len(shots):
            windows.append(
                Window(title, start, window, int(shots[0] - start), int(shots[-1] + 1 - start))
            )
    return windows


def stitch(
    windows: Sequence[Window], shots_nwh: np.ndarray, cls_nh: np.ndarray, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """One title's (shot embeddings [L, H], [CLS] [H]) from its windows' outputs.

    ``shots_nwh[i]`` and ``cls_nh[i]`` are window i's outputs (rows past its length are
    padding). Each shot's row comes from the one window that keeps it; a plan that leaves
    a shot uncovered or covers it twice is a bug, not something to average over.
    """
    rows_lh = np.zeros((length, shots_nwh.shape[-1]), np.float32)
    covered_l = np.zeros(length, np.int64)
    for i, win in enumerate(windows):
        rows = slice(win.start + win.keep_from, win.start + win.keep_to)
        rows_lh[rows] = shots_nwh[i, win.keep_from : win.keep_to]
        covered_l[rows] += 1
    if not (covered_l == 1).all():
        raise ValueError(f"windows cover shots {np.flatnonzero(covered_l != 1)} not exactly once")
    return rows_lh, np.mean(cls_nh, axis=0).astype(np.float32)
