"""The TensorStore shot store (docs/DESIGN.md §3.2).

One zarr v3 group per catalog: raw modality columns side by side in ``shots`` (fp16,
sharded codec, 64-row inner chunks, no compression), a presence mask, CSR title offsets,
title embeddings, shot times, and ``manifest.json`` written last. Reads are of contiguous
rows only; fusion happens on the device.

Integrity: the manifest lists every file of the store with its size and sha256 and carries
a sha256 of its own body. Opening a store checks the manifest's checksum and consistency
and every file's presence and size (no data read); ``verify()`` hashes every byte. Arrays
are opened with ``fill_missing_data_reads`` off, so a chunk that vanished is an error, never
zeros, and TensorStore read errors surface as one-line ``StoreError``s naming the store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorstore as ts
from tqdm import tqdm

from mediafm_jax.data import source
from mediafm_jax.errors import ConfigError, StoreError

# 2: every chunk is written (all-zero ones too), the manifest lists every file (size,
# sha256) and checksums its own body. Format 1 left all-zero chunks out, so a deleted chunk
# could not be told from a zero one: such stores are refused with the re-ingest command.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
MANIFEST_CHECKSUM = "manifest_sha256"
SPLITS = ("train", "val", "test")
HASH_BLOCK = 8 << 20
INNER_CHUNK_ROWS = 64
DEFAULT_SHARD_ROWS = 64 * 128  # 8192 rows: about 38 MB per shard file at 2304 columns
MODALITY_ORDER = source.MODALITIES  # the store's columns follow the source's order
# The optional label-free title summary (issue 14): the mean of the title's fused shots
# (concatenate -> unit norm, as objective.fuse does by default) over its shots with content,
# float32 [T, F]. Stores written before it lack it; only model.global_input asks for it.
TITLE_MEAN = "title_mean"
GLOBAL_INPUTS = ("title_embedding", "title_mean", "both")


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
        # Write all-zero chunks too: with missing-chunk reads refused, absent means damaged.
        "store_data_equal_to_fill_value": True,
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


def _manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest body (every key but the checksum itself), canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != MANIFEST_CHECKSUM}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def read_manifest(root: str, remedy: str = "re-ingest") -> dict[str, Any] | None:
    """The parsed manifest (None when there is none); a damaged one is a ``StoreError``
    that ends with ``remedy`` (the command that writes this kind of store)."""
    kv = ts.KvStore.open(kvstore_spec(root)).result()
    try:
        result = kv.read(MANIFEST).result()
    except ValueError as err:
        raise StoreError(f"{root}/{MANIFEST}: cannot be read ({_first_line(err)})") from None
    if result.state != "value":
        return None
    try:
        manifest = json.loads(bytes(result.value).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoreError(f"{root}/{MANIFEST}: not valid JSON ({err}); {remedy}") from None
    if not isinstance(manifest, dict):
        raise StoreError(f"{root}/{MANIFEST}: not a JSON object; {remedy}")
    recorded = manifest.get(MANIFEST_CHECKSUM)
    if recorded is not None and recorded != _manifest_digest(manifest):
        raise StoreError(
            f"{root}/{MANIFEST}: its checksum does not match its contents "
            f"(edited or damaged); {remedy}"
        )
    return manifest


def write_manifest(root: str, manifest: dict[str, Any], progress: bool = True) -> None:
    """Writes the manifest last, with the file table of ``root`` and its own checksum."""
    manifest = dict(manifest, files=file_table(root, progress=progress))
    manifest[MANIFEST_CHECKSUM] = _manifest_digest(manifest)
    kv = ts.KvStore.open(kvstore_spec(root)).result()
    kv.write(MANIFEST, json.dumps(manifest, indent=1).encode()).result()


# -- file table: sizes at open, sha256 on verify ----------------------------------------------
def _first_line(err: BaseException) -> str:
    """TensorStore's message without its source-location suffix, on one line."""
    text = str(err).split(" [source locations=")[0]
    return " ".join(text.split())


def _is_data(rel: str) -> bool:
    """Part of the store's content: not the manifest, nor a top-level dot-file (bookkeeping
    such as the output marker, which may be rewritten without changing the store)."""
    return rel != MANIFEST and not ("/" not in rel and rel.startswith("."))


def _list_files(root: str) -> dict[str, int | None]:
    """Relative path -> size (None where the object store does not say) of every data file."""
    if is_local(root):
        out: dict[str, int | None] = {}
        for dirpath, _, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                if _is_data(rel):
                    out[rel] = os.path.getsize(path)
        return out
    kv = ts.KvStore.open(kvstore_spec(root)).result()
    keys = [k.decode() if isinstance(k, bytes) else k for k in kv.list().result()]
    return {k: None for k in keys if _is_data(k)}


