"""Linear probes on frozen features, with regularization chosen on validation data.

Classification (multilabel, one-vs-rest; binary): standardized features -> logistic
regression per label; C picked on the val split (or, without one, on a grouped split of
train), then refit on train + val and scored on test. Ranking: ridge regression in
``folds``-fold cross-validation grouped by title, alpha picked by RidgeCV inside each fold,
Kendall's tau within each title averaged over titles.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import GroupKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from mediafm_jax.probe.metrics import SCORERS, kendall_tau_by_group, kendall_tau_per_group
from mediafm_jax.probe.tasks import Clips

C_GRID = (0.01, 0.1, 1.0)
ALPHA_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)


@dataclasses.dataclass(frozen=True, eq=False)
class ProbeResult:
    """The test score, and what it was computed from (for bootstrap intervals)."""

    score: float
    n_train: int
    n_test: int
    title: np.ndarray  # [n] the title of each test clip
    # the metric on test rows ``rows`` (a bootstrap draw), ``group`` numbering title copies
    score_rows: Callable[[np.ndarray, np.ndarray], float]


def _fit_scores(x_train, y_train, x_eval, c: float, blas_threads: int | None = 1) -> np.ndarray:
    """Decision scores [N, K] of one logistic regression per label column.

    One BLAS thread: L-BFGS's many small products ran 7.0x faster so at 600 x 768 and
    level at 20,000 x 768 on an idle 2-core machine, 20x faster under load, where BLAS
    threads spin against the other work (experiments/benchmarks/probe_fit.py)."""
    scaler = StandardScaler().fit(x_train)
    a, b = scaler.transform(x_train), scaler.transform(x_eval)
    scores = np.zeros((len(x_eval), y_train.shape[1]))
    with warnings.catch_warnings(), threadpool_limits(limits=blas_threads, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in range(y_train.shape[1]):
            model = LogisticRegression(C=c, max_iter=300).fit(a, y_train[:, k])
            scores[:, k] = model.decision_function(b)
    return scores


def _both_classes(y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Label columns with positives and negatives among the rows in ``mask``."""
    positives = y[mask].sum(0)
    return (positives > 0) & (positives < mask.sum())


class ProbeSkipped(ValueError):
    """The task's clips cannot support a probe (say which split lacks what)."""


def classification_probe(features: np.ndarray, clips: Clips, seed: int = 0) -> ProbeResult:
    y = clips.target.reshape(len(clips), -1).astype(int)
    train, val, test = (clips.split == s for s in ("train", "val", "test"))
    if not train.any():  # tasks labelled on val/test films only: fit on val
        train, val = val, np.zeros_like(val)
    if not test.any() or not train.any():
        raise ProbeSkipped("needs clips in the test split and in the train or val split")
    if not val.any():  # hold out a quarter of the train titles for choosing C
        titles = np.unique(clips.title[train])
        held = np.random.default_rng(seed).choice(titles, max(1, len(titles) // 4), replace=False)
        val = train & np.isin(clips.title, held)
        train = train & ~val
    keep = _both_classes(y, train) & _both_classes(y, test)
    if not keep.any():
        raise ProbeSkipped("no label has both classes in the train and the test split")
    y = y[:, keep]
    scorer = SCORERS[clips.task.metric]
    best = 1.0  # when val cannot score any label, keep the default regularization
    scorable = _both_classes(y, val)
    if scorable.any():
        val_scores = {
            c: scorer(
                y[val][:, scorable],
                _fit_scores(features[train], y[train], features[val], c)[:, scorable],
            )
            for c in C_GRID
        }
        best = max(val_scores, key=val_scores.get)
    fit = train | val
    scores = _fit_scores(features[fit], y[fit], features[test], best)
    y_test = y[test]
    return ProbeResult(
        scorer(y_test, scores),
        int(fit.sum()),
        int(test.sum()),
        clips.title[test],
        lambda rows, group: scorer(y_test[rows], scores[rows]),
    )


def ranking_probe(features: np.ndarray, clips: Clips) -> ProbeResult:
    y = clips.target.astype(float)
    folds = min(clips.task.folds, len(np.unique(clips.title)))
    if folds < 2:  # cross-validation grouped by title needs a title to hold out
        raise ProbeSkipped("needs clips of at least 2 titles (cross-validated by title)")
    predictions = np.zeros(len(clips))
    sizes = []
    for train, test in GroupKFold(n_splits=folds).split(features, y, groups=clips.title):
        scaler = StandardScaler().fit(features[train])
        model = RidgeCV(alphas=ALPHA_GRID).fit(scaler.transform(features[train]), y[train])
        predictions[test] = model.predict(scaler.transform(features[test]))
        sizes.append((len(train), len(test)))
    tau_of_title = kendall_tau_per_group(y, predictions, clips.title)
    score = kendall_tau_by_group(y, predictions, clips.title)
    n_train, n_test = np.mean(sizes, axis=0)

    def score_rows(rows: np.ndarray, group: np.ndarray) -> float:
        # a title's tau does not change when it is drawn again: average the drawn copies'
        firsts = rows[np.flatnonzero(np.r_[True, group[1:] != group[:-1]])]
        taus = [tau_of_title.get(t, np.nan) for t in clips.title[firsts].tolist()]
        return float(np.nanmean(taus)) if np.isfinite(taus).any() else float("nan")

    return ProbeResult(score, int(round(n_train)), int(round(n_test)), clips.title, score_rows)


def run_probe(features: np.ndarray, clips: Clips) -> ProbeResult:
    if clips.task.kind == "ranking":
        return ranking_probe(features, clips)
    return classification_probe(features, clips)
