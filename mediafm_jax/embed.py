"""Contextual shot embeddings from a trained run: in context, in isolation, exported.

A title longer than ``max_shots`` is covered by overlapping windows and stitched
(``stitching.py``). Inference imports no training code: fusion is ``fusion.py``, the
model is built by ``model.abstract_encoder``, windows are read by ``data.reader``.

``mediafm_jax.load(run_dir)`` returns an ``Embedder`` for notebooks; ``embed_store``
writes an embedding store aligned row for row with the shot store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from mediafm_jax import outputs, readouts, run, search, sharding
from mediafm_jax.checkpoint import Checkpointer
from mediafm_jax.config import MeshConfig
from mediafm_jax.data import embeddings, reader
from mediafm_jax.data.embeddings import EmbeddingStore
from mediafm_jax.data.store import ShotStore
from mediafm_jax.errors import CheckpointError
from mediafm_jax.fusion import fuse
from mediafm_jax.model import NUM_SPECIAL, abstract_encoder
from mediafm_jax.readouts import INPUT_PART, READOUTS
from mediafm_jax.stitching import Window, plan_windows, stitch


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
            layers = run.recorded_readout(run_dir) or "last"
        if layers not in READOUTS:
            raise ValueError(f"layers={layers!r}: expected one of {READOUTS}")
        run_dir = Path(run_dir)
        self.run_dir = run_dir
        checkpointer = Checkpointer(run_dir, async_save=False, create=False)
        try:
            self._restore(checkpointer, step, devices)
        finally:
            checkpointer.close()
        self.layers = layers
        self.with_input = INPUT_PART in layers
        self.hidden_size = self.config.model.hidden_size
        # Shot embedding width: the hidden size, plus the fused input for "+input", plus
        # the parameter-free parts of readouts.py ("+change", "+recur", "+title").
        readout_dim = self.hidden_size + (self.dims.fused if self.with_input else 0)
        self.shot_dim = readouts.width(layers, readout_dim)
        self.max_shots = self.config.model.max_shots
        # Outputs replicated: every process holds the whole batch's embeddings, so no
        # process reads an array that spans other hosts' devices.
        replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        self._encode = jax.jit(self._encode_impl, out_shardings=(replicated, replicated))

    def _restore(self, checkpointer: Checkpointer, step: int | None, devices) -> None:
        """Params of ``step``, or of the newest step that restores and verifies.

        The model's shape comes from the config saved with the newest step whose config
        reads; the search then skips (and names) any newer step that is damaged.
        """
        steps = checkpointer.all_steps()
        if not steps:
            raise CheckpointError(f"{self.run_dir}: no checkpoints under {checkpointer.directory}")
        saved = None
        for candidate in [step] if step is not None and step in steps else steps[::-1]:
            try:
                saved = checkpointer.restore_config(candidate)
                break
            except Exception:  # damaged; restore_newest reports it
                continue
        if saved is None:
            raise CheckpointError(f"{self.run_dir}: no checkpoint has a readable config")
        self.config, self.dims = run.read_record(saved)
        self.mesh = sharding.make_mesh(MeshConfig(data=-1), devices)
        self.graphdef, abstract_vars = abstract_encoder(
            self.config.model, self.dims, self.config.objective.boundary_head
        )
        # Inference replicates parameters and splits windows over all devices.
        replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        abstract_params = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
            nnx.to_pure_dict(abstract_vars),
        )
        restored = checkpointer.restore_newest(abstract_params, params_only=True, step=step)
        self.params = restored.state["params"]
        self.step = restored.step
        self.skipped = restored.skipped
        # The step restored may be older than the one whose config gave the shapes (a
        # damaged newer step): its own config says how it fuses inputs.
        self.config, dims = run.read_record(restored.config)
        if dims != self.dims:
            raise CheckpointError(
                f"{self.run_dir}: step {self.step} was trained on other data columns "
                f"({dims.modalities}) than the newest step ({self.dims.modalities})"
            )

    def check_store(self, store: ShotStore) -> None:
        run.check_store(self.run_dir, self.dims, store)

    def _encode_impl(self, params, shots, present, valid, title_embedding):
        model = nnx.merge(self.graphdef, params)
        fused = fuse(shots, self.dims.modalities, self.config.model.per_modality_norm)
        if self.layers == "mean":  # only then is the stack of every layer worth building
            hidden, all_layers = model(fused, valid, title_embedding, return_all_layers=True)
            shots_h = all_layers.mean(0)
        else:
            hidden = shots_h = model(fused, valid, title_embedding)
        shots_h = shots_h[:, NUM_SPECIAL:].astype(jnp.float32)
        if self.with_input:
            shots_h = jnp.concatenate([shots_h, fused.astype(jnp.float32)], axis=-1)
        return shots_h, hidden[:, 0].astype(jnp.float32)

    def encode(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(shot embeddings [B, W, H], [CLS] [B, H]) for a padded window batch."""
        b = batch["shots"].shape[0]
        devices = self.mesh.size
        pad = (-b) % devices
        arrays = [batch["shots"], batch["present"], batch["valid"], batch["title_embedding"]]
        if pad:
            arrays = [np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)]) for a in arrays]
        # Every process holds the same host batch; each places only its devices' rows.
        arrays = [
            jax.make_array_from_callback(
                a.shape, sharding.batch_sharding(self.mesh, a.ndim), lambda index, a=a: a[index]
            )
            for a in arrays
        ]
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
        global_input = self.config.model.global_input
        return reader.read_windows(store, title, start, length, width, global_input)

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
        outputs_by_title: dict[int, list[tuple[Window, np.ndarray, np.ndarray]]] = {}
        bar = tqdm(
            total=len(windows), unit="window", desc="embed", disable=None if progress else True
        )
        for chunk, batch in self._window_batches(store, windows, batch_windows):
            shots_h, cls_h = self.encode(batch)
            for i, win in enumerate(chunk):
                outputs_by_title.setdefault(win.title, []).append((win, shots_h[i], cls_h[i]))
                remaining[win.title] -= 1
                if remaining[win.title] == 0:
                    done = outputs_by_title.pop(win.title)
                    rows, cls = stitch(
                        [w for w, _, _ in done],
                        np.stack([x for _, x, _ in done]),
                        np.stack([c for _, _, c in done]),
                        store.title_length(win.title),
                    )
                    yield win.title, readouts.with_parts(rows, self.layers), cls
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
                out[i + j] = readouts.with_parts(shots_h[j, : end - start], self.layers).mean(0)
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
        return search.search(store, emb, title, shot, k, embedder=self, **options)


