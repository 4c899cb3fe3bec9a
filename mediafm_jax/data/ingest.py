"""Ingest source (docs/DESIGN.md §3.1) -> shot store (§3.2), validated and committed atomically.

Two passes: the first reads only npz headers and the metadata files, so every structural
problem (missing or unknown titles, ranks, dtypes, dims) is reported before a byte is
written; the second streams titles through a one-shard buffer (memory bounded by a shard
plus one title), checks values (NaN/Inf, shot times) and writes shard-aligned blocks. A
local store is built in a sibling ``.partial`` folder and swapped into place (``outputs``); the manifest
is always written last, so an interrupted ingest never leaves a store that opens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mediafm_jax import outputs
from mediafm_jax.data import source
from mediafm_jax.data import store as store_lib
from mediafm_jax.errors import IngestError
from mediafm_jax.fusion import fuse

FLOAT16_MAX = float(np.finfo(np.float16).max)
FLOAT32_MAX = float(np.finfo(np.float32).max)
# What reading a damaged npz member can raise (short data, bad CRC, bad deflate stream).
READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


@dataclasses.dataclass(frozen=True)
class TitleHeader:
    title_id: str
    split: str | None
    path: Path
    num_shots: int
    has_times: bool
    has_title_embedding: bool


@dataclasses.dataclass(frozen=True)
class IngestSummary:
    store: str
    titles: int
    shots: int
    bytes_written: int
    seconds: float
    empty_titles: tuple[str, ...] = ()  # absent in every modality, in every shot


def scan_source(src: Path) -> tuple[list[TitleHeader], list[store_lib.Modality], int]:
    """Validates structure from headers; returns titles, modality columns and title dim."""
    titles = source.read_titles(src)
    shots_dir = src / source.SHOTS
    known = {t for t, _ in titles}
    if shots_dir.is_dir():
        for npz in sorted(shots_dir.glob("*.npz")):
            if npz.stem not in known:
                raise IngestError(f"{npz}: unknown title id {npz.stem!r} (not in titles.jsonl)")
    modality_dims: dict[str, int] | None = None
    first_title = ""
    title_dim: int | None = None
    headers: list[TitleHeader] = []
    for title_id, split in titles:
        path = source.shots_path(src, title_id)
        if not path.is_file():
            raise IngestError(f"title {title_id!r}: listed in titles.jsonl but {path} is missing")
        arrays = source.npz_headers(path)
        unknown = set(arrays) - set(store_lib.MODALITY_ORDER) - set(source.OPTIONAL_KEYS)
        if unknown:
            raise IngestError(f"{path}: unexpected arrays {sorted(unknown)}")
        dims: dict[str, int] = {}
        lengths = set()
        for name in store_lib.MODALITY_ORDER:
            if name not in arrays:
                continue
            shape, dtype = arrays[name]
            if dtype.kind != "f":
                raise IngestError(f"{path}: '{name}' has dtype {dtype}, expected a float type")
            if len(shape) != 2:
                raise IngestError(f"{path}: '{name}' has shape {shape}, expected [shots, dim]")
            if shape[1] == 0:
                raise IngestError(
                    f"{path}: '{name}' has width 0 (shape {shape}); leave an absent modality "
                    "out of the npz"
                )
            dims[name] = shape[1]
            lengths.add(shape[0])
        if not dims:
            raise IngestError(f"{path}: has none of the modalities {store_lib.MODALITY_ORDER}")
        if len(lengths) != 1:
            raise IngestError(
                f"{path}: modalities disagree on the number of shots {sorted(lengths)}"
            )
        num_shots = lengths.pop()
        if num_shots == 0:
            raise IngestError(f"{path}: title {title_id!r} has no shots")
        if modality_dims is None:
            modality_dims, first_title = dims, title_id
        elif dims != modality_dims:
            raise IngestError(
                f"{path}: modality dims {dims} differ from {modality_dims} of title {first_title!r}"
            )
        for key in ("start_s", "end_s"):
            if key in arrays and arrays[key][1].kind not in "fiu":
                raise IngestError(
                    f"{path}: '{key}' has dtype {arrays[key][1]}, expected numbers of seconds"
                )
            if key in arrays and arrays[key][0] != (num_shots,):
                raise IngestError(
                    f"{path}: '{key}' has shape {arrays[key][0]}, expected ({num_shots},)"
                )
        if ("start_s" in arrays) != ("end_s" in arrays):
            raise IngestError(f"{path}: has one of start_s/end_s but not the other")
        if "title_embedding" in arrays:
            shape, dtype = arrays["title_embedding"]
            if len(shape) != 1 or dtype.kind != "f" or shape[0] == 0:
                raise IngestError(
                    f"{path}: 'title_embedding' must be a non-empty float vector, got "
                    f"{shape} {dtype}"
                )
            if title_dim is not None and shape[0] != title_dim:
                raise IngestError(
                    f"{path}: title_embedding dim {shape[0]}, other titles have {title_dim}"
                )
            title_dim = shape[0]
        headers.append(
            TitleHeader(
                title_id, split, path, num_shots, "start_s" in arrays, "title_embedding" in arrays
            )
        )
    assert modality_dims is not None
    modalities, column = [], 0
    for name in store_lib.MODALITY_ORDER:
        if name in modality_dims:
            modalities.append(store_lib.Modality(name, column, column + modality_dims[name]))
            column += modality_dims[name]
    return headers, modalities, title_dim or 0


def _load_title(
    header: TitleHeader, modalities: list[store_lib.Modality], title_dim: int
) -> dict[str, np.ndarray]:
    """Loads and value-checks one title; returns its rows ready to write."""
    path = header.path
    with np.load(path) as data:

        def read(name: str) -> np.ndarray:
            try:
                return np.asarray(data[name])
            except READ_ERRORS as err:
                raise IngestError(f"{path}: cannot read '{name}' ({err})") from None

        columns = []
        for modality in modalities:
            values = read(modality.name)
            bad = ~np.isfinite(values)
            if bad.any():
                shot = int(np.argwhere(bad)[0][0])
                raise IngestError(f"{path}: '{modality.name}' is NaN/Inf at shot {shot}")
            big = np.abs(values) > FLOAT16_MAX
            if big.any():
                shot = int(np.argwhere(big)[0][0])
                raise IngestError(f"{path}: '{modality.name}' overflows float16 at shot {shot}")
            columns.append(values)
        times = np.full((header.num_shots, 2), np.nan, np.float32)
        if header.has_times:
            start = read("start_s").astype(np.float64)
            end = read("end_s").astype(np.float64)
            _check_times(header, start, end)
            times = np.stack([start, end], axis=1).astype(np.float32)
        title_embedding = np.zeros((max(title_dim, 1),), np.float16)
        if header.has_title_embedding:
            vector = read("title_embedding")
            if not np.isfinite(vector).all():
                raise IngestError(f"{path}: 'title_embedding' has NaN/Inf")
            big = np.abs(vector) > FLOAT16_MAX
            if big.any():
                at = int(np.argmax(big))
                raise IngestError(
                    f"{path}: title {header.title_id!r} 'title_embedding'[{at}] = "
                    f"{vector[at]:g} overflows float16 (max {FLOAT16_MAX:g})"
                )
            title_embedding[:title_dim] = vector
    present = np.stack([np.any(c != 0, axis=1) for c in columns], axis=1).astype(np.uint8)
    shots = np.concatenate(columns, axis=1).astype(np.float16)
    return {"shots": shots, "present": present, "times": times, "title_embedding": title_embedding}


def title_mean(shots_nf: np.ndarray) -> np.ndarray:
    """[F] float32: the mean of a title's fused shots (``fusion.fuse`` with the default,
    no per-modality norm: the store does not know the model, so ``config`` refuses
    ``model.per_modality_norm`` with a title_mean [GLOBAL]) over its shots with content;
    zeros when none.

    Accumulated in float64, so the summary does not depend on the title's length.
    """
    x_nf = shots_nf.astype(np.float64)
    content = np.any(x_nf != 0, axis=1)
    if not content.any():
        return np.zeros(shots_nf.shape[1], np.float32)
    return fuse(x_nf[content], [(0, x_nf.shape[1])]).mean(0).astype(np.float32)


def _check_times(header: TitleHeader, start: np.ndarray, end: np.ndarray) -> None:
    where = header.path
    for name, values in (("start_s", start), ("end_s", end)):
        bad = ~np.isfinite(values) | (values < 0) | (values > FLOAT32_MAX)
        if bad.any():
            shot = int(np.argmax(bad))
            raise IngestError(
                f"{where}: '{name}' is negative, not finite or too large at shot {shot}"
            )
    backwards = end < start
    if backwards.any():
        shot = int(np.argmax(backwards))
        raise IngestError(
            f"{where}: shot {shot} ends ({end[shot]}) before it starts ({start[shot]})"
        )
    not_monotonic = np.diff(start) < 0
    if not_monotonic.any():
        shot = int(np.argmax(not_monotonic)) + 1
        raise IngestError(f"{where}: start_s goes backwards at shot {shot}")


def ingest(
    src: str | Path,
    store: str,
    overwrite: bool = False,
    shard_rows: int = store_lib.DEFAULT_SHARD_ROWS,
    progress: bool = True,
) -> IngestSummary:
    """Validates ``src`` and writes it as a complete store at ``store``."""
    import time

    started = time.perf_counter()
    src = Path(src)
    if not src.is_dir():
        raise IngestError(f"{src}: source folder does not exist")
    if store_lib.is_local(store):
        store = os.path.abspath(store)
        outputs.recover_leftovers(store)
        outputs.check_output(store, "store", overwrite=overwrite, inputs=[src])
    elif store_lib.read_manifest(store) is not None and not overwrite:
        raise IngestError(f"{store}: already holds a store (pass --overwrite to replace it)")

    headers, modalities, title_dim = scan_source(src)
    num_shots = sum(h.num_shots for h in headers)
    num_features = modalities[-1].stop

    with outputs.atomic_output(store, "store", overwrite=overwrite, inputs=[src]) as target:
        arrays = {
            "shots": store_lib.create_array(
                target, "shots", (num_shots, num_features), "float16", shard_rows
            ),
            "present": store_lib.create_array(
                target, "present", (num_shots, len(modalities)), "uint8", shard_rows
            ),
            "shot_times": store_lib.create_array(
                target, "shot_times", (num_shots, 2), "float32", shard_rows
            ),
        }
        title_embeddings = np.zeros((len(headers), max(title_dim, 1)), np.float16)
        title_means = np.zeros((len(headers), num_features), np.float32)
        offsets = np.zeros(len(headers) + 1, np.int64)
        digest = hashlib.blake2b(digest_size=16)
        writer = _ShardWriter(arrays, shard_rows)
        bar = tqdm(
            total=num_shots,
            unit="shot",
            desc="ingest",
            disable=None if progress else True,
            unit_scale=True,
        )
        empty = []
        for index, header in enumerate(headers):
            rows = _load_title(header, modalities, title_dim)
            if not rows["present"].any():
                empty.append(header.title_id)
            digest.update(rows["shots"].tobytes())
            writer.append(rows["shots"], rows["present"], rows["times"])
            title_embeddings[index] = rows["title_embedding"]
            title_means[index] = title_mean(rows["shots"])
            offsets[index + 1] = offsets[index] + header.num_shots
            bar.update(header.num_shots)
        writer.flush()
        bar.close()
        store_lib.create_array(target, "title_offsets", offsets.shape, "int64", shard_rows).write(
            offsets
        ).result()
        store_lib.create_array(
            target, "title_embedding", title_embeddings.shape, "float16", shard_rows
        ).write(title_embeddings).result()
        store_lib.create_array(
            target, store_lib.TITLE_MEAN, title_means.shape, "float32", shard_rows
        ).write(title_means).result()
        digest.update(offsets.tobytes())
        manifest = {
            "format_version": store_lib.FORMAT_VERSION,
            "modalities": [dataclasses.asdict(m) for m in modalities],
            "title_ids": [h.title_id for h in headers],
            "splits": [h.split for h in headers],
            "title_dim": title_dim,
            "counts": {"titles": len(headers), "shots": num_shots, "features": num_features},
            "shard_rows": shard_rows,
            "checksums": {"shots_and_offsets_blake2b": digest.hexdigest()},
            "source": str(src.resolve()),
            store_lib.TITLE_MEAN: "mean fused shot (concat -> unit norm) over shots with content",
        }
        store_lib.write_manifest(target, manifest, progress=progress)
    if empty:  # kept (the pipeline masks none of their shots), never silently
        more = f", ... ({len(empty)} titles)" if len(empty) > 5 else ""
        print(
            f"ingest: warning: {', '.join(empty[:5])}{more}: absent in every modality in every "
            "shot (all zeros); kept without shot content, drop them from titles.jsonl if unwanted",
            file=sys.stderr,
        )
    elapsed = time.perf_counter() - started
    bytes_written = num_shots * num_features * 2
    return IngestSummary(store, len(headers), num_shots, bytes_written, elapsed, tuple(empty))


class _ShardWriter:
    """Buffers rows and writes whole shards, so each shard file is written exactly once."""

    def __init__(self, arrays: dict[str, Any], shard_rows: int):
        self.arrays = arrays
        self.shard_rows = shard_rows
        self.buffers = {
            name: np.zeros((shard_rows, *arr.shape[1:]), arr.dtype.numpy_dtype)
            for name, arr in arrays.items()
        }
        self.filled = 0
        self.written = 0
        self.pending: list[Any] = []

    def append(self, shots: np.ndarray, present: np.ndarray, times: np.ndarray) -> None:
        parts = {"shots": shots, "present": present, "shot_times": times}
        done = 0
        while done < len(shots):
            take = min(self.shard_rows - self.filled, len(shots) - done)
            for name, values in parts.items():
                self.buffers[name][self.filled : self.filled + take] = values[done : done + take]
            self.filled += take
            done += take
            if self.filled == self.shard_rows:
                self.flush()

    def flush(self) -> None:
        for future in self.pending:
            future.result()
        self.pending = []
        if self.filled == 0:
            return
        start, stop = self.written, self.written + self.filled
        for name, arr in self.arrays.items():
            # Copy so the buffer can refill while this shard is being written.
            block = self.buffers[name][: self.filled].copy()
            self.pending.append(arr[start:stop].write(block))
        self.written = stop
        self.filled = 0
        if stop == self.arrays["shots"].shape[0]:
            for future in self.pending:
                future.result()
            self.pending = []
