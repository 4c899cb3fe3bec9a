"""Store round trip and ingest validation."""

import json
import os
import shutil

import numpy as np
import pytest

from mediafm_jax.data import ingest, store
from mediafm_jax.errors import UsageError


def _source_rows(src, title_id):
    with np.load(src / "shots" / f"{title_id}.npz") as d:
        return np.concatenate([d["video"], d["audio"], d["text"]], axis=1).astype(np.float16)


def test_round_trip_is_bit_exact(tiny_source, tiny_store):
    shots = store.ShotStore(tiny_store)
    assert shots.num_titles == 12
    for title, title_id in enumerate(shots.title_ids):
        start, stop = shots.title_rows(title)
        expected = _source_rows(tiny_source, title_id)
        np.testing.assert_array_equal(
            shots.read_rows(start, stop).view(np.uint16), expected.view(np.uint16)
        )
        with np.load(tiny_source / "shots" / f"{title_id}.npz") as d:
            np.testing.assert_array_equal(
                shots.present[start:stop, 2], np.any(d["text"] != 0, axis=1)
            )
            np.testing.assert_array_equal(
                shots.title_embedding[title], d["title_embedding"].astype(np.float16)
            )
            np.testing.assert_allclose(shots.shot_times()[start:stop, 0], d["start_s"], rtol=1e-6)
    assert [m.dim for m in shots.modalities] == [16, 12, 8]
    assert shots.splits == [
        json.loads(line)["split"] for line in (tiny_source / "titles.jsonl").open()
    ]


def test_in_memory_reads_equal_tensorstore_reads(tiny_store):
    lazy, memory = store.ShotStore(tiny_store), store.ShotStore(tiny_store, in_memory=True)
    rows = [(0, 100), (250, 251), (300, 812)]
    a = np.zeros((3, 512, lazy.num_features), np.float16)
    b = np.zeros_like(a)
    lazy.read_windows_into(a, rows)
    memory.read_windows_into(b, rows)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[2], lazy.read_rows(300, 812))


def _write_title(src, title_id, **arrays):
    np.savez(src / "shots" / f"{title_id}.npz", **arrays)


def _small_source(tmp_path, n_titles=2, **overrides):
    src = tmp_path / "src"
    (src / "shots").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n_titles):
        title_id = f"t{i}"
        arrays = {
            "video": rng.normal(size=(5, 4)).astype(np.float32),
            "text": rng.normal(size=(5, 3)),
        }
        arrays.update(overrides.get(title_id, {}))
        _write_title(src, title_id, **{k: v for k, v in arrays.items() if v is not None})
        lines.append(json.dumps({"title_id": title_id}))
    (src / "titles.jsonl").write_text("\n".join(lines) + "\n")
    return src