def load(run_dir: str | Path, step: int | None = None, layers: str | None = None) -> Embedder:
    """Restores a run's encoder for notebooks: ``load(run).embed_title(store, "tt123")``."""
    return Embedder(run_dir, step=step, layers=layers)


def embed_store(
    embedder: Embedder,
    store: ShotStore,
    out: str,
    batch_windows: int = 16,
    progress: bool = True,
    overwrite: bool = False,
) -> EmbeddingStore | None:
    """Writes in-context embeddings of every title, aligned row for row with ``store``.

    The old ``out`` (ours, with ``overwrite``) stays intact until the new one is complete.
    With several processes, all of them compute (the encoder is one program over all
    devices) and process 0 alone writes; it returns the store, the others None once it
    is written.
    """
    h = embedder.hidden_size
    main = jax.process_index() == 0
    titles = embedder.embed_titles(
        store, range(store.num_titles), batch_windows=batch_windows, progress=progress and main
    )
    if not main:
        for _ in titles:  # take part in every batch's computation
            pass
        _sync_processes("mediafm embed_store written")
        return None
    inputs = [store.root, embedder.run_dir]
    with outputs.atomic_output(out, "embeddings", overwrite=overwrite, inputs=inputs) as target:
        writer = embeddings.Writer(target, store, embedder.shot_dim, h)
        for title, rows, cls_h in titles:
            writer.write_title(title, rows, cls_h)
        made_by = {
            "run": str(embedder.run_dir.absolute()),
            "step": embedder.step,
            "layers": embedder.layers,
            "hidden_size": h,
            "shot_dim": embedder.shot_dim,
            "per_modality_norm": embedder.config.model.per_modality_norm,  # concat's fusion
        }
        writer.close(made_by)
    _sync_processes("mediafm embed_store written")
    return EmbeddingStore(out)


def _sync_processes(name: str) -> None:
    """Waits for every process (a no-op with one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
