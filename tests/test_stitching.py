"""Stitching without a model: the window plan and the assembly of a title from windows."""

import numpy as np
import pytest

from mediafm_jax import stitching


def most_central_window_reference(length, window):
    """Slow reference: for each shot, the planned window start in which it is most central."""
    stride = window // 2
    starts = list(range(0, length - window, stride)) + [length - window]
    owner = []
    for shot in range(length):
        best = None
        for start in starts:
            if start <= shot < start + window:
                distance = abs(shot - (start + (window - 1) / 2))
                if best is None or distance < best[0]:
                    best = (distance, start)
        owner.append(best[1])
    return owner


@pytest.mark.parametrize("length,window", [(700, 48), (97, 48), (48, 48), (30, 48), (1601, 512)])
def test_plan_covers_every_shot_once_from_its_most_central_window(length, window):
    windows = stitching.plan_windows(0, length, window)
    covered = np.zeros(length, int)
    owner = np.zeros(length, int)
    for w in windows:
        covered[w.start + w.keep_from : w.start + w.keep_to] += 1
        owner[w.start + w.keep_from : w.start + w.keep_to] = w.start
        assert w.start >= 0 and w.start + w.length <= length
    assert (covered == 1).all()
    if length > window:
        assert owner.tolist() == most_central_window_reference(length, window)


@pytest.mark.parametrize("length,window", [(700, 48), (97, 48), (30, 48)])
def test_stitch_takes_each_shot_from_its_owner_and_averages_cls(length, window):
    windows = stitching.plan_windows(3, length, window)
    n = len(windows)
    # Window i's output at position j encodes (shot index in the title, i): the stitched
    # rows must put every shot at its place and name the window the reference picks.
    shots_nwh = np.full((n, window, 2), -1.0, np.float32)
    for i, w in enumerate(windows):
        shots_nwh[i, : w.length, 0] = w.start + np.arange(w.length)
        shots_nwh[i, : w.length, 1] = i
    cls_nh = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    rows, cls = stitching.stitch(windows, shots_nwh, cls_nh, length)
    np.testing.assert_array_equal(rows[:, 0], np.arange(length))
    starts = [w.start for w in windows]
    owner_start = np.array(starts)[rows[:, 1].astype(int)]
    expected = most_central_window_reference(length, window) if length > window else [0] * length
    np.testing.assert_array_equal(owner_start, expected)
    np.testing.assert_allclose(cls, cls_nh.sum(0) / n, rtol=1e-6)


def test_stitch_refuses_a_plan_that_misses_or_repeats_shots():
    windows = stitching.plan_windows(0, 100, 48)
    shots = np.zeros((len(windows), 48, 2), np.float32)
    cls = np.zeros((len(windows), 2), np.float32)
    with pytest.raises(ValueError, match="not exactly once"):
        stitching.stitch(windows[:-1], shots[:-1], cls[:-1], 100)
    with pytest.raises(ValueError, match="not exactly once"):
        stitching.stitch([*windows, windows[0]], np.concatenate([shots, shots[:1]]), cls, 100)
