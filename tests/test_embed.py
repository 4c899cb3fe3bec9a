"""Embedding: stitched titles equal their windows, devices, export, isolation."""

import numpy as np
import pytest
from test_stitching import most_central_window_reference

from mediafm_jax import embed


def test_long_title_embedding_equals_its_windows(store, embedder):
    title = int(np.argmax(np.diff(store.offsets)))
    length = store.title_length(title)
    assert length > 3 * embedder.max_shots
    stitched = embedder.embed_title(store, title)
    owner = most_central_window_reference(length, embedder.max_shots)
    for start in sorted(set(owner)):
        batch = embedder._read(store, [(title, start, embedder.max_shots)], embedder.max_shots)
        direct, _ = embedder.encode(batch)
        shots = [i for i in range(length) if owner[i] == start]
        np.testing.assert_allclose(stitched[shots], direct[0, np.array(shots) - start], atol=1e-5)


def test_one_device_equals_eight(store, embedder, tiny_run):
    eight = embed.Embedder(tiny_run)
    assert eight.mesh.size == 8
    titles = list(range(5))
    one = {t: rows for t, rows, _ in embedder.embed_titles(store, titles, batch_windows=5)}
    for t, rows, _ in eight.embed_titles(store, titles, batch_windows=5):
        np.testing.assert_allclose(rows, one[t], atol=1e-5)


def test_embed_store_is_row_aligned(store, embedder, tmp_path):
    out = embed.embed_store(embedder, store, str(tmp_path / "emb"), progress=False)
    shots, cls = out.shot_embeddings(), out.cls_embeddings()
    assert shots.shape == (store.num_shots, embedder.hidden_size)
    assert cls.shape == (store.num_titles, embedder.hidden_size)
    for title in (0, 3):
        np.testing.assert_allclose(
            shots[slice(*store.title_rows(title))], embedder.embed_title(store, title), atol=1e-6
        )
    assert out.manifest["step"] == embedder.step and out.title_ids == store.title_ids
    assert not list(tmp_path.glob("*partial*"))


def test_isolated_clip_sees_only_the_clip(store, embedder):
    clip = (2, 10, 16)
    isolated = embedder.embed_clips(store, [clip])[0]
    batch = embedder._read(store, [(2, 10, 6)], 8)
    direct, _ = embedder.encode(batch)
    np.testing.assert_allclose(isolated, direct[0, :6].mean(0), atol=1e-5)
    in_context = embedder.embed_clip(store, store.title_ids[2], 10, 16, context=True)
    assert not np.allclose(isolated, in_context, atol=1e-3)


def test_load_api_and_errors(tiny_run, store, tmp_path):
    model = embed.load(tiny_run, layers="mean")
    assert model.embed_title(store, store.title_ids[1]).shape == (store.title_length(1), 32)
    with pytest.raises(ValueError, match="no checkpoint at step 999"):
        embed.Embedder(tiny_run, step=999)
    with pytest.raises(ValueError, match="no checkpoints"):
        embed.Embedder(tmp_path)
