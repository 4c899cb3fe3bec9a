"""The embedding store (``mediafm embed``): per-shot embeddings aligned row for row with a
shot store, beside it in layout and in integrity.

A zarr v3 group with ``shot_embedding`` float32 [S, D] and ``cls_embedding`` float32
[T, H], and ``manifest.json`` written last (kind ``embeddings``): the run, step and readout
that made it, the shot store it was made from (path and checksum), its title ids and
counts, and the same file table (size, sha256) and self-checksum as a shot store's
(``data/store.py``): opening checks structure and sizes, ``verify()`` hashes every byte.

Reading is checked too, because search and probe read every row anyway: the manifest's
``content_sha256`` is the sha256 of each array's values (row-major float32 bytes), and a
read whose values do not hash to it is refused, so damaged bytes are never used as
embeddings (a store written before the digest existed has its files hashed instead). A
non-finite row is an error naming its title and shot (``check_finite``).
"""

from __future__ import annotations

import hashlib
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
REMEDY = "re-run `mediafm embed`"
IN_FLIGHT_TITLES = 8  # bounds the rows held for writes not yet done
CONTENT = "content_sha256"


def digest(array: np.ndarray) -> str:
    """sha256 of an array's values as row-major bytes (what ``content_sha256`` holds)."""
    return hashlib.sha256(np.ascontiguousarray(array)).hexdigest()


class EmbeddingStore:
    """A written embedding store: ``shot_embedding`` [S, D] and ``cls_embedding`` [T, H]."""

    def __init__(self, root: str | Path):
        root = str(root)
        manifest = store_lib.read_manifest(root, REMEDY)
        if manifest is None or manifest.get("kind") != KIND:
            raise StoreError(f"{root}: not a complete embedding store (no embeddings manifest)")
        store_lib.check_files(root, manifest, REMEDY)  # every listed file, at its size
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
        return store_lib.verify_files(self.root, self.manifest, progress, REMEDY)

    def _read(self, name: str) -> np.ndarray:
        values = store_lib.read_array(self.root, name)  # missing chunks are errors, not zeros
        recorded = self.manifest.get(CONTENT, {}).get(name)
        if recorded is None:  # written before the digest: hash the array's files instead
            files = [e for e in self.manifest.get("files", []) if e["path"].startswith(name + "/")]
            store_lib.verify_files(self.root, {"files": files}, False, REMEDY)
        elif digest(values) != recorded:
            raise StoreError(
                f"{self.root}/{name}: its values do not match the manifest's digest (the store "
                f"is damaged: `mediafm info --verify {self.root}` names the file); {REMEDY}"
            )
        return values

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

    def shot_rows(self, store: ShotStore) -> np.ndarray:
        """Every shot's embedding [S, D], checked: aligned with ``store``, undamaged, finite."""
        self.check_aligned(store)
        rows_sd = self.shot_embeddings()
        check_finite(rows_sd, store, self.root)
        return rows_sd


def check_finite(rows_sd: np.ndarray, store: ShotStore, where: str) -> None:
    """Raises naming the first shot whose embedding holds a NaN or Inf."""
    bad = ~np.isfinite(rows_sd).all(axis=-1)
    if bad.any():
        title, shot = store.locate(int(np.argmax(bad)))
        raise StoreError(
            f"{where}: the embedding of title {store.title_ids[title]!r} shot {shot} is not "
            f"finite (NaN/Inf; {int(bad.sum())} of {len(bad)} shots): a diverged run? "
            f"{REMEDY} from a good checkpoint"
        )


class Writer:
    """Fills a new embedding store under ``target``: ``write_title`` per title (writes go
    out asynchronously), ``close`` seals it with the content digests and the manifest."""

    def __init__(self, target: str, store: ShotStore, shot_dim: int, cls_dim: int):
        self.target, self.store = target, store
        self.shots = store_lib.create_array(
            target, SHOTS, (store.num_shots, shot_dim), "float32", SHARD_ROWS
        )
        self.cls_array = store_lib.create_array(
            target, CLS, (store.num_titles, cls_dim), "float32", SHARD_ROWS
        )
        self.cls = np.zeros((store.num_titles, cls_dim), np.float32)
        self.pending: list[Any] = []
        self.waiting: dict[int, np.ndarray] = {}  # done titles not yet digested in row order
        self.next_title = 0
        self.hash = hashlib.sha256()

    def write_title(self, title: int, rows_ld: np.ndarray, cls_h: np.ndarray) -> None:
        rows_ld = np.ascontiguousarray(rows_ld, np.float32)
        start, stop = self.store.title_rows(title)
        self.pending.append(self.shots[start:stop].write(rows_ld))
        self.cls[title] = cls_h
        self.waiting[title] = rows_ld
        while self.next_title < self.store.num_titles:
            if self.next_title in self.waiting:
                self.hash.update(self.waiting.pop(self.next_title))
            elif self.store.title_length(self.next_title) > 0:
                break
            self.next_title += 1
        if len(self.pending) > IN_FLIGHT_TITLES:
            self.pending.pop(0).result()

    def close(self, made_by: dict[str, Any]) -> None:
        """Waits for the writes and seals the store: ``made_by`` (run, step, layers,
        hidden_size, shot_dim, per_modality_norm) plus the shot store's identity."""
        for future in self.pending:
            future.result()
        if self.next_title != self.store.num_titles:
            raise RuntimeError(f"embedding store: title {self.next_title} was never written")
        self.cls_array.write(self.cls).result()
        store = self.store
        store_lib.write_manifest(
            self.target,
            {
                "format_version": FORMAT_VERSION,
                "kind": KIND,
                "shot_dim": int(self.shots.shape[1]),
                **made_by,
                "title_ids": store.title_ids,
                "shot_store": store.root,
                "shot_store_checksum": store.manifest.get("checksums"),
                "counts": {"titles": store.num_titles, "shots": store.num_shots},
                CONTENT: {SHOTS: self.hash.hexdigest(), CLS: digest(self.cls)},
            },
        )