def _file_chunks(root: str, rel: str):
    """The bytes of one store file, in blocks (local) or whole (object stores)."""
    if is_local(root):
        with open(os.path.join(root, rel), "rb") as f:
            while block := f.read(HASH_BLOCK):
                yield block
        return
    kv = ts.KvStore.open(kvstore_spec(root)).result()
    result = kv.read(rel).result()
    if result.state != "value":
        raise FileNotFoundError(rel)
    yield bytes(result.value)


def _hash_files(root: str, files: dict[str, int | None], desc: str, progress: bool):
    """Yields (path, bytes, sha256) per file, with a byte progress bar."""
    total = sum(size or 0 for size in files.values())
    bar = tqdm(
        total=total, unit="B", unit_scale=True, desc=desc, disable=None if progress else True
    )
    for rel in sorted(files):
        digest, size = hashlib.sha256(), 0
        for block in _file_chunks(root, rel):
            digest.update(block)
            size += len(block)
            bar.update(len(block))
        yield rel, size, digest.hexdigest()
    bar.close()


def file_table(root: str, progress: bool = True) -> list[dict[str, Any]]:
    """Every file under ``root`` but the manifest: relative path, size and sha256."""
    files = _list_files(root)
    return [
        {"path": rel, "bytes": size, "sha256": digest}
        for rel, size, digest in _hash_files(root, files, "checksum", progress)
    ]


def check_files(root: str, manifest: dict[str, Any], remedy: str = "re-ingest") -> None:
    """Every listed file exists with its recorded size (sizes on local stores only).

    Reads no data: one directory walk (or one object listing) for the whole store.
    """
    on_disk = _list_files(root)
    for entry in manifest.get("files", []):
        rel, size = entry["path"], on_disk.get(entry["path"], -1)
        if size == -1:
            raise StoreError(
                f"{root}/{rel}: missing (listed in {MANIFEST}); the store is damaged, {remedy}"
            )
        if size is not None and size != entry["bytes"]:
            raise StoreError(
                f"{root}/{rel}: {size} bytes, {MANIFEST} says {entry['bytes']} "
                f"(truncated or damaged); {remedy}"
            )


def verify_files(
    root: str, manifest: dict[str, Any], progress: bool = True, remedy: str = "re-ingest"
) -> tuple[int, int]:
    """Hashes every listed file; the first one that differs is a ``StoreError``.

    Returns (files, bytes) checked.
    """
    if "files" not in manifest:
        raise StoreError(f"{root}: written before stores listed their files; write it again")
    check_files(root, manifest, remedy)
    expected = {e["path"]: e for e in manifest["files"]}
    total = 0
    listed = {rel: e["bytes"] for rel, e in expected.items()}
    for rel, size, digest in _hash_files(root, listed, "verify", progress):
        total += size
        if digest != expected[rel]["sha256"] or size != expected[rel]["bytes"]:
            raise StoreError(f"{root}/{rel}: checksum mismatch (the file is damaged); {remedy}")
    return len(expected), total


def open_array(root: str, name: str, context: ts.Context | None = None):
    """Opens one array for reading; a missing chunk reads as an error, not as zeros."""
    spec = {"driver": "zarr3", "kvstore": kvstore_spec(root), "fill_missing_data_reads": False}
    spec["kvstore"]["path"] += name + "/"
    try:
        return ts.open(spec, context=context or _context(), open=True, read=True).result()
    except ValueError as err:
        raise StoreError(
            f"{root}/{name}: cannot be opened ({_first_line(err)}); re-ingest"
        ) from None


def read_array(root: str, name: str) -> np.ndarray:
    """One whole array, read errors as one-line ``StoreError``s."""
    try:
        return np.asarray(open_array(root, name).read().result())
    except StoreError:
        raise
    except ValueError as err:
        raise StoreError(f"{root}/{name}: cannot be read ({_first_line(err)}); re-ingest") from None


def _why_no_store(root: str) -> str:
    """What a folder without a manifest is: another output of ours named by its marker (a
    source, a run, a demo: the usual slip for --store), else an unfinished store."""
    from mediafm_jax import outputs

    kind = outputs.kind_of(root) if is_local(root) else None
    if kind == "source":
        return f"is an ingest source, not a shot store (make one: mediafm ingest {root} STORE)"
    if kind == "demo":
        return f"is a demo folder, not a shot store (its store is {os.path.join(root, 'store')})"
    if kind is not None and kind != "store":
        return f"is a {kind} folder, not a shot store"
    return (
        f"not a complete shot store (no {MANIFEST}; an ingest that failed or is still "
        "running leaves none)"
    )


