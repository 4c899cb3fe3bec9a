"""Contextual shot embeddings from a trained run: in context, in isolation, exported.

A title longer than ``max_shots`` is covered by overlapping windows (stride W/2, the last
one flush with the title's end); each shot's embedding is taken from the window in which
it is most central, so every shot sees context on both sides wherever the title has it.

``mediafm_jax.load(run_dir)`` returns an ``Embedder`` for notebooks; ``embed_store``
writes an embedding store aligned row for row with the shot store.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from mediafm_jax import config as config_lib
from mediafm_jax import outputs, sharding
from mediafm_jax.checkpoint import Checkpointer
from mediafm_jax.config import MeshConfig, ObjectiveConfig
from mediafm_jax.data import pipeline
from mediafm_jax.data import store as store_lib
from mediafm_jax.data.store import ShotStore, StoreError
from mediafm_jax.model import NUM_SPECIAL, DataDims, Encoder
from mediafm_jax.objective import fuse

EMBED_FORMAT_VERSION = 1
# Readouts: the last layer; the mean of every layer's output; the last layer beside the
# shot's fused input vector (so a probe sees the shot itself and its context).
LAYER_MODES = ("last", "mean", "last+input")
READOUT_FILE = "readout.json"  # RUN/readout.json: the readout chosen on validation titles


def recorded_readout(run_dir: str | Path) -> str | None:
    """The readout recorded in ``RUN/readout.json`` (``experiments/ablations.py`` writes
    it after choosing on validation titles), or None when the run records none."""
    path = Path(run_dir) / READOUT_FILE
    if not path.is_file():
        return None
    try:
        layers = json.loads(path.read_text())["layers"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise StoreError(f"{path}: unreadable readout record ({err})") from None
    if layers not in LAYER_MODES:
        raise StoreError(f"{path}: layers {layers!r}, expected one of {LAYER_MODES}")
    return layers


def record_readout(run_dir: str | Path, layers: str, chosen_on: dict) -> Path:
    """Writes ``RUN/readout.json`` so that embed and probe use ``layers`` by default."""
    if layers not in LAYER_MODES:
        raise ValueError(f"layers={layers!r}: expected one of {LAYER_MODES}")
    path = Path(run_dir) / READOUT_FILE
    path.write_text(json.dumps({"layers": layers, "chosen_on": chosen_on}, indent=1) + "\n")
    return path


@dataclasses.dataclass(frozen=True)
class Window:
    title: int
    start: int  # first shot (within the title)
    length: int
    keep_from: int  # shots [keep_from, keep_to) of the window are taken from it
    keep_to: int


def plan_windows(title: int, length: int, window: int) -> list[Window]:
    """Overlapping windows of a title; each shot is kept from its most central window."""
    if length <= window:
        return [Window(title, 0, length, 0, length)]
    stride = max(1, window // 2)
    starts = list(range(0, length - window, stride)) + [length - window]
    centers = np.array([s + (window - 1) / 2 for s in starts])
    owner = np.argmin(np.abs(np.arange(length)[:, None] - centers[None, :]), axis=1)
    windows = []
    for index, start in enumerate(starts):
        shots = np.flatnonzero(owner == index)
        if len(shots):
            windows.append(
                Window(title, start, window, int(shots[0] - start), int(shots[-1] + 1 - start))
            )
    return windows


class Embedder:
    """A restored encoder with jitted window and clip embedding functions."""

    def __init__(
        self,
        run_dir: str | Path,
        step: int | None = None,
        layers: str | None = None,
        devices: Sequence[jax.Device] | None = None,
    ):
        """``layers`` None: the run's recorded readout (``readout.json``), else "last"."""
        if layers is None:
            layers = recorded_readout(run_dir) or "last"
        if layers not in LAYER_MODES:
            raise ValueError(f"layers={layers!r}: expected one of {LAYER_MODES}")
        run_dir = Path(run_dir)
        self.run_dir = run_dir
        checkpointer = Checkpointer(run_dir, async_save=False)
        steps = checkpointer.all_steps()
        if not steps:
            raise StoreError(f"{run_dir}: no checkpoints under {run_dir / 'checkpoints'}")
        step = steps[-1] if step is None else step
        if step not in steps:
            raise StoreError(f"{run_dir}: no checkpoint at step {step} (have {steps})")
        saved = checkpointer.restore_config(step)
        self.dims = DataDims(
            fused=saved["data_dims"]["fused"],
            title=saved["data_dims"]["title"],
            modalities=tuple(tuple(m) for m in saved["data_dims"]["modalities"]),
        )
        self.config = config_lib.from_dict({k: v for k, v in saved.items() if k != "data_dims"})
        self.step = step
        self.layers = layers
        self.mesh = sharding.make_mesh(MeshConfig(data=-1), devices)
        abstract_model = nnx.eval_shape(lambda: Encoder(self.config.model, self.dims, nnx.Rngs(0)))
        self.graphdef, abstract_vars = nnx.split(abstract_model, nnx.Param)
        abstract_params = nnx.to_pure_dict(abstract_vars)
        # Inference replicates parameters and splits windows over all devices.
        replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        abstract_params = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract_params
        )
        self.params = checkpointer.restore_params(step, abstract_params)
        checkpointer.close()
        self.hidden_size = self.config.model.hidden_size
        # Shot embedding width: the hidden size, plus the fused input for "last+input".
        self.shot_dim = self.hidden_size + (self.dims.fused if layers == "last+input" else 0)
        self.max_shots = self.config.model.max_shots
        self._encode = jax.jit(self._encode_impl)

    def check_store(self, store: ShotStore) -> None:
        ours = tuple((m.start, m.stop) for m in store.modalities)
        if store.num_features != self.dims.fused or ours != self.dims.modalities:
            raise StoreError(
                f"{store.root}: modality columns {ours} differ from the run's {self.dims.modalities}"
            )

    def _encode_impl(self, params, shots, present, valid, title_embedding):
        model = nnx.merge(self.graphdef, params)
        fusion = ObjectiveConfig(per_modality_norm=self.config.objective.per_modality_norm)
        fused = fuse(shots, present, self.dims, fusion)
        if self.layers == "mean":  # only then is the stack of every layer worth building
            hidden, all_layers = model(fused, valid, title_embedding, return_all_layers=True)
            shots_h = all_layers.mean(0)
        else:
            hidden = shots_h = model(fused, valid, title_embedding)
        shots_h = shots_h[:, NUM_SPECIAL:].astype(jnp.float32)
        if self.layers == "last+input":
            shots_h = jnp.concatenate([shots_h, fused.astype(jnp.float32)], axis=-1)
        return shots_h, hidden[:, 0].astype(jnp.float32)

    def encode(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(shot embeddings [B, W, shot_dim], [CLS] [B, H]) for a padded window batch."""
        b = batch["shots"].shape[0]
        devices = self.mesh.size
        pad = (-b) % devices
        arrays = [batch["shots"], batch["present"], batch["valid"], batch["title_embedding"]]
        if pad:
            arrays = [np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)]) for a in arrays]
        arrays = [jax.device_put(a, sharding.batch_sharding(self.mesh, a.ndim)) for a in arrays]
        with jax.set_mesh(self.mesh):
            shots_h, cls_h = self._encode(self.params, *arrays)
        return np.asarray(shots_h)[:b], np.asarray(cls_h)[:b]

    # -- windows over a store ------------------------------------------------------------
    def _window_batches(
        self, store: ShotStore, windows: list[Window], batch_windows: int
    ) -> Iterator[tuple[list[Window], dict[str, np.ndarray]]]:
        w = self.max_shots
        for i in range(0, len(windows), batch_windows):
            chunk = windows[i : i + batch_windows]
            yield chunk, self._read(store, [(x.title, x.start, x.length) for x in chunk], w)

    def _read(
        self, store: ShotStore, spans: list[tuple[int, int, int]], width: int
    ) -> dict[str, np.ndarray]:
        """Padded windows (title, start, length) -> the encoder's inputs, as in training."""
        title, start, length = (np.array(column, np.int64) for column in zip(*spans, strict=True))
        windows = {"title": title, "start": start, "length": length}
        return pipeline.read_batch(store, windows, width, self.config.model.global_input)

    def embed_titles(
        self,
        store: ShotStore,
        titles: Sequence[int],
        batch_windows: int = 16,
        progress: bool = False,
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yields (title, in-context shot embeddings [L, H], [CLS] [H]) title by title."""
        self.check_store(store)
        windows = [
            w for t in titles for w in plan_windows(t, store.title_length(t), self.max_shots)
        ]
        remaining = Counter(w.title for w in windows)
        buffers: dict[int, np.ndarray] = {}
        cls: dict[int, list[np.ndarray]] = {}
        bar = tqdm(
            total=len(windows), unit="window", desc="embed", disable=None if progress else True
        )
        for chunk, batch in self._window_batches(store, windows, batch_windows):
            shots_h, cls_h = self.encode(batch)
            for i, win in enumerate(chunk):
                if win.title not in buffers:
                    buffers[win.title] = np.zeros(
                        (store.title_length(win.title), self.shot_dim), np.float32
                    )
                    cls[win.title] = []
                keep = slice(win.keep_from, win.keep_to)
                buffers[win.title][win.start + win.keep_from : win.start + win.keep_to] = shots_h[
                    i, keep
                ]
                cls[win.title].append(cls_h[i])
                remaining[win.title] -= 1
                if remaining[win.title] == 0:
                    yield win.title, buffers.pop(win.title), np.mean(cls.pop(win.title), axis=0)
            bar.update(len(chunk))
        bar.close()

    def embed_title(self, store: ShotStore, title: int | str) -> np.ndarray:
        """In-context embeddings [L, H] of one title (by index or id)."""
        index = store.title_index(title) if isinstance(title, str) else title
        return next(self.embed_titles(store, [index]))[1]

    def embed_clips(
        self, store: ShotStore, clips: Sequence[tuple[int, int, int]], batch_clips: int = 256
    ) -> np.ndarray:
        """Isolated clip embeddings [N, H]: the encoder sees only the clip (+ [GLOBAL])."""
        self.check_store(store)
        out = np.zeros((len(clips), self.shot_dim), np.float32)
        longest = max((end - start for _, start, end in clips), default=1)
        if longest > self.max_shots:
            raise ValueError(f"a clip of {longest} shots exceeds model.max_shots={self.max_shots}")
        width = min(self.max_shots, 1 << max(3, (longest - 1).bit_length()))
        for i in range(0, len(clips), batch_clips):
            chunk = clips[i : i + batch_clips]
            batch = self._read(store, [(t, s, e - s) for t, s, e in chunk], width)
            shots_h, _ = self.encode(batch)
            for j, (_, start, end) in enumerate(chunk):
                out[i + j] = shots_h[j, : end - start].mean(0)
        return out

    def embed_clip(
        self, store: ShotStore, title: int | str, start: int, end: int, context: bool = True
    ):
        """One clip's embedding [H]: mean of its shots, in context or in isolation."""
        index = store.title_index(title) if isinstance(title, str) else title
        if context:
            return self.embed_title(store, index)[start:end].mean(0)
        return self.embed_clips(store, [(index, start, end)])[0]

    def search(self, store, emb=None, title=None, shot=None, k: int = 10, **options):
        """Nearest shots by cosine: ``mediafm_jax.search.search`` with this run (which
        computes the embeddings when ``emb``, an embedding store, is not given)."""
        from mediafm_jax.search import search

        return search(store, emb, title, shot, k, embedder=self, **options)


def load(run_dir: str | Path, step: int | None = None, layers: str | None = None) -> Embedder:
    """Restores a run's encoder for notebooks: ``load(run).embed_title(store, "tt123")``."""
    return Embedder(run_dir, step=step, layers=layers)


class EmbeddingStore:
    """A written embedding store: ``shot_embedding`` [S, H] and ``cls_embedding`` [T, H]."""

    def __init__(self, root: str):
        manifest = store_lib.read_manifest(root)
        if manifest is None or manifest.get("kind") != "embeddings":
            raise StoreError(f"{root}: not a complete embedding store (no embeddings manifest)")
        store_lib.check_files(root, manifest)  # every listed file, at its recorded size
        self.root = root
        self.manifest = manifest
        self.title_ids: list[str] = manifest["title_ids"]

    def verify(self, progress: bool = True) -> tuple[int, int]:
        return store_lib.verify_files(self.root, self.manifest, progress=progress)

    def _read(self, name: str) -> np.ndarray:
        return store_lib.read_array(self.root, name)  # missing chunks are errors, not zeros

    def shot_embeddings(self) -> np.ndarray:
        return self._read("shot_embedding")

    def cls_embeddings(self) -> np.ndarray:
        return self._read("cls_embedding")


def embed_store(
    embedder: Embedder,
    store: ShotStore,
    out: str,
    batch_windows: int = 16,
    progress: bool = True,
    overwrite: bool = False,
) -> EmbeddingStore:
    """Writes in-context embeddings of every title, aligned row for row with ``store``.

    The old ``out`` (ours, with ``overwrite``) stays intact until the new one is complete.
    """
    h = embedder.hidden_size
    inputs = [store.root, embedder.run_dir]
    with outputs.atomic_output(out, "embeddings", overwrite=overwrite, inputs=inputs) as target:
        shots = store_lib.create_array(
            target, "shot_embedding", (store.num_shots, embedder.shot_dim), "float32", 8192
        )
        cls = np.zeros((store.num_titles, h), np.float32)
        pending = []
        for title, rows, cls_h in embedder.embed_titles(
            store, range(store.num_titles), batch_windows=batch_windows, progress=progress
        ):
            start, stop = store.title_rows(title)
            pending.append(shots[start:stop].write(rows))
            cls[title] = cls_h
            if len(pending) > 8:  # bound the rows held for in-flight writes
                pending.pop(0).result()
        for future in pending:
            future.result()
        store_lib.create_array(target, "cls_embedding", cls.shape, "float32", 8192).write(
            cls
        ).result()
        store_lib.write_manifest(
            target,
            {
                "format_version": EMBED_FORMAT_VERSION,
                "kind": "embeddings",
                "run": str(embedder.run_dir.absolute()),
                "step": embedder.step,
                "layers": embedder.layers,
                "hidden_size": h,
                "shot_dim": embedder.shot_dim,
                "title_ids": store.title_ids,
                "shot_store": store.root,
                "shot_store_checksum": store.manifest.get("checksums"),
                "counts": {"titles": store.num_titles, "shots": store.num_shots},
            },
        )
    return EmbeddingStore(out)
