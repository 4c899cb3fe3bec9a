"""Issue 23: how many of BaSSL's pseudo-boundaries are real, with and without
``objective.boundary_keep``?

    python experiments/pseudo_boundaries.py [--titles 120] [--batches 100]
        [--keeps 1,0.75,0.6,0.5,0.4,0.25] [--out experiments/ablations/scenes/PSEUDO.md]

Builds the catalog of ``experiments/ablations.py --catalog scenes`` in memory (as
``recurrence_oracle.build``: fp16 rows fused as the model sees them, with the true scene
bounds), draws training-like batches (16 windows of 256 shots at random titles and
starts, as ``data.pipeline`` does), and labels them with the training term's own
functions (``objective.pseudo_boundaries``, ``objective.strong_splits``). For each share
``keep``: the spans given a pseudo-boundary, the share of them whose pseudo-boundary is
within a shot of a true scene's last shot (and exactly on it), and the share of the
spans labelled "no boundary" that hold no true cut. No label is used to label; the true
bounds only score the labels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from recurrence_oracle import build  # same directory: the catalog, rows and story

from mediafm_jax.objective import pseudo_boundaries, strong_splits

WINDOW, BATCH, SPAN = 256, 16, 16  # the demo preset's max_shots, batch, boundary_span


def draw(titles, batches: int, seed: int = 0):
    """(rows [N, B, W, F], valid [N, B, W], last-shot-of-scene flags [N, B, W]) of random
    windows; a title shorter than a window is padded (its tail spans are not usable)."""
    rng = np.random.default_rng(seed)
    width = titles[0][0].shape[1]
    rows = np.zeros((batches * BATCH, WINDOW, width), np.float32)
    valid = np.zeros((batches * BATCH, WINDOW), bool)
    last = np.zeros((batches * BATCH, WINDOW), bool)
    for i in range(batches * BATCH):
        fused, story, _ = titles[int(rng.integers(len(titles)))]
        length = min(len(fused), WINDOW)
        start = int(rng.integers(0, len(fused) - length + 1))
        flags = np.zeros(len(fused), bool)
        flags[story["bounds"][1:-1] - 1] = True  # the shot before each cut
        rows[i, :length] = fused[start : start + length]
        valid[i, :length] = True
        last[i, :length] = flags[start : start + length]
    shape = (batches, BATCH, WINDOW)
    return rows.reshape(*shape, width), valid.reshape(shape), last.reshape(shape)


def _at(flags_bsl: np.ndarray, last_bs: np.ndarray, offset: int) -> np.ndarray:
    """[B, S]: the flag ``offset`` shots from each span's pseudo-boundary (False outside)."""
    padded = np.pad(flags_bsl, ((0, 0), (0, 0), (1, 1)))
    return np.take_along_axis(padded, (last_bs + 1 + offset)[..., None], 2)[..., 0]


def score(rows_nbwf, valid_nbw, last_nbw, keep: float) -> dict[str, float]:
    spans = WINDOW // SPAN
    kept = near = exact = none = none_clean = holds = total = 0
    for x_bwf, valid_bw, flags_bw in zip(rows_nbwf, valid_nbw, last_nbw, strict=True):
        last_bs, usable_bs = pseudo_boundaries(jnp.asarray(x_bwf), jnp.asarray(valid_bw), SPAN)
        usable_bs = np.asarray(usable_bs)
        strong_bs = usable_bs
        if keep < 1.0:
            strong_bs = np.asarray(
                strong_splits(jnp.asarray(x_bwf), jnp.asarray(valid_bw), SPAN, keep)
            )
        last_bs = np.asarray(last_bs)
        flags_bsl = flags_bw.reshape(len(flags_bw), spans, SPAN)
        # a cut inside the span: the shot before it is one of the span's first span-1
        inside_bs = flags_bsl[:, :, :-1].any(-1)
        near_bs = _at(flags_bsl, last_bs, -1) | _at(flags_bsl, last_bs, 0)
        near_bs |= _at(flags_bsl, last_bs, 1)
        weak_bs = usable_bs & ~strong_bs
        total += int(usable_bs.sum())
        holds += int((inside_bs & usable_bs).sum())
        kept += int(strong_bs.sum())
        near += int((near_bs & strong_bs).sum())
        exact += int((_at(flags_bsl, last_bs, 0) & strong_bs).sum())
        none += int(weak_bs.sum())
        none_clean += int((~inside_bs & weak_bs).sum())
    return {
        "keep": keep,
        "spans": total,
        "holding a cut": holds / total,
        "with a pseudo-boundary": kept / total,
        "within a shot of a true cut": near / max(kept, 1),
        "on it": exact / max(kept, 1),
        "no-boundary spans without a cut": none_clean / none if none else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--titles", type=int, default=120)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--keeps", default="1,0.75,0.6,0.5,0.4,0.25")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows, valid, last = draw(build(args.titles, 0.7), args.batches)
    lines = [
        "| boundary_keep | spans with a pseudo-boundary | of them within a shot of a true "
        "cut | exactly on it | no-boundary spans that hold no cut |",
        "|---:|---:|---:|---:|---:|",
    ]
    for keep in (float(k) for k in args.keeps.split(",")):
        r = score(rows, valid, last, keep)
        none = r["no-boundary spans without a cut"]
        lines.append(
            f"| {keep:g} | {r['with a pseudo-boundary']:.2f} | "
            f"{r['within a shot of a true cut']:.3f} | {r['on it']:.3f} | "
            + ("-" if np.isnan(none) else f"{none:.3f}")
            + " |"
        )
        print(lines[-1], flush=True)
    held = r["holding a cut"]
    note = (
        f"{r['spans']} usable spans of {SPAN} shots in {args.batches} batches of {BATCH} windows "
        f"of {WINDOW} shots; {held:.2f} of the spans hold a true cut."
    )
    print(note)
    if args.out:
        args.out.write_text(
            "# How many pseudo-boundaries are real? (`experiments/pseudo_boundaries.py`)\n\n"
            "BaSSL's best split per span on the scenes ablation catalog's input rows, kept "
            "only in the batch's `boundary_keep` share of spans with the strongest split "
            "(`objective.strong_splits`), scored against the true scene bounds. "
            + note
            + "\n\n"
            + "\n".join(lines)
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
