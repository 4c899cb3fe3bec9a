"""Label-free, hand-made context: the baselines a contextual embedding has to beat.

``title_mean``: the clip's own mean input vector beside its title's mean input vector
(every shot of the film), so a probe sees the whole title without any model.
``novelty``: at the cut before the clip's first shot and after its last, the cosine
distance between the mean of the ``k`` shots before and the ``k`` shots after, for
several ``k`` — a training-free scene-change score (zero where a side is empty).
"""

from __future__ import annotations

import numpy as np

from mediafm_jax.fusion import EPS
from mediafm_jax.probe.tasks import Clips

NOVELTY_SCALES = (1, 2, 4, 8, 16)


def title_mean(rows_by_title: dict[int, np.ndarray], clips: Clips) -> np.ndarray:
    """[N, 2F]: the clip's mean input row, then its title's mean input row."""
    title_means = {t: rows.mean(0) for t, rows in rows_by_title.items()}
    return np.stack(
        [
            np.concatenate([rows_by_title[t][s:e].mean(0), title_means[t]])
            for t, s, e in zip(clips.title, clips.start, clips.end, strict=True)
        ]
    )


def _cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 - float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + EPS))


def novelty_at(rows_lf: np.ndarray, cut: int, scales=NOVELTY_SCALES) -> np.ndarray:
    """[len(scales)]: distance between the means of the k rows before and after ``cut``."""
    out = np.zeros(len(scales))
    if 0 < cut < len(rows_lf):
        for i, k in enumerate(scales):
            before = rows_lf[max(0, cut - k) : cut].mean(0)
            after = rows_lf[cut : cut + k].mean(0)
            out[i] = _cosine_distance(before, after)
    return out


def novelty(rows_by_title: dict[int, np.ndarray], clips: Clips) -> np.ndarray:
    """[N, 2 * len(NOVELTY_SCALES)]: novelty at the clip's first cut, then at its last."""
    return np.stack(
        [
            np.concatenate([novelty_at(rows_by_title[t], s), novelty_at(rows_by_title[t], e)])
            for t, s, e in zip(clips.title, clips.start, clips.end, strict=True)
        ]
    )
