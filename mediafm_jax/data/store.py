"""The TensorStore shot store (DESIGN.md §3.2).

One zarr v3 group per catalog: raw modality columns side by side in ``shots`` (fp16,
sharded codec, 64-row inner chunks, no compression), a presence mask, CSR title offsets,
title embeddings, shot times, and ``manifest.json`` written last. Reads are of contiguous
rows only; fusion happens on the device.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorstore as ts

from mediafm_jax.errors import StoreError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INNER_CHUNK_ROWS = 64
DEFAULT_SHARD_ROWS = 64 * 128  # 8192 rows: about 38 MB per shard file at 2304 columns
MODALITY_ORDER = ("video", "audio", "text")


@dataclasses.dataclass(frozen=True)
class Modality:
    name: str
    start: int  # first column in ``shots``
    stop: int  # one past the last column

    @property
    def dim(self) -> int:
        return self.stop - self.start


def kvstore_spec(url: str) -> dict[str, Any]:
    """A TensorStore kvstore spec for a local path, ``gs://`` or ``s3://`` URL."""
    for scheme, driver in (("gs://", "gcs"), ("s3://", "s3")):
        if url.startswith(scheme):
            bucket, _, path = url[len(scheme) :].partition("/")
            return {"driver": driver, "bucket": bucket, "path": path.rstrip("/") + "/"}
    return {"driver": "file", "path": os.path.abspath(url).rstrip("/") + "/"}


def is_local(url: str) -> bool:
    return not url.startswith(("gs://", "s3://"))


def _array_spec(
    root: str, name: str, shape: Sequence[int], dtype: str, shard_rows: int
) -> dict[str, Any]:
    trailing = [int(d) for d in shape[1:]]
    kv = kvstore_spec(root)
    kv["path"] += name + "/"
    return {
        "driver": "zarr3",
        "kvstore": kv,
        "metadata": {
            "shape": list(shape),
            "data_type": dtype,
            "chunk_grid": {
                "name": "regular",
                "configuration": {"chunk_shape": [shard_rows, *trailing]},
            },
            "codecs": [
                {
                    "name": "sharding_indexed",
                    "configuration": {
                        "chunk_shape": [INNER_CHUNK_ROWS, *trailing],
                        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
                        "index_codecs": [
                            {"name": "bytes", "configuration": {"endian": "little"}},
                            {"name": "crc32c"},
                        ],
                    },
                }
            ],
        },
        "create": True,
        "delete_existing": True,
    }


def _context(cache_bytes: int = 64 << 20) -> ts.Context:
    # A small cache pool keeps shard indexes in memory so windows don't re-read them.
    return ts.Context({"cache_pool": {"total_bytes_limit": cache_bytes}})


