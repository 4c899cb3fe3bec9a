"""The probe's two inner loops against their defaults, same run.

    python experiments/benchmarks/probe_fit.py [--sizes 600x768,20000x768] [--repeats 3]

1. A probe's logistic regression (``probe.linear._fit_scores``: standardize, L-BFGS per
   label) with one BLAS thread, as the probe runs it, against the same fit with BLAS's
   default threads.
2. Average precision as the title bootstrap calls it (``probe.metrics.ap``, NumPy) against
   ``sklearn.metrics.average_precision_score`` on the same scores (and the largest
   difference between the two, which should be ~1e-16).

Prints the median seconds, the ratio default / ours, and the load average: under load the
BLAS threads spin against the other work and the ratio grows (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from sklearn.metrics import average_precision_score
from train_step import median_seconds  # sibling benchmark (run from this folder or the root)

from mediafm_jax.probe import linear
from mediafm_jax.probe.metrics import ap


def rows(n: int, d: int, repeats: int, rng: np.random.Generator) -> None:
    """The two comparisons at ``n`` clips of ``d`` features."""
    x = rng.normal(size=(n, d))
    y = (x[:, :3] + rng.normal(size=(n, 3)) > 1).astype(int)  # three labels
    ours = median_seconds(lambda: linear._fit_scores(x, y, x[:100], 0.1), repeats)
    default = median_seconds(lambda: linear._fit_scores(x, y, x[:100], 0.1, None), repeats)
    label = f"logistic fit {n} x {d}, 3 labels"
    print(f"{label:<34}{default:>11.3f}{ours:>10.3f}{default / ours:>7.1f}x")
    scores, labels, calls = x[:, 0] + rng.normal(size=n), y[:, 0], 200
    default = median_seconds(
        lambda: [average_precision_score(labels, scores) for _ in range(calls)], 1
    )
    ours = median_seconds(lambda: [ap(labels, scores) for _ in range(calls)], 1)
    gap = abs(ap(labels, scores) - average_precision_score(labels, scores))
    label = f"AP x {calls}, {n} clips (diff {gap:.0e})"
    print(f"{label:<34}{default:>11.3f}{ours:>10.3f}{default / ours:>7.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="600x768,20000x768", help="clips x features")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'what':<34}{'default s':>11}{'ours s':>10}{'ratio':>8}")
    for size in args.sizes.split(","):
        n, d = (int(v) for v in size.split("x"))
        rows(n, d, args.repeats, rng)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
