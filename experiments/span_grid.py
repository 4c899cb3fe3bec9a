"""Have the states learned the span grid of a training term? (issue 23, shot-to-scene matching)

    python experiments/span_grid.py --store runs/ablations_scenes/store \
        --emb runs/ablations_scenes/emb/baseline runs/ablations_scenes/emb/scene_match [--span 16]

A term on spans of ``span`` shots tiled from each window's first shot (``objective.
scene_match_weight`` before its grid was drawn each step) can be met by states that
encode where spans begin instead of where scenes change. This prints, per embedding store
(readout ``last``), the mean cosine distance between consecutive shots' states where the
later shot starts a span of its window (``stitching.plan_windows``: the window the shot
was taken from) and elsewhere, and their ratio: near 1 when the states know no grid.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from mediafm_jax.data.embeddings import EmbeddingStore
from mediafm_jax.data.store import ShotStore
from mediafm_jax.fusion import unit
from mediafm_jax.stitching import plan_windows


def grid_distances(store: ShotStore, emb: EmbeddingStore, span: int, window: int):
    """(mean distance into a shot that starts a span, mean distance elsewhere)."""
    shots = emb.shot_rows(store)
    at_start, elsewhere = [], []
    for title in range(len(store.title_ids)):
        first, stop = store.title_rows(title)
        rows = unit(shots[first:stop].astype(np.float64))
        distance = 1.0 - (rows[1:] * rows[:-1]).sum(-1)  # into shot i + 1
        position = np.zeros(stop - first, int)  # each shot's place in the window it is from
        for win in plan_windows(title, stop - first, window):
            kept = np.arange(win.start + win.keep_from, win.start + win.keep_to)
            position[kept] = kept - win.start
        starts = position[1:] % span == 0
        at_start.append(distance[starts])
        elsewhere.append(distance[~starts])
    return float(np.concatenate(at_start).mean()), float(np.concatenate(elsewhere).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--emb", nargs="+", required=True, type=Path)
    parser.add_argument("--span", type=int, default=16)
    parser.add_argument("--window", type=int, default=256, help="the run's model.max_shots")
    args = parser.parse_args(argv)
    store = ShotStore(args.store)
    print(f"load average {os.getloadavg()[0]:.2f}")
    print("| embeddings | into a span start | elsewhere | ratio |\n|---|---:|---:|---:|")
    for path in args.emb:
        start, other = grid_distances(store, EmbeddingStore(path), args.span, args.window)
        print(f"| {path.name} | {start:.3f} | {other:.3f} | {start / other:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
