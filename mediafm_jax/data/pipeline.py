"""The Grain input pipeline: shot windows -> the batch of docs/DESIGN.md §3.3.

The dataset is a random-access Grain ``MapDataset`` over *global* batches:

    window table (a title of L shots appears ceil(L / W) times per epoch)
      -> shuffle(seed), reshuffled every epoch -> repeat
      -> batch(global batch size)
      -> window starts and target positions drawn for the whole global batch from
         (seed, batch index), vectorized (targets by ``masking.draw_targets``);
         this host's rows read and padded (``reader.read_windows``)

Everything random is a pure function of (seed, index), so the iterator's whole state is
the index of the next global batch (Grain's ``{"next_index": i}``). It does not depend on
the number of read threads or hosts: a run restored with other counts continues on the
identical next global batch, and each host takes its own contiguous slice of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grain
import numpy as np

from mediafm_jax import masking, streams
from mediafm_jax.data import reader
from mediafm_jax.data.store import ShotStore


def window_table(lengths: np.ndarray, titles: np.ndarray, max_shots: int) -> np.ndarray:
    """Title indices, each repeated ceil(L / max_shots) times: one epoch of windows."""
    repeats = np.maximum(1, -(-lengths // max_shots))
    return np.repeat(titles, repeats)


def draw_windows(
    titles: np.ndarray,
    offsets: np.ndarray,
    max_shots: int,
    mask_ratio: float,
    seed: int,
    index: int,
    has_content: np.ndarray | None = None,
    span_mean: float = 0.0,
) -> dict[str, np.ndarray]:
    """Window starts and target positions of global batch ``index``, vectorized.

    One generator per global batch, ``streams.data_rng(seed, index)``: every host draws
    the same global batch and takes its rows, so the draw does not depend on the host
    count.
    ``offsets`` are the store's title offsets (title t is shots offsets[t]:offsets[t+1]);
    ``has_content`` (bool per shot of the store, in store order) limits the targets to
    shots with at least one modality (see ``masking``); ``span_mean`` > 0 draws them
    in runs (``masking.draw_span_mask``).
    """
    rng = streams.data_rng(seed, index)
    total = offsets[titles + 1] - offsets[titles]
    length = np.minimum(total, max_shots)
    start = np.floor(rng.random(len(titles)) * (total - length + 1)).astype(np.int64)
    positions = np.arange(max_shots)[None, :]
    selectable = positions < length[:, None]  # padding is never selected
    if has_content is not None:
        first = offsets[titles] + start
        shot = np.minimum(first[:, None] + positions, len(has_content) - 1)
        selectable &= has_content[shot]
    targets = masking.draw_targets(rng, selectable, mask_ratio, span_mean)
    return {"title": titles.astype(np.int64), "start": start, "length": length, "targets": targets}


class _ReadHostShare:
    """Draws a global batch, keeps this host's rows and reads them into a padded batch."""

    def __init__(
        self,
        store: ShotStore,
        max_shots: int,
        mask_ratio: float,
        seed: int,
        process_index: int,
        process_count: int,
        span_mean: float = 0.0,
        global_input: str = "title_embedding",
    ):
        self.store = store
        self.span_mean = span_mean
        self.global_input = global_input
        self.has_content = store.present.any(-1)
        self.max_shots = max_shots
        self.mask_ratio = mask_ratio
        self.seed = seed
        self.process_index = process_index
        self.process_count = process_count

    def __call__(self, index: int, titles: np.ndarray) -> dict[str, np.ndarray]:
        drawn = draw_windows(
            titles,
            self.store.offsets,
            self.max_shots,
            self.mask_ratio,
            self.seed,
            index,
            self.has_content,
            self.span_mean,
        )
        per_host = len(titles) // self.process_count
        rows = slice(self.process_index * per_host, (self.process_index + 1) * per_host)
        batch = reader.read_windows(
            self.store,
            drawn["title"][rows],
            drawn["start"][rows],
            drawn["length"][rows],
            self.max_shots,
            self.global_input,
        )
        return batch | {"targets": drawn["targets"][rows]}


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
    span_mean: float = 0.0,
    global_input: str = "title_embedding",
) -> grain.MapDataset:
    """The random-access dataset of this host's batches (index = global batch number)."""
    store.global_vectors(global_input)  # a store without the asked-for vector fails here
    if global_batch_size % process_count:
        raise ValueError(
            f"train.batch_size={global_batch_size} is not divisible by the {process_count} processes"
        )
    titles = np.asarray(store.titles_in_split(split), np.int64)
    if len(titles) == 0:
        raise ValueError(f"{store.root}: no titles in split {split!r}")
    lengths = (store.offsets[1:] - store.offsets[:-1]).astype(np.int64)
    table = window_table(lengths[titles], titles, max_shots)
    read_share = _ReadHostShare(
        store, max_shots, mask_ratio, seed, process_index, process_count, span_mean, global_input
    )
    return (
        grain.MapDataset.source(table)
        .shuffle(seed=seed)
        .repeat(None)
        .batch(global_batch_size, drop_remainder=True)
        .map_with_index(read_share)
    )


class BatchIterator:
    """An iterator of host batches with a bounded prefetch and a tiny, portable state."""

    def __init__(self, dataset: grain.MapDataset, *, prefetch: int, threads: int):
        """``prefetch``, ``threads``: ``config.data``'s (no second set of defaults here)."""
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
