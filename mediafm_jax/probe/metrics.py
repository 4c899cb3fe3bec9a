"""Probe metrics: average precision (scikit-learn's definition) and Kendall's tau per title.

Average precision is computed here rather than by ``sklearn.metrics.average_precision_score``
because the title bootstrap calls it thousands of times per report: scikit-learn's input
validation costs ~2 ms a call on an idle machine (~7 ms under load), the sum itself 0.1 ms
at 600 clips (experiments/benchmarks/probe_fit.py; the demo's probe stage spent most of its
time there). The definition is scikit-learn's, step for step, and the tests hold the two
equal on ties, multilabel and empty classes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy.stats import kendalltau


def _binary_ap(y_true: np.ndarray, scores: np.ndarray) -> float:
    """scikit-learn's uninterpolated AP: sum over score thresholds, highest first, of
    (recall gained) x (precision there); tied scores form one threshold."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    ranked_scores, hits = scores[order], np.asarray(y_true, dtype=np.float64)[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(ranked_scores)), hits.size - 1]
    true_positives = np.cumsum(hits)[last_of_tie]
    precision = true_positives / (last_of_tie + 1)
    recall_gain = np.diff(true_positives, prepend=0.0) / true_positives[-1]
    return float(np.sum(recall_gain * precision))


def micro_ap(y_true: np.ndarray, scores: np.ndarray) -> float:
    return ap(y_true, scores)  # micro-averaging pools every (clip, label) pair


def macro_ap(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Mean AP over classes with at least one positive (others have no AP)."""
    has_positive = y_true.sum(0) > 0
    if not has_positive.any():
        return float("nan")
    columns = np.flatnonzero(has_positive)
    return float(np.mean([_binary_ap(y_true[:, k], scores[:, k]) for k in columns]))


def ap(y_true: np.ndarray, scores: np.ndarray) -> float:
    if not np.any(y_true):
        return float("nan")  # no positives: AP is undefined (a bootstrap draw may have none)
    return _binary_ap(np.ravel(y_true), np.ravel(scores))


def kendall_tau_per_group(y_true: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> dict:
    """Kendall's tau between scores and targets within each group that has one.

    Groups with fewer than two items, or where tau is undefined (constant), are left out.
    """
    taus = {}
    for group in np.unique(groups).tolist():
        rows = groups == group
        if rows.sum() < 2:
            continue
        tau = kendalltau(y_true[rows], scores[rows]).statistic
        if np.isfinite(tau):
            taus[group] = float(tau)
    return taus


def kendall_tau_by_group(y_true: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Kendall's tau within each group, averaged over the groups that have one."""
    taus = list(kendall_tau_per_group(y_true, scores, groups).values())
    return float(np.mean(taus)) if taus else float("nan")


SCORERS = {"micro_ap": micro_ap, "macro_ap": macro_ap, "ap": ap}


def title_bootstrap(
    titles: np.ndarray, draws: int = 500, seed: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Resamples whole titles with replacement: yields ``(rows, group)`` per draw.

    Clips of one film are not independent, so intervals come from resampling films, not
    clips. ``group`` numbers each drawn copy of a title apart, so per-title metrics treat
    a film drawn twice as two films.
    """
    order = np.argsort(titles, kind="stable")
    _, first = np.unique(titles[order], return_index=True)
    rows_of = np.split(order, first[1:])
    sizes = np.array([len(r) for r in rows_of])
    rng = np.random.default_rng(seed)
    for _ in range(draws):  # one draw at a time: 500 draws of 100k clips would be 800 MB
        picks = rng.integers(0, len(rows_of), len(rows_of))
        rows = np.concatenate([rows_of[i] for i in picks])
        yield rows, np.repeat(np.arange(len(picks)), sizes[picks])


def interval(values: np.ndarray, level: float = 0.95) -> list[float]:
    """The central ``level`` percentile interval of bootstrap values (NaNs dropped)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if not len(values):
        return [float("nan"), float("nan")]
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]
