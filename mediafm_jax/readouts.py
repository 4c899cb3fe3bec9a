"""Readouts: which states make a shot's frozen embedding. Importable without JAX (the
command line lists them); ``embed.Embedder`` computes the encoder's states and adds the
parameter-free parts here after stitching, so a part sees the whole title.

- ``last``: the last layer's output;
- ``mean``: the mean of every layer's output;
- ``last+input``: the last layer beside the shot's fused input vector (the shot itself
  and its context);
- ``+title`` (``last+title``, ``last+input+title``): every shot's row beside its whole
  title's summary, the mean of that readout over every shot of the title after stitching
  (a film longer than one window is summarized whole);
- ``+change`` (issue 23): where the title changes around the shot. For each k in
  ``CHANGE_SCALES``: the mean row of the k shots after the shot minus that of the k
  before it, and the cosine distance between the k rows before and after the cut before
  the shot and the cut after it (``probe.baselines.novelty_at`` on the states). Masked
  shot modeling teaches content; a linear probe cannot compute a distance from it;
- ``+distance``: the distance columns of ``+change`` alone (2 per k), no mean rows;
- ``+recur`` (issue 23): how often the shot's content comes back in the title: the mean
  of its ``m`` highest cosine similarities to shots at least ``RECUR_GAP`` shots away,
  for each m in ``RECUR_TOPS``.

The parts are computed from the base readout (``last`` or ``last+input``) and follow it
in the order above: ``[base, change, distance, recur, title mean of base]``. For an
isolated clip the encoder saw only the clip, so its parts see only the clip.

A readout without a base (``STRUCTURE_ALONE``: ``change``, ``distance``, ``recur``,
``change+recur``, ``distance+recur``) is the parts of ``last`` without the state itself:
the probe standardizes every column and shrinks them alike, so four ``+recur`` numbers
beside hundreds of content columns are drowned (issue 23's third pass); alone they are
not.

The run's readout is chosen on validation titles (``probe.choose_readout``: ``mediafm
probe --choose-readout``, the demo, ``experiments/ablations.py``) and recorded in
``RUN/readout.json``; embed, probe and search use it by default, else ``last``. By
default the choice is among ``DEFAULT_CANDIDATES``; the structure readouts are chosen
when asked for (``experiments/ablations.py --catalog scenes``).
"""

from __future__ import annotations

import numpy as np

DEFAULT_CANDIDATES = ("last", "mean", "last+input", "last+title", "last+input+title")
STRUCTURE_READOUTS = (
    "last+change",
    "last+input+change",
    "last+recur",
    "last+change+recur",
    "last+input+change+recur",
)
STRUCTURE_ALONE = ("change", "distance", "recur", "change+recur", "distance+recur")
READOUTS = DEFAULT_CANDIDATES + STRUCTURE_READOUTS + STRUCTURE_ALONE
BASES = ("last", "mean")  # a readout's first name; any other first name is a part of last
INPUT_PART = "+input"
TITLE_PART = "+title"
CHANGE_PART = "+change"
DISTANCE_PART = "+distance"
RECUR_PART = "+recur"
CHANGE_SCALES = (1, 4, 16)
RECUR_GAP = 24  # shots nearer than this are the shot's own scene, not a return
RECUR_TOPS = (1, 4, 16, 64)
EPS = 1e-6


def _names(layers: str) -> tuple[bool, set[str]]:
    """(whether the base rows are kept, the parts named as ``+part``)."""
    first, *rest = layers.split("+")
    if first in BASES:
        return True, {"+" + name for name in rest}
    return False, {"+" + name for name in (first, *rest)}


def encoder_readout(layers: str) -> str:
    """The part of ``layers`` the encoder computes (``mean``, ``last+input`` or ``last``):
    every readout is ``with_parts`` of it, so readouts sharing it share one encoder pass."""
    if layers.split("+")[0] == "mean":
        return "mean"
    return "last+input" if INPUT_PART in layers else "last"


def width(layers: str, base_dim: int) -> int:
    """A shot's embedding width under ``layers`` when its base readout has ``base_dim``."""
    keep_base, parts = _names(layers)
    out = base_dim if keep_base else 0
    if CHANGE_PART in parts:
        out += len(CHANGE_SCALES) * (base_dim + 2)
    if DISTANCE_PART in parts:
        out += len(CHANGE_SCALES) * 2
    if RECUR_PART in parts:
        out += len(RECUR_TOPS)
    if TITLE_PART in parts:
        out += base_dim
    return out