def create_array(root: str, name: str, shape: Sequence[int], dtype: str, shard_rows: int):
    """Creates (replacing) one array of the store; returns the open TensorStore."""
    rows = max(1, min(shard_rows, int(shape[0])))
    rows = max(INNER_CHUNK_ROWS, -(-rows // INNER_CHUNK_ROWS) * INNER_CHUNK_ROWS)
    return ts.open(_array_spec(root, name, shape, dtype, rows), context=_context()).result()


def open_array(root: str, name: str):
    """Opens one existing array of a store (shots or embeddings) for reading."""
    spec = {"driver": "zarr3", "kvstore": kvstore_spec(root)}
    spec["kvstore"]["path"] += name + "/"
    return ts.open(spec, context=_context(), open=True, read=True).result()


def read_manifest(root: str) -> dict[str, Any] | None:
    kv = ts.KvStore.open(kvstore_spec(root)).result()
    result = kv.read(MANIFEST).result()
    if result.state != "value":
        return None
    return json.loads(bytes(result.value).decode())


def write_manifest(root: str, manifest: dict[str, Any]) -> None:
    kv = ts.KvStore.open(kvstore_spec(root)).result()
    kv.write(MANIFEST, json.dumps(manifest, indent=1).encode()).result()


class ShotStore:
    """A read-only view of a complete store.

    TensorStore handles are opened lazily in each process (they are not fork-safe) and
    dropped when pickled, so a store can be handed to worker processes. With ``in_memory``
    the whole shot table is copied into host RAM once, and windows become plain slices.
    """

    def __init__(self, root: str, in_memory: bool = False):
        manifest = read_manifest(root)
        if manifest is None:
            raise StoreError(
                f"{root}: not a complete shot store (no {MANIFEST}; "
                "an ingest that failed or is still running leaves none)"
            )
        if manifest.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{root}/{MANIFEST}: format_version {manifest.get('format_version')}, "
                f"this mediafm-jax reads {FORMAT_VERSION}"
            )
        self.root = root
        self.manifest = manifest
        self.in_memory = in_memory
        self.modalities = [
            Modality(m["name"], m["start"], m["stop"]) for m in manifest["modalities"]
        ]
        self.title_ids: list[str] = list(manifest["title_ids"])
        self._index_by_id = {t: i for i, t in enumerate(self.title_ids)}
        self.splits: list[str | None] = list(manifest["splits"])
        self.title_dim: int = int(manifest["title_dim"])
        self.num_shots: int = int(manifest["counts"]["shots"])
        self.num_features: int = int(manifest["counts"]["features"])
        self._handles: dict[str, Any] = {}
        self._memory: np.ndarray | None = None
        self.offsets = self._read_all("title_offsets").astype(np.int64)
        self.present = self._read_all("present")
        self.title_embedding = self._read_all("title_embedding")[:, : self.title_dim]
        if self.offsets[-1] != self.num_shots:
            raise StoreError(
                f"{root}: title_offsets end at {self.offsets[-1]}, expected {self.num_shots}"
            )

    # -- pickling: handles are per process ------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def _array(self, name: str):
        if name not in self._handles:
            self._handles[name] = open_array(self.root, name)
        return self._handles[name]

    def _read_all(self, name: str) -> np.ndarray:
        return np.asarray(self._array(name).read().result())

    # -- metadata --------------------------------------------------------------------------
    @property
    def num_titles(self) -> int:
        return len(self.title_ids)

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    def title_length(self, title: int) -> int:
        return int(self.offsets[title + 1] - self.offsets[title])

    def title_index(self, title_id: str) -> int:
        if title_id not in self._index_by_id:
            raise StoreError(f"{self.root}: unknown title id {title_id!r}")
        return self._index_by_id[title_id]

    def titles_in_split(self, split: str | None) -> list[int]:
        """Title indices of a split; every title when the catalog has no splits."""
        if split is None or all(s is None for s in self.splits):
            return list(range(self.num_titles))
        return [i for i, s in enumerate(self.splits) if s == split]

    def shot_times(self) -> np.ndarray:
        return self._read_all("shot_times")

    # -- reads -----------------------------------------------------------------------------
    def load_into_memory(self) -> None:
        if self._memory is None:
            self._memory = self._read_all("shots")
        self.in_memory = True

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Shots ``[start, stop)`` as float16 [n, F]."""
        if self.in_memory:
            self.load_into_memory()
            return self._memory[start:stop]
        return np.asarray(self._array("shots")[start:stop].read().result())

    def read_windows_into(self, out: np.ndarray, rows: Sequence[tuple[int, int]]) -> None:
        """Copies row ranges ``rows[i] = (start, stop)`` into ``out[i, :stop-start]``.

        From memory this is one copy per window; from TensorStore all reads are issued at
        once and copied as they complete.
        """
        if self.in_memory:
            self.load_into_memory()
            for i, (start, stop) in enumerate(rows):
                out[i, : stop - start] = self._memory[start:stop]
            return
        shots = self._array("shots")
        futures = [shots[start:stop].read() for start, stop in rows]
        for i, ((start, stop), future) in enumerate(zip(rows, futures, strict=True)):
            out[i, : stop - start] = future.result()

    def title_rows(self, title: int) -> tuple[int, int]:
        return int(self.offsets[title]), int(self.offsets[title + 1])


def disk_bytes(root: str) -> int | None:
    """Bytes on disk of a local store (None for object stores)."""
    if not is_local(root):
        return None
    total = 0
    for dirpath, _, files in os.walk(root):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total
