"""The embedding store (``mediafm embed``): per-shot embeddings aligned row for row with a
shot store, beside it in layout and in integrity.

A zarr v3 group with ``shot_embedding`` float32 [S, D] and ``cls_embedding`` float32
[T, H], and ``manifest.json`` written last (kind ``embeddings``): the run, step and readout
that made it, the shot store it was made from (path and checksum), its title ids and
counts, and the same file table (size, sha256) and self-checksum as a shot store's
(``data/store.py``): opening checks structure and sizes, ``verify()`` hashes every byte.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from mediafm_jax.data import store as store_lib
from mediafm_jax.data.store import ShotStore
from mediafm_jax.errors import StoreError

FORMAT_VERSION = 1
KIND = "embeddings"
SHOTS = "shot_embedding"
CLS = "cls_embedding"
SHARD_ROWS = 8192


class EmbeddingStore:
    """A written embedding store: ``shot_embedding`` [S, D] and ``cls_embedding`` [T, H]."""

    def __init__(self, root: str | Path):
        root = str(root)
        manifest = store_lib.read_manifest(root)
        if manifest is None or manifest.get("kind") != KIND:
            raise StoreError(f"{root}: not a complete embedding store (no embeddings manifest)")
        store_lib.check_files(root, manifest)  # every listed file, at its recorded size
        self.root = root
        self.manifest = manifest
        self.title_ids: list[str] = manifest["title_ids"]

    @property
    def layers(self) -> str | None:
        """The readout it was written with."""
        return self.manifest.get("layers")

    @property
    def num_shots(self) -> int:
        return int(self.manifest.get("counts", {}).get("shots", -1))

    def per_modality_norm(self) -> bool:
        """Its run's ``model.per_modality_norm`` (how ``concat`` baselines fuse); a store
        written before embed recorded it gets the default fusion, said on stderr."""
        if "per_modality_norm" not in self.manifest:
            print(
                f"{self.root}: does not record its run's fusion (written by an older mediafm "
                "embed): concat uses the default fusion (no per-modality norm)",
                file=sys.stderr,
            )
            return False
        return bool(self.manifest["per_modality_norm"])

    def verify(self, progress: bool = True) -> tuple[int, int]:
        """Hashes every byte; names the first damaged file. Returns (files, bytes)."""
        return store_lib.verify_files(self.root, self.manifest, progress=progress)

    def _read(self, name: str) -> np.ndarray:
        return store_lib.read_array(self.root, name)  # missing chunks are errors, not zeros

    def shot_embeddings(self) -> np.ndarray:
        return self._read(SHOTS)

    def cls_embeddings(self) -> np.ndarray:
        return self._read(CLS)

    def check_aligned(self, store: ShotStore) -> None:
        """Raises unless this was written from ``store`` (same titles, rows and checksum)."""
        if self.title_ids != store.title_ids or self.num_shots != store.num_shots:
            raise StoreError(
                f"{self.root}: embedding store is not aligned with the shot store {store.root} "
                f"({len(self.title_ids)} titles / {self.num_shots} shots vs "
                f"{store.num_titles} titles / {store.num_shots} shots)"
            )
        theirs, ours = self.manifest.get("shot_store_checksum"), store.manifest.get("checksums")
        if theirs and ours and theirs != ours:
            raise StoreError(
                f"{self.root}: embedding store was written from other shots than {store.root} "
                "(checksums differ; re-run `mediafm embed`)"
            )


def create(target: str, store: ShotStore, shot_dim: int, cls_dim: int):
    """The two arrays of a new embedding store under ``target``: (shots, cls) TensorStores."""
    shots = store_lib.create_array(
        target, SHOTS, (store.num_shots, shot_dim), "float32", SHARD_ROWS
    )
    cls = store_lib.create_array(target, CLS, (store.num_titles, cls_dim), "float32", SHARD_ROWS)
    return shots, cls


def write_manifest(target: str, store: ShotStore, made_by: dict[str, Any]) -> None:
    """Seals a written embedding store: ``made_by`` (run, step, layers, hidden_size,
    shot_dim) plus the shot store's identity, title ids and counts, and the file table."""
    store_lib.write_manifest(
        target,
        {
            "format_version": FORMAT_VERSION,
            "kind": KIND,
            **made_by,
            "title_ids": store.title_ids,
            "shot_store": store.root,
            "shot_store_checksum": store.manifest.get("checksums"),
            "counts": {"titles": store.num_titles, "shots": store.num_shots},
        },
    )
