"""Reading shot windows (title, start, length) into the encoder's padded host arrays.

Shared by training (``pipeline`` adds the drawn targets) and inference (``embed``), so
both feed the encoder identical inputs; nothing here knows about masking.
"""

from __future__ import annotations

import numpy as np

from mediafm_jax.data.store import ShotStore


def read_windows(
    store: ShotStore,
    title: np.ndarray,
    start: np.ndarray,
    length: np.ndarray,
    width: int,
    global_input: str = "title_embedding",
) -> dict[str, np.ndarray]:
    """``shots`` [B, W, F] fp16, ``present`` [B, W, M], ``valid`` [B, W], ``title_embedding``
    [B, G] fp16 for B windows padded to ``width`` shots; padding rows are zero.

    ``title_embedding`` is what [GLOBAL] sees: ``store.global_vectors(global_input)``, the
    given title embedding by default."""
    title, start, length = (np.asarray(a, np.int64) for a in (title, start, length))
    b = len(title)
    # Not zeros: every valid row is overwritten below, so only padding rows are cleared.
    shots_bwf = np.empty((b, width, store.num_features), np.float16)
    present_bwm = np.zeros((b, width, store.num_modalities), np.uint8)
    first = store.offsets[title] + start
    rows = []
    for i in range(b):
        n = int(length[i])
        rows.append((int(first[i]), int(first[i]) + n))
        present_bwm[i, :n] = store.present[rows[-1][0] : rows[-1][1]]
        shots_bwf[i, n:] = 0
    store.read_windows_into(shots_bwf, rows)
    return {
        "shots": shots_bwf,
        "present": present_bwm,
        "valid": np.arange(width)[None, :] < length[:, None],
        "title_embedding": store.global_vectors(global_input)[title].astype(np.float16),
    }