class ShotStore:
    """A read-only view of a complete store.

    TensorStore handles are opened lazily in each process (they are not fork-safe) and
    dropped when pickled, so a store can be handed to worker processes. With ``in_memory``
    the whole shot table is copied into host RAM once, and windows become plain slices.
    """

    def __init__(self, root: str, in_memory: bool = False):
        manifest = read_manifest(root)
        if manifest is None:
            raise StoreError(f"{root}: {_why_no_store(root)}")
        if manifest.get("kind", "shots") != "shots":
            raise StoreError(f"{root}: a store of {manifest.get('kind')}, not of shots")
        version = manifest.get("format_version")
        if version == 1:
            source = manifest.get("source", "SRC")
            raise StoreError(
                f"{root}: written by an older mediafm-jax (store format 1, without integrity "
                f"checks); re-ingest it: mediafm ingest {source} NEW_STORE, then remove this one "
                "(it lists no files, so --overwrite cannot tell its files from yours)"
            )
        if version != FORMAT_VERSION:
            raise StoreError(
                f"{root}/{MANIFEST}: format_version {version!r}, this mediafm-jax reads "
                f"{FORMAT_VERSION}"
            )
        self.root = root
        self.manifest = manifest
        self.in_memory = in_memory
        try:
            self._parse_manifest(manifest)
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, StoreError):
                raise
            raise StoreError(
                f"{root}/{MANIFEST}: malformed ({type(err).__name__}: {err}); re-ingest"
            ) from None
        check_files(root, manifest)
        self._handles: dict[str, Any] = {}
        self._memory: np.ndarray | None = None
        self._check_arrays()
        self.offsets = self._read_all("title_offsets").astype(np.int64)
        self._check_offsets()
        self.present = self._read_all("present")
        self.title_embedding = self._read_all("title_embedding")[:, : self.title_dim]
        self.title_mean: np.ndarray | None = (
            self._read_all(TITLE_MEAN) if self.has_title_mean else None
        )
        self._both: np.ndarray | None = None

    def _parse_manifest(self, manifest: dict[str, Any]) -> None:
        """Reads the manifest's fields and checks they agree with each other (no I/O)."""
        where = f"{self.root}/{MANIFEST}"
        counts = manifest["counts"]
        self.num_shots = _count(counts["shots"], where, "counts.shots")
        self.num_features = _count(counts["features"], where, "counts.features")
        self.title_dim = _count(manifest["title_dim"], where, "title_dim")
        self.modalities = [
            Modality(
                m["name"], _count(m["start"], where, "start"), _count(m["stop"], where, "stop")
            )
            for m in manifest["modalities"]
        ]
        column = 0
        for m in self.modalities:
            if m.start != column or m.stop <= m.start:
                raise StoreError(
                    f"{where}: modality {m.name!r} spans columns [{m.start}, {m.stop}), expected "
                    f"a non-empty span starting at {column} (the modalities must tile the "
                    "features in order); re-ingest"
                )
            column = m.stop
        if not self.modalities or column != self.num_features:
            raise StoreError(
                f"{where}: modalities cover {column} columns, counts.features is "
                f"{self.num_features}; re-ingest"
            )
        if len({m.name for m in self.modalities}) != len(self.modalities):
            raise StoreError(f"{where}: a modality name repeats; re-ingest")
        self.title_ids: list[str] = list(manifest["title_ids"])
        self.splits: list[str | None] = list(manifest["splits"])
        titles = _count(counts["titles"], where, "counts.titles")
        if len(self.title_ids) != titles or len(self.splits) != titles:
            raise StoreError(
                f"{where}: {len(self.title_ids)} title ids and {len(self.splits)} splits for "
                f"counts.titles {titles}; re-ingest"
            )
        if not all(isinstance(t, str) and t for t in self.title_ids):
            raise StoreError(f"{where}: every title id must be a non-empty string; re-ingest")
        self._index_by_id = {t: i for i, t in enumerate(self.title_ids)}
        if len(self._index_by_id) != titles:
            raise StoreError(f"{where}: title ids repeat; re-ingest")
        bad = [s for s in self.splits if s is not None and s not in SPLITS]
        if bad:
            raise StoreError(f"{where}: split {bad[0]!r}, expected one of {SPLITS}; re-ingest")

    def _check_arrays(self) -> None:
        """Each array's shape and dtype agree with the manifest (reads zarr.json only)."""
        expected = {
            "shots": ((self.num_shots, self.num_features), np.float16),
            "present": ((self.num_shots, self.num_modalities), np.uint8),
            "title_offsets": ((self.num_titles + 1,), np.int64),
            "title_embedding": ((self.num_titles, max(self.title_dim, 1)), np.float16),
            "shot_times": ((self.num_shots, 2), np.float32),
        }
        if self.has_title_mean:
            expected[TITLE_MEAN] = ((self.num_titles, self.num_features), np.float32)
        for name, (shape, dtype) in expected.items():
            array = self._array(name)
            got = (tuple(array.shape), np.dtype(array.dtype.numpy_dtype))
            if got != (shape, np.dtype(dtype)):
                raise StoreError(
                    f"{self.root}/{name}: {got[1]} {list(got[0])}, the manifest implies "
                    f"{np.dtype(dtype)} {list(shape)}; re-ingest"
                )

    def _check_offsets(self) -> None:
        offsets = self.offsets
        if offsets[0] != 0 or offsets[-1] != self.num_shots or (np.diff(offsets) < 0).any():
            raise StoreError(
                f"{self.root}/title_offsets: must rise from 0 to the shot count "
                f"{self.num_shots} (got {offsets[0]} .. {offsets[-1]}"
                f"{', going backwards' if (np.diff(offsets) < 0).any() else ''}); re-ingest"
            )

    @property
    def has_title_mean(self) -> bool:
        """Whether ingest wrote the title summary (the manifest says so, and its checksum
        covers the claim; the file table lists the array's files)."""
        return bool(self.manifest.get(TITLE_MEAN))

    def global_vectors(self, mode: str = "title_embedding") -> np.ndarray:
        """What [GLOBAL] sees per title, [T, D] (``model.global_input``).

        "title_embedding": the given vectors ([T, 0] when the catalog has none);
        "title_mean": the mean fused shot; "both": the two side by side.
        """
        if mode not in GLOBAL_INPUTS:
            raise ConfigError(f"model.global_input={mode!r}: expected one of {GLOBAL_INPUTS}")
        if mode == "title_embedding":
            return self.title_embedding
        if self.title_mean is None:
            source = self.manifest.get("source", "SRC")
            raise StoreError(
                f"{self.root}: has no {TITLE_MEAN} array (ingested before it existed), which "
                f"model.global_input={mode!r} needs; re-ingest it: mediafm ingest {source} "
                f"{self.root} --overwrite"
            )
        if mode == "title_mean":
            return self.title_mean
        if self._both is None:  # built once: the pipeline asks for it every batch
            self._both = np.concatenate(
                [self.title_embedding.astype(np.float32), self.title_mean], axis=1
            )
        return self._both

    def verify(self, progress: bool = True) -> tuple[int, int]:
        """Hashes every byte of the store; names the first damaged file.

        Returns (files, bytes) checked.
        """
        return verify_files(self.root, self.manifest, progress=progress)

    # -- pickling: handles are per process ------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def _array(self, name: str):
        if name not in self._handles:
            self._handles[name] = open_array(self.root, name)
        return self._handles[name]

    def _result(self, future, what: str) -> np.ndarray:
        """A read's result; TensorStore's errors become one line naming the store."""
        try:
            return np.asarray(future.result())
        except ValueError as err:
            raise StoreError(
                f"{self.root}: cannot read {what} ({_first_line(err)}); the store is damaged: "
                f"`mediafm info --verify {self.root}` names the file; re-ingest"
            ) from None

    def _read_all(self, name: str) -> np.ndarray:
        return self._result(self._array(name).read(), name)

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
        return self._result(self._array("shots")[start:stop].read(), f"shots [{start}, {stop})")

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
            out[i, : stop - start] = self._result(future, f"shots [{start}, {stop})")

    def title_rows(self, title: int) -> tuple[int, int]:
        return int(self.offsets[title]), int(self.offsets[title + 1])

    def locate(self, row: int) -> tuple[int, int]:
        """(title, shot within it) of a row of the store."""
        title = int(np.searchsorted(self.offsets, row, side="right") - 1)
        return title, row - int(self.offsets[title])


def _count(value: Any, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StoreError(f"{where}: {key} is {value!r}, expected a count; re-ingest")
    return value


def disk_bytes(root: str) -> int | None:
    """Bytes on disk of a local store (None for object stores)."""
    if not is_local(root):
        return None
    total = 0
    for dirpath, _, files in os.walk(root):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total
