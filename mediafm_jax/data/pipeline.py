"""The Grain input pipeline: shot windows -> the batch of DESIGN.md §3.3.

The dataset is a random-access Grain ``MapDataset`` over *global* batches:

    window table (a title of L shots appears ceil(L / W) times per epoch)
      -> shuffle(seed), reshuffled every epoch -> repeat
      -> random_map: window start and mask positions from (seed, global element index)
      -> batch(global batch size)
      -> this host's rows of the global batch, read and padded into one array

Everything random is a pure function of (seed, index), so the iterator's whole state is
the index of the next global batch (Grain's ``{"next_index": i}``). It does not depend on
the number of read threads or hosts: a run restored with other counts continues on the
identical next global batch, and each host takes its own contiguous slice of it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import grain
import numpy as np

from mediafm_jax.data.store import ShotStore


@dataclasses.dataclass(frozen=True)
class WindowSample:
    title: int
    start: int  # shot offset within the title
    length: int  # valid shots, <= max_shots
    masked: np.ndarray  # positions (within the window) chosen for prediction


def num_masked(valid: int, ratio: float) -> int:
    """Shots selected per window: ``ratio`` of the valid ones, at least one."""
    return max(1, min(valid, int(round(ratio * valid))))


def window_table(lengths: np.ndarray, titles: np.ndarray, max_shots: int) -> np.ndarray:
    """Title indices, each repeated ceil(L / max_shots) times: one epoch of windows."""
    repeats = np.maximum(1, -(-lengths // max_shots))
    return np.repeat(titles, repeats)


class _DrawWindow:
    """Draws the window start and masked positions of one element (a Grain random_map)."""

    def __init__(self, lengths: np.ndarray, max_shots: int, mask_ratio: float):
        self.lengths = lengths
        self.max_shots = max_shots
        self.mask_ratio = mask_ratio

    def __call__(self, title: int, rng: np.random.Generator) -> WindowSample:
        total = int(self.lengths[title])
        length = min(total, self.max_shots)
        start = int(rng.integers(0, total - length + 1))
        masked = np.sort(rng.choice(length, num_masked(length, self.mask_ratio), replace=False))
        return WindowSample(int(title), start, length, masked)


class _ReadHostShare:
    """Takes this host's rows of a global batch and reads them into a padded batch."""

    def __init__(self, store: ShotStore, max_shots: int, process_index: int, process_count: int):
        self.store = store
        self.max_shots = max_shots
        self.process_index = process_index
        self.process_count = process_count

    def __call__(self, samples: list[WindowSample]) -> dict[str, np.ndarray]:
        per_host = len(samples) // self.process_count
        share = samples[self.process_index * per_host : (self.process_index + 1) * per_host]
        return read_batch(self.store, share, self.max_shots)


def read_batch(
    store: ShotStore, samples: list[WindowSample], max_shots: int
) -> dict[str, np.ndarray]:
    """Reads windows into the §3.3 batch; padding rows are zero and never masked."""
    b, w = len(samples), max_shots
    shots = np.zeros((b, w, store.num_features), np.float16)
    present = np.zeros((b, w, store.num_modalities), np.uint8)
    valid = np.zeros((b, w), bool)
    masked = np.zeros((b, w), bool)
    rows = []
    for i, sample in enumerate(samples):
        first = int(store.offsets[sample.title]) + sample.start
        rows.append((first, first + sample.length))
        present[i, : sample.length] = store.present[first : first + sample.length]
        valid[i, : sample.length] = True
        masked[i, sample.masked] = True
    store.read_windows_into(shots, rows)
    titles = np.array([s.title for s in samples], np.int32)
    return {
        "shots": shots,
        "present": present,
        "valid": valid,
        "masked": masked,
        "title_embedding": store.title_embedding[titles].astype(np.float16),
        "title_index": titles,
        "window_start": np.array([s.start for s in samples], np.int32),
    }


def windows_per_epoch(store: ShotStore, split: str | None, max_shots: int) -> int:
    titles = np.asarray(store.titles_in_split(split), np.int64)
    lengths = store.offsets[titles + 1] - store.offsets[titles]
    return int(np.maximum(1, -(-lengths // max_shots)).sum())


def make_dataset(
    store: ShotStore,
    *,
    global_batch_size: int,
    max_shots: int,
    seed: int,
    split: str | None = "train",
    mask_ratio: float = 0.2,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """The random-access dataset of this host's batches (index = global batch number)."""
    if global_batch_size % process_count:
        raise ValueError(
            f"train.batch_size={global_batch_size} is not divisible by the {process_count} processes"
        )
    titles = np.asarray(store.titles_in_split(split), np.int64)
    if len(titles) == 0:
        raise ValueError(f"{store.root}: no titles in split {split!r}")
    lengths = (store.offsets[1:] - store.offsets[:-1]).astype(np.int64)
    table = window_table(lengths[titles], titles, max_shots)
    return (
        grain.MapDataset.source(table)
        .shuffle(seed=seed)
        .repeat(None)
        .random_map(_DrawWindow(lengths, max_shots, mask_ratio), seed=seed + 1)
        .batch(global_batch_size, drop_remainder=True, batch_fn=list)
        .map(_ReadHostShare(store, max_shots, process_index, process_count))
    )


class BatchIterator:
    """An iterator of host batches with a bounded prefetch and a tiny, portable state."""

    def __init__(self, dataset: grain.MapDataset, prefetch: int = 2, threads: int = 2):
        threads = max(1, threads)
        options = grain.ReadOptions(
            num_threads=threads, prefetch_buffer_size=max(prefetch, threads)
        )
        self._iterator = iter(dataset.to_iter_dataset(options))

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iterator)

    def get_state(self) -> dict[str, Any]:
        return {"next_batch": int(self._iterator.get_state()["next_index"])}

    def set_state(self, state: dict[str, Any]) -> None:
        self._iterator.set_state({"next_index": int(state["next_batch"])})


def steps_per_epoch(store: ShotStore, split: str | None, max_shots: int, batch_size: int) -> int:
    return max(1, math.floor(windows_per_epoch(store, split, max_shots) / batch_size))
