"""Probe metrics: average precision (scikit-learn) and Kendall's tau per title (scipy)."""

from __future__ import annotations

import numpy as np
from scipy.stats import kendalltau
from sklearn.metrics import average_precision_score


def micro_ap(y_true: np.ndarray, scores: np.ndarray) -> float:
    return float(average_precision_score(y_true, scores, average="micro"))


def macro_ap(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Mean AP over classes with at least one positive (others have no AP)."""
    has_positive = y_true.sum(0) > 0
    return float(
        average_precision_score(y_true[:, has_positive], scores[:, has_positive], average="macro")
    )


def ap(y_true: np.ndarray, scores: np.ndarray) -> float:
    return float(average_precision_score(np.ravel(y_true), np.ravel(scores)))


def kendall_tau_by_group(y_true: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Kendall's tau between scores and targets within each group, averaged over groups.

    Groups with fewer than two items, or where tau is undefined (constant), are skipped.
    """
    taus = []
    for group in np.unique(groups):
        rows = groups == group
        if rows.sum() < 2:
            continue
        tau = kendalltau(y_true[rows], scores[rows]).statistic
        if np.isfinite(tau):
            taus.append(tau)
    return float(np.mean(taus)) if taus else float("nan")


SCORERS = {"micro_ap": micro_ap, "macro_ap": macro_ap, "ap": ap}
