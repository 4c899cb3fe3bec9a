"""The Grain pipeline: windows, masks, determinism, restorable state, host shares."""

import json

import numpy as np
import pytest

from mediafm_jax import masking
from mediafm_jax.data import ingest, pipeline, store


@pytest.fixture(scope="module")
def long_short_store(tmp_path_factory):
    """Two titles: 1,700 shots (cut by 512-shot windows) and 130 shots (padded)."""
    src = tmp_path_factory.mktemp("ls") / "src"
    (src / "shots").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for title_id, n in (("long", 1700), ("short", 130)):
        video = rng.normal(size=(n, 6)).astype(np.float16)
        video[:, 0] = np.arange(n)  # row number, to check windows are contiguous
        np.savez(src / "shots" / f"{title_id}.npz", video=video, text=rng.normal(size=(n, 2)))
    (src / "titles.jsonl").write_text('{"title_id": "long"}\n{"title_id": "short"}\n')
    path = str(tmp_path_factory.mktemp("ls") / "store")
    ingest.ingest(src, path, shard_rows=128, progress=False)
    return store.ShotStore(path)


def _batches(dataset, n, start=0):
    return [dataset[i] for i in range(start, start + n)]


def _selected(targets_bk, width):
    """The [B, W] selection a batch's target positions list, rebuilt with NumPy."""
    out = np.zeros((len(targets_bk), width), bool)
    for i, row in enumerate(targets_bk):
        out[i, row[row >= 0]] = True
    return out


def test_windows_and_masks(long_short_store):
    ds = pipeline.make_dataset(
        long_short_store, global_batch_size=4, max_shots=512, seed=0, split=None
    )
    lengths = np.diff(long_short_store.offsets)
    assert len(pipeline.window_table(lengths, np.arange(2), 512)) == 4 + 1
    seen_short = seen_long = False
    for batch in _batches(ds, 10):
        assert batch["targets"].shape == (4, masking.max_targets(512, 0.2)) == (4, 102)
        selected = _selected(batch["targets"], 512)
        for i in range(4):
            valid, masked = batch["valid"][i], selected[i]
            listed = batch["targets"][i][batch["targets"][i] >= 0]
            assert (np.diff(listed) > 0).all() and (batch["targets"][i][len(listed) :] == -1).all()
            length = int(valid.sum())
            assert length in (130, 512)  # the short title whole, or a window of the long one
            assert valid[:length].all() and not valid[length:].any()
            assert masked.sum() == round(0.2 * length) >= 1
            assert not (masked & ~valid).any()
            assert not batch["shots"][i, length:].any()
            if length == 512:
                # Column 0 holds the row number (fp16 holds integers exactly up to 2048).
                rows = batch["shots"][i, :length, 0].astype(np.float32)
                start = int(rows[0])
                np.testing.assert_array_equal(rows, np.arange(start, start + length))
                assert 0 <= start <= 1700 - 512
                seen_long = True
            else:
                seen_short = True
    assert seen_long and seen_short


def test_masks_only_shots_with_content(tmp_path):
    """Shots without any modality (no dialogue) are never selected; a silent title, none."""
    src = tmp_path / "src"
    (src / "shots").mkdir(parents=True)
    rng = np.random.default_rng(2)
    text = rng.normal(size=(300, 4)).astype(np.float16)
    text[np.arange(300) % 3 != 0] = 0  # two shots in three have nothing
    np.savez(src / "shots" / "sparse.npz", text=text)
    np.savez(src / "shots" / "silent.npz", text=np.zeros((40, 4), np.float16))
    (src / "titles.jsonl").write_text('{"title_id": "silent"}\n{"title_id": "sparse"}\n')
    ingest.ingest(src, str(tmp_path / "store"), progress=False)
    catalog = store.ShotStore(str(tmp_path / "store"))
    ds = pipeline.make_dataset(catalog, global_batch_size=4, max_shots=64, seed=0, split=None)
    counts = []
    for batch in _batches(ds, 6):
        content = batch["present"].any(-1) & batch["valid"]  # read, not drawn: independent
        selected = _selected(batch["targets"], 64)
        assert not (selected & ~content).any()
        expected = np.where(content.any(1), np.maximum(1, np.round(0.2 * content.sum(1))), 0)
        np.testing.assert_array_equal(selected.sum(1), expected)
        counts += content.sum(1).tolist()
    assert 0 in counts and max(counts) in (21, 22)  # silent windows, and 64 // 3 with text


