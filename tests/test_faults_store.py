"""Damaged stores: each damage is one ``StoreError`` line (exit 2), never zeros or a traceback.

Every case copies the session's tiny store, damages the copy, runs the CLI and checks the
exit code, that stderr is one line naming the culprit, and that no file anywhere under the
test folder changed (the commands here only read).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from faults import assert_one_line_error, fault_held, run_cli, tree_hashes

from mediafm_jax.data import store as store_lib
from mediafm_jax.errors import StoreError

TINY_CONFIG = str(Path(__file__).parents[1] / "experiments" / "configs" / "tiny.py")


@pytest.fixture
def damaged(tiny_store, tmp_path) -> Path:
    """A private copy of the tiny store (12 titles, 256-row shards) to damage."""
    copy = tmp_path / "store"
    shutil.copytree(tiny_store, copy)
    return copy


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def shard(store: Path, index: int = 1) -> Path:
    return store / "shots" / "c" / str(index) / "0"


def reseal(store: Path, edit) -> None:
    """Edits the manifest the way a careful user would: ``edit(manifest)``, then writes it
    back with a fresh file table and self-checksum, so only the consistency checks remain."""
    manifest = json.loads((store / "manifest.json").read_text())
    edit(manifest)
    for key in ("files", store_lib.MANIFEST_CHECKSUM):
        manifest.pop(key)
    store_lib.write_manifest(str(store), manifest, progress=False)


# -- file damage ---------------------------------------------------------------------------
def test_deleted_shard_is_refused_at_open(damaged, capsys, tmp_path):
    shard(damaged).unlink()
    assert_one_line_error(
        ["info", str(damaged)], capsys, tmp_path, "shots/c/1/0: missing", "re-ingest"
    )


def test_deleted_after_open_is_an_error_not_zeros(damaged):
    shots = store_lib.ShotStore(str(damaged))
    rows = shots.read_rows(300, 310)
    assert np.abs(rows.astype(np.float32)).sum() > 0
    shard(damaged).unlink()
    with pytest.raises(StoreError, match=r"cannot read shots \[300, 310\).*is missing"):
        shots.read_rows(300, 310)
    out = np.zeros((1, 10, shots.num_features), np.float16)
    with pytest.raises(StoreError, match="is missing"):
        shots.read_windows_into(out, [(300, 310)])


def test_truncated_shard_is_refused_at_open(damaged, capsys, tmp_path):
    size = shard(damaged).stat().st_size
    os.truncate(shard(damaged), size // 2)
    assert_one_line_error(
        ["info", str(damaged)],
        capsys,
        tmp_path,
        f"shots/c/1/0: {size // 2} bytes, manifest.json says {size}",
    )


def test_flipped_data_byte_is_found_by_verify(damaged, capsys, tmp_path):
    flip_byte(shard(damaged), 1000)  # inside the first inner chunk's rows
    code, err = run_cli(["info", str(damaged)], capsys)
    assert code == 0 and err == []  # same size: the cheap open check cannot see it
    assert_one_line_error(
        ["info", str(damaged), "--verify"],
        capsys,
        tmp_path,
        f"{damaged}/shots/c/1/0: checksum mismatch",
    )
    workdir = tmp_path / "run"
    before = tree_hashes(tmp_path)
    code, err = run_cli(
        ["train", "--config", TINY_CONFIG, "--store", str(damaged), "--workdir", str(workdir)]
        + ["--verify-store"],
        capsys,
    )
    assert code == 2 and len(err) == 1 and "shots/c/1/0: checksum mismatch" in err[0]
    assert not workdir.exists() and tree_hashes(tmp_path) == before


def test_flipped_shard_index_byte_is_one_line_on_read(damaged):
    path = shard(damaged)
    flip_byte(path, path.stat().st_size - 20)  # the index sits at the end of the shard
    shots = store_lib.ShotStore(str(damaged))
    with pytest.raises(StoreError) as info:
        shots.read_rows(256, 300)
    message = str(info.value)
    assert "\n" not in message and str(damaged) in message and "Digest mismatch" in message
    assert "mediafm info --verify" in message


def test_flipped_index_byte_stops_training_with_one_line(damaged, capsys, tmp_path):
    path = shard(damaged)
    flip_byte(path, path.stat().st_size - 20)
    argv = ["train", "--config", TINY_CONFIG, "--store", str(damaged)]
    argv += ["--workdir", str(tmp_path / "run"), "--set", "train.steps=2"]
    argv += ["--set", "model.max_shots=48", "--set", "checkpoint.async_save=false"]
    before = tree_hashes(damaged)
    code, err = run_cli(argv, capsys)
    assert code == 2 and len(err) == 1, err
    assert "cannot read shots" in err[0] and "shots/c/1/0" in err[0]
    assert tree_hashes(damaged) == before
    fault_held()


def test_deleted_array_metadata(damaged, capsys, tmp_path):
    (damaged / "present" / "zarr.json").unlink()
    assert_one_line_error(["info", str(damaged)], capsys, tmp_path, "present/zarr.json: missing")


# -- manifest damage -----------------------------------------------------------------------
def test_hand_edited_manifest_fails_its_checksum(damaged, capsys, tmp_path):
    text = (damaged / "manifest.json").read_text()
    assert '"stop": 16' in text
    (damaged / "manifest.json").write_text(text.replace('"stop": 16', '"stop": 15', 1))
    assert_one_line_error(
        ["info", str(damaged)], capsys, tmp_path, "manifest.json: its checksum does not match"
    )


def test_manifest_that_is_not_json(damaged, capsys, tmp_path):
    (damaged / "manifest.json").write_text('{"format_version": 2, "title_ids": [')
    assert_one_line_error(["info", str(damaged)], capsys, tmp_path, "manifest.json: not valid JSON")


def _set_stop(manifest):
    manifest["modalities"][0]["stop"] -= 1


def _drop_last_titles(manifest):
    del manifest["title_ids"][-2:]


def _overlap(manifest):
    manifest["modalities"][1]["start"] -= 2


def _zero_width(manifest):
    manifest["modalities"][1]["stop"] = manifest["modalities"][1]["start"]


def _repeat_id(manifest):
    manifest["title_ids"][1] = manifest["title_ids"][0]


def _bad_split(manifest):
    manifest["splits"][0] = "bogus"


def _shots_count(manifest):
    manifest["counts"]["shots"] += 64


def _float_count(manifest):
    manifest["counts"]["titles"] = 12.5


def _no_modalities(manifest):
    del manifest["modalities"]


RESEALED = {
    "modality stop": (_set_stop, "modality 'audio' spans columns [16, 28), expected"),
    "last title ids dropped": (_drop_last_titles, "10 title ids and 12 splits"),
    "overlapping modalities": (_overlap, "modality 'audio' spans columns [14, 28)"),
    "zero-width modality": (_zero_width, "expected a non-empty span"),
    "repeated title id": (_repeat_id, "title ids repeat"),
    "bad split": (_bad_split, "split 'bogus'"),
    "shot count": (_shots_count, "the manifest implies float16"),
    "float count": (_float_count, "counts.titles is 12.5"),
    "missing key": (_no_modalities, "malformed (KeyError: 'modalities')"),
}


@pytest.mark.parametrize("case", sorted(RESEALED))
def test_inconsistent_manifest_is_refused(damaged, capsys, tmp_path, case):
    edit, needle = RESEALED[case]
    reseal(damaged, edit)
    assert_one_line_error(["info", str(damaged)], capsys, tmp_path, needle)


def test_non_monotonic_title_offsets(damaged, capsys, tmp_path):
    shots = store_lib.ShotStore(str(damaged))
    offsets = shots.offsets.copy()
    offsets[3], offsets[4] = offsets[4], offsets[3]
    array = store_lib.open_array(str(damaged), "title_offsets")
    import tensorstore as ts

    spec = array.spec(minimal_spec=True).to_json()
    ts.open(spec, open=True, write=True).result().write(offsets).result()
    reseal(damaged, lambda m: None)  # a store rewritten consistently, offsets and all
    assert_one_line_error(
        ["info", str(damaged)], capsys, tmp_path, "title_offsets: must rise", "going backwards"
    )


def test_format_1_store_asks_for_a_reingest(damaged, capsys, tmp_path):
    reseal(damaged, lambda m: m.update(format_version=1))
    err = assert_one_line_error(
        ["info", str(damaged)], capsys, tmp_path, "store format 1", "re-ingest it: mediafm ingest"
    )
    assert "NEW_STORE" in err  # not --overwrite: such a store lists no files (test_outputs)


# -- the intact store ----------------------------------------------------------------------
def test_intact_store_opens_without_reading_shot_data(damaged, capsys):
    """The open check reads metadata only: a shots shard of the right size but garbage
    content still opens (and only a read or --verify finds it), and opening is fast."""
    code, err = run_cli(["info", str(damaged), "--verify"], capsys)
    assert code == 0, err
    path = shard(damaged)
    path.write_bytes(os.urandom(path.stat().st_size))
    started = time.perf_counter()
    shots = store_lib.ShotStore(str(damaged))
    assert time.perf_counter() - started < 2.0
    assert shots.num_shots == int(shots.offsets[-1])
    with pytest.raises(StoreError):
        shots.read_rows(256, 300)


def test_verify_counts_every_file(tiny_store):
    shots = store_lib.ShotStore(tiny_store)
    files, size = shots.verify(progress=False)
    on_disk = [
        os.path.join(d, f)
        for d, _, fs in os.walk(tiny_store)
        for f in fs
        if f != "manifest.json" and not (d == tiny_store and f.startswith("."))
    ]
    assert files == len(on_disk) == len(shots.manifest["files"])
    assert size == sum(os.path.getsize(p) for p in on_disk)
    for entry in shots.manifest["files"]:
        data = Path(tiny_store, entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]


def test_all_zero_chunks_are_written(tmp_path):
    """Format 2 writes chunks equal to the fill value, so absent always means damaged."""
    array = store_lib.create_array(str(tmp_path), "x", (300, 4), "float16", 128)
    array.write(np.zeros((300, 4), np.float16)).result()
    assert sorted(os.listdir(tmp_path / "x" / "c")) == ["0", "1", "2"]
    np.testing.assert_array_equal(store_lib.read_array(str(tmp_path), "x"), 0)


# -- embedding stores ----------------------------------------------------------------------
def _embedding_store(root: Path) -> None:
    rng = np.random.default_rng(0)
    store_lib.create_array(str(root), "shot_embedding", (500, 8), "float32", 128).write(
        rng.normal(size=(500, 8)).astype(np.float32)
    ).result()
    store_lib.create_array(str(root), "cls_embedding", (3, 8), "float32", 128).write(
        np.zeros((3, 8), np.float32)
    ).result()
    manifest = {"format_version": 1, "kind": "embeddings", "title_ids": ["a", "b", "c"]}
    store_lib.write_manifest(str(root), manifest, progress=False)


def test_embedding_store_file_checks(tmp_path):
    from mediafm_jax.data.embeddings import EmbeddingStore

    root = tmp_path / "emb"
    _embedding_store(root)
    emb = EmbeddingStore(str(root))
    assert emb.verify(progress=False)[0] == 4 + 1 + 1 + 1  # shards and zarr.json of each
    np.testing.assert_array_equal(emb.cls_embeddings(), 0)  # all-zero, yet written
    flip_byte(root / "shot_embedding" / "c" / "2" / "0", 100)
    with pytest.raises(StoreError, match="shot_embedding/c/2/0: checksum mismatch"):
        EmbeddingStore(str(root)).verify(progress=False)
    (root / "shot_embedding" / "c" / "1" / "0").unlink()
    with pytest.raises(StoreError, match="shot_embedding/c/1/0: missing"):
        EmbeddingStore(str(root))
    with pytest.raises(StoreError, match="is missing"):
        emb.shot_embeddings()  # opened before the deletion: an error, not zeros