BAD_INPUTS = {
    "dims differ": ({"t1": {"video": np.ones((5, 6))}}, "modality dims"),
    "nan": ({"t1": {"text": np.full((5, 3), np.nan)}}, "NaN/Inf at shot 0"),
    "inf in one shot": (
        {"t0": {"video": np.vstack([np.ones((3, 4)), [[np.inf] * 4], np.ones((1, 4))])}},
        "at shot 3",
    ),
    "empty": ({"t1": {"video": np.ones((0, 4)), "text": np.ones((0, 3))}}, "has no shots"),
    "int dtype": ({"t0": {"video": np.ones((5, 4), np.int32)}}, "expected a float type"),
    "rank": ({"t0": {"video": np.ones((5, 4, 1))}}, "expected [shots, dim]"),
    "negative time": (
        {"t0": {"start_s": np.array([-1.0, 1, 2, 3, 4]), "end_s": np.arange(1.0, 6)}},
        "negative",
    ),
    "backwards time": (
        {"t0": {"start_s": np.array([0.0, 2, 1, 3, 4]), "end_s": np.arange(1.0, 6) + 2}},
        "goes backwards at shot 2",
    ),
    "row counts": ({"t0": {"text": np.ones((4, 3))}}, "disagree on the number of shots"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_error_and_no_store(tmp_path, case):
    overrides, message = BAD_INPUTS[case]
    src = _small_source(tmp_path, **overrides)
    target = str(tmp_path / "store")
    with pytest.raises(ingest.IngestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ingest.ingest(src, target, progress=False)
    assert not os.path.exists(target)
    assert not [p for p in os.listdir(tmp_path) if "partial" in p]


def test_title_without_npz_unknown_npz_and_duplicates(tmp_path):
    src = _small_source(tmp_path)
    with (src / "titles.jsonl").open("a") as f:
        f.write(json.dumps({"title_id": "ghost"}) + "\n")
    with pytest.raises(ingest.IngestError, match="'ghost'.*missing"):
        ingest.ingest(src, str(tmp_path / "a"), progress=False)
    shutil.copy(src / "shots" / "t0.npz", src / "shots" / "ghost.npz")
    shutil.copy(src / "shots" / "t0.npz", src / "shots" / "stray.npz")
    with pytest.raises(ingest.IngestError, match="unknown title id 'stray'"):
        ingest.ingest(src, str(tmp_path / "b"), progress=False)
    (src / "shots" / "stray.npz").unlink()
    with (src / "titles.jsonl").open("a") as f:
        f.write(json.dumps({"title_id": "t0"}) + "\n")
    with pytest.raises(ingest.IngestError, match="line 4: duplicate title_id 't0'"):
        ingest.ingest(src, str(tmp_path / "c"), progress=False)


def test_existing_store_needs_overwrite_and_is_kept_on_failure(tmp_path):
    src = _small_source(tmp_path)
    target = str(tmp_path / "store")
    ingest.ingest(src, target, progress=False)
    with pytest.raises(UsageError, match="already exists"):
        ingest.ingest(src, target, progress=False)
    _write_title(src, "t1", video=np.full((5, 4), np.nan), text=np.ones((5, 3)))
    with pytest.raises(ingest.IngestError):
        ingest.ingest(src, target, overwrite=True, progress=False)
    assert store.ShotStore(target).num_shots == 10  # the old store is untouched


def test_interrupted_ingest_leaves_no_complete_store(tmp_path, monkeypatch):
    src = _small_source(tmp_path)
    target = str(tmp_path / "store")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "write_manifest", boom)
    with pytest.raises(KeyboardInterrupt):
        ingest.ingest(src, target, progress=False)
    assert os.listdir(tmp_path) == ["src"]
    with pytest.raises(store.StoreError, match="not a complete shot store"):
        store.ShotStore(str(tmp_path / "src"))


def test_text_only_catalog_and_missing_title_embedding(tmp_path):
    src = tmp_path / "src"
    (src / "shots").mkdir(parents=True)
    _write_title(src, "a", text=np.ones((7, 5), np.float32))
    _write_title(src, "b", text=np.zeros((3, 5), np.float16))
    (src / "titles.jsonl").write_text('{"title_id": "a", "split": "train"}\n{"title_id": "b"}\n')
    ingest.ingest(src, str(tmp_path / "s"), progress=False)
    shots = store.ShotStore(str(tmp_path / "s"))
    assert [m.name for m in shots.modalities] == ["text"] and shots.num_features == 5
    assert shots.title_dim == 0 and shots.title_embedding.shape == (2, 0)
    np.testing.assert_array_equal(shots.present[:, 0], [1] * 7 + [0] * 3)
    assert np.isnan(shots.shot_times()).all()


def test_kvstore_spec_urls():
    assert store.kvstore_spec("gs://bucket/a/b") == {
        "driver": "gcs",
        "bucket": "bucket",
        "path": "a/b/",
    }
    assert store.kvstore_spec("s3://bk/x/") == {"driver": "s3", "bucket": "bk", "path": "x/"}
    assert store.kvstore_spec("rel")["driver"] == "file"