def test_masks_deterministic_for_seed(tiny_store):
    shots = store.ShotStore(tiny_store)
    a = pipeline.make_dataset(shots, global_batch_size=2, max_shots=128, seed=7)
    b = pipeline.make_dataset(shots, global_batch_size=2, max_shots=128, seed=7)
    c = pipeline.make_dataset(shots, global_batch_size=2, max_shots=128, seed=8)
    for i in (0, 5, 40):
        assert set(a[i]) == {"shots", "present", "valid", "title_embedding", "targets"}
        for key in a[i]:
            np.testing.assert_array_equal(a[i][key], b[i][key])
    assert any(not np.array_equal(a[i]["targets"], c[i]["targets"]) for i in range(5))


def test_split_selection(tiny_store, tiny_source):
    shots = store.ShotStore(tiny_store)
    splits = [json.loads(line)["split"] for line in (tiny_source / "titles.jsonl").open()]
    ds = pipeline.make_dataset(shots, global_batch_size=2, max_shots=64, seed=0, split="train")
    # A batch row's title, found by its title embedding (distinct per title here).
    table = shots.title_embedding.astype(np.float16)
    assert len(np.unique(table, axis=0)) == len(table)
    titles = {
        int(np.flatnonzero((table == row).all(1))[0])
        for i in range(30)
        for row in ds[i]["title_embedding"]
    }
    assert titles and all(splits[t] == "train" for t in titles)


@pytest.mark.parametrize("threads", [1, 4])
def test_iterator_state_restores_exactly(tiny_store, threads):
    shots = store.ShotStore(tiny_store)
    ds = pipeline.make_dataset(shots, global_batch_size=3, max_shots=64, seed=1)
    it = pipeline.BatchIterator(ds, prefetch=2, threads=2)
    for _ in range(5):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(4)]
    restored = pipeline.BatchIterator(ds, prefetch=3, threads=threads)
    restored.set_state(state)
    assert state == {"next_batch": 5}
    for want in expected:
        got = next(restored)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_host_shares_are_disjoint_and_cover_the_global_batch(tiny_store):
    shots = store.ShotStore(tiny_store)
    make = lambda p, n: pipeline.make_dataset(
        shots, global_batch_size=4, max_shots=64, seed=2, process_index=p, process_count=n
    )
    whole = make(0, 1)[3]
    parts = [make(p, 2)[3] for p in range(2)]
    for key in whole:
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
    with pytest.raises(ValueError, match="not divisible"):
        make(0, 3)


def test_targets_bound_and_over_full_selection_is_an_error():
    """K bounds every window's count; a hand-built over-full selection does not fit."""
    for w in (1, 3, 12, 64, 512):
        for ratio in (0.05, 0.2, 0.5, 0.9):
            k = masking.max_targets(w, ratio)
            counts = masking.num_targets(np.arange(w + 1), ratio)
            assert counts.max() == k and (counts[1:] <= np.arange(1, w + 1)).all()
    rng = np.random.default_rng(0)
    selectable = rng.random((50, 40)) < 0.6
    selectable[0] = False  # a silent window
    targets = masking.draw_targets(rng, selectable, 0.3)
    selected = _selected(targets, 40)
    assert not (selected & ~selectable).any() and not selected[0].any()
    want = np.where(selectable.any(1), np.maximum(1, np.round(0.3 * selectable.sum(1))), 0)
    np.testing.assert_array_equal(selected.sum(1), want)
    too_many = np.zeros((2, 10), bool)
    too_many[1, :4] = True
    with pytest.raises(ValueError, match="window 1 selects 4 targets, more than the 3"):
        masking.targets_from_mask(too_many, 3)
