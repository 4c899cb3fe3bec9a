"""Probe metrics: average precision (scikit-learn) and Kendall's tau per title (scipy)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy.stats import kendalltau
from sklearn.metrics import average_precision_score


def micro_ap(y_true: np.ndarray, scores: np.ndarray) -> float:
    if not np.any(y_true):
        return float("nan")  # no positives: AP is undefined (a bootstrap draw may have none)
    return float(average_precision_score(y_true, scores, average="micro"))


def macro_ap(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Mean AP over classes with at least one positive (others have no AP)."""
    has_positive = y_true.sum(0) > 0
    if not has_positive.any():
        return float("nan")
    return float(
        average_precision_score(y_true[:, has_positive], scores[:, has_positive], average="macro")
    )


def ap(y_true: np.ndarray, scores: np.ndarray) -> float:
    if not np.any(y_true):
        return float("nan")
    return float(average_precision_score(np.ravel(y_true), np.ravel(scores)))


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