def with_parts(rows_ld: np.ndarray, layers: str) -> np.ndarray:
    """[L, width]: a title's (or an isolated clip's) base rows with the parts ``layers``
    names (without the rows for a readout with no base); the rows themselves when it
    names no part."""
    keep_base, parts = _names(layers)
    if keep_base and not parts - {INPUT_PART}:
        return rows_ld
    out = [rows_ld] if keep_base else []
    if CHANGE_PART in parts:
        out.append(change(rows_ld))
    if DISTANCE_PART in parts:
        out.append(change(rows_ld, with_means=False))
    if RECUR_PART in parts:
        out.append(recurrence(rows_ld))
    if TITLE_PART in parts:
        out.append(np.broadcast_to(rows_ld.mean(0, dtype=np.float64), rows_ld.shape))
    return np.concatenate(out, axis=-1).astype(np.float32)


def _span_means(sums_ld: np.ndarray, start_l: np.ndarray, stop_l: np.ndarray) -> np.ndarray:
    """[L, D]: mean of rows [start, stop) from prefix sums; zeros for an empty span."""
    count = np.maximum(stop_l - start_l, 1)[:, None]
    return (sums_ld[stop_l] - sums_ld[start_l]) / count


def _cosine_distance(a_ld: np.ndarray, b_ld: np.ndarray) -> np.ndarray:
    dot = (a_ld * b_ld).sum(-1)
    return 1.0 - dot / (np.linalg.norm(a_ld, axis=-1) * np.linalg.norm(b_ld, axis=-1) + EPS)


def change(
    rows_ld: np.ndarray, scales: tuple[int, ...] = CHANGE_SCALES, with_means: bool = True
) -> np.ndarray:
    """[L, len(scales) * (D + 2)]: per k, after-minus-before mean rows (zeros at a title's
    ends), then the distances at the cut before and after the shot (zero at an end);
    [L, len(scales) * 2], the distances only, without ``with_means``."""
    n = len(rows_ld)
    sums = np.concatenate([np.zeros((1, rows_ld.shape[1])), np.cumsum(rows_ld, 0, np.float64)])
    i = np.arange(n)
    out = []
    for k in scales:
        if with_means:
            before = _span_means(sums, np.maximum(0, i - k), i)
            after = _span_means(sums, np.minimum(n, i + 1), np.minimum(n, i + 1 + k))
            both = ((i > 0) & (i < n - 1))[:, None]
            out.append(np.where(both, after - before, 0.0))
        for cut in (i, i + 1):  # novelty at the cut before the shot, then after it
            left = _span_means(sums, np.maximum(0, cut - k), cut)
            right = _span_means(sums, np.minimum(n, cut), np.minimum(n, cut + k))
            inside = (cut > 0) & (cut < n)
            out.append(np.where(inside, _cosine_distance(left, right), 0.0)[:, None])
    return np.concatenate(out, axis=-1)


def recurrence(
    rows_ld: np.ndarray, gap: int = RECUR_GAP, tops: tuple[int, ...] = RECUR_TOPS, chunk=1024
) -> np.ndarray:
    """[L, len(tops)]: per m, the mean of a shot's m highest cosine similarities to shots
    at least ``gap`` away (over as many as there are; zero where there is none)."""
    n = len(rows_ld)
    unit_ld = rows_ld / (np.linalg.norm(rows_ld, axis=-1, keepdims=True) + EPS)
    most = min(max(tops), n)
    out = np.zeros((n, len(tops)))
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        sims = unit_ld[rows] @ unit_ld.T
        sims[np.abs(rows[:, None] - np.arange(n)[None]) < gap] = -np.inf
        if most < n:
            sims = np.partition(sims, n - most, axis=1)[:, n - most :]
        top = -np.sort(-sims, axis=1)  # best first; -inf (too near) last
        finite = np.isfinite(top)
        top = np.where(finite, top, 0.0)
        for j, m in enumerate(tops):
            count = finite[:, :m].sum(1)
            out[rows, j] = top[:, :m].sum(1) / np.maximum(count, 1)
    return out
