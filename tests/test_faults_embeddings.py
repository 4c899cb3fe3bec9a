"""Damaged embedding stores and search indexes: refused in one line, or rebuilt saying so.

Each case writes an embedding store for the session's tiny store (random rows, through the
writer ``mediafm embed`` uses), damages it, runs the CLI and checks the exit code, that
stderr says what happened in one line naming the culprit, and that nothing else changed.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
from faults import assert_one_line_error, tree_hashes

from mediafm_jax import cli, outputs, search
from mediafm_jax.data import embeddings
from mediafm_jax.data import store as store_lib
from mediafm_jax.data.store import ShotStore
from mediafm_jax.errors import SearchError

needs_faiss = pytest.mark.skipif(
    not importlib.util.find_spec("faiss"), reason="[search] extra not installed"
)
DIM = 8


def write_embeddings(store: ShotStore, out: Path, seed: int = 1, nan_at: int | None = None):
    """An embedding store of random rows (row ``nan_at`` all NaN), written as embed does."""
    rng = np.random.default_rng(seed)
    with outputs.atomic_output(out, "embeddings", inputs=[store.root]) as target:
        writer = embeddings.Writer(target, store, DIM, DIM)
        for title in range(store.num_titles):
            start, stop = store.title_rows(title)
            rows = rng.normal(size=(stop - start, DIM)).astype(np.float32)
            if nan_at is not None and start <= nan_at < stop:
                rows[nan_at - start] = np.nan
            writer.write_title(title, rows, np.zeros(DIM, np.float32))
        writer.close({"run": "RUN", "step": 1, "layers": "last", "per_modality_norm": False})
    return out


@pytest.fixture
def emb(tiny_store, tmp_path) -> Path:
    return write_embeddings(ShotStore(tiny_store), tmp_path / "emb")


def search_argv(tiny_store: str, emb: Path, title: int = 2, shot: int = 3) -> list[str]:
    title_id = ShotStore(tiny_store).title_ids[title]
    return ["search", "--store", tiny_store, "--emb", str(emb), "--title", title_id,
            "--shot", str(shot), "--k", "5"]  # fmt: skip


def flip_bytes(path: Path, offset: int, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def first_chunk(emb: Path) -> Path:
    return emb / "shot_embedding" / "c" / "0" / "0"


# -- the embeddings ------------------------------------------------------------------------
def test_flipped_bytes_in_the_embeddings_stop_search(tiny_store, emb, capsys, tmp_path):
    """64 flipped bytes in an embeddings chunk: search refuses, naming the store"""
    flip_bytes(first_chunk(emb), 1000)
    assert_one_line_error(
        search_argv(tiny_store, emb), capsys, tmp_path, f"{emb}/shot_embedding", "damaged"
    )


def test_info_verify_names_the_damaged_embeddings_file(emb, capsys, tmp_path):
    """`mediafm info EMB --verify` names the damaged file of an embedding store"""
    flip_bytes(first_chunk(emb), 1000)
    assert_one_line_error(
        ["info", str(emb), "--verify"], capsys, tmp_path, "shot_embedding/c/0/0: checksum mismatch"
    )


def test_info_describes_and_verifies_an_intact_embedding_store(tiny_store, emb, capsys):
    """`mediafm info EMB --verify` on an intact embedding store: its summary, verified"""
    capsys.readouterr()
    assert cli.main(["info", str(emb), "--verify"]) == 0
    out = capsys.readouterr().out
    shots = ShotStore(tiny_store).num_shots
    assert "(embeddings)" in out and f"shots      {shots}, dim {DIM}" in out
    assert "intact" in out


def test_truncated_embeddings_chunk_is_refused_at_open(tiny_store, emb, capsys, tmp_path):
    """A truncated embeddings chunk: refused when the store opens"""
    chunk = first_chunk(emb)
    chunk.write_bytes(chunk.read_bytes()[:-100])
    assert_one_line_error(
        search_argv(tiny_store, emb), capsys, tmp_path, "shot_embedding/c/0/0", "truncated"
    )


@pytest.mark.parametrize("command", ["search", "info"])
def test_truncated_embeddings_manifest_asks_for_embed(tiny_store, emb, capsys, tmp_path, command):
    """A truncated embeddings manifest: one line that says re-run embed, not re-ingest"""
    manifest = emb / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])
    argv = search_argv(tiny_store, emb) if command == "search" else ["info", str(emb)]
    line = assert_one_line_error(
        argv, capsys, tmp_path, f"{emb}/manifest.json: not valid JSON", embeddings.REMEDY
    )
    assert "re-ingest" not in line


def test_rows_rewritten_in_place_are_refused(tiny_store, emb, capsys, tmp_path):
    """Rows rewritten as NaN in place, the manifest untouched: refused as damaged"""
    spec = {"driver": "zarr3", "kvstore": store_lib.kvstore_spec(str(emb / "shot_embedding"))}
    array = ts.open(spec, open=True, write=True).result()
    array[10:20].write(np.full((10, DIM), np.nan, np.float32)).result()
    assert_one_line_error(search_argv(tiny_store, emb), capsys, tmp_path, str(emb), "damaged")


def test_a_non_finite_embedding_is_an_error_naming_the_shot(tiny_store, tmp_path, capsys):
    """A NaN row written and sealed (a diverged run's embeddings): an error naming the shot"""
    store = ShotStore(tiny_store)
    emb = write_embeddings(store, tmp_path / "emb", nan_at=int(store.offsets[4]) + 7)
    assert_one_line_error(
        search_argv(tiny_store, emb, title=4, shot=7),
        capsys,
        tmp_path,
        str(emb),
        f"title {store.title_ids[4]!r} shot 7 is not finite",
    )


# -- the search index ----------------------------------------------------------------------
def index_file(emb: Path) -> Path:
    return emb / "search_index" / "context.faiss"


def hits_and_err(capsys, argv) -> tuple[list[str], str]:
    capsys.readouterr()
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    return captured.out.splitlines()[2:], captured.err


def outside_the_index(root: Path) -> dict[str, str]:
    return {k: v for k, v in tree_hashes(root).items() if "search_index" not in k}


@needs_faiss
@pytest.mark.parametrize(
    "damage",
    ["flipped bytes", "truncated", "emptied", "key file not JSON", "built from other vectors"],
)
def test_a_damaged_or_stale_index_is_rebuilt_saying_so(tiny_store, emb, capsys, tmp_path, damage):
    """A damaged or stale faiss index cache: rebuilt, with a line saying why"""
    argv = [*search_argv(tiny_store, emb), "--backend", "faiss"]
    first, err = hits_and_err(capsys, argv)
    index = index_file(emb)
    assert "building an IVF index" in err and index.is_file()
    if damage == "flipped bytes":
        flip_bytes(index, index.stat().st_size // 2)
    elif damage == "truncated":
        index.write_bytes(index.read_bytes()[: index.stat().st_size // 3])
    elif damage == "emptied":
        index.write_bytes(b"")
    elif damage == "key file not JSON":
        index.with_suffix(".json").write_text("{")
    else:  # other embeddings (same run, step and store) where the cache was kept
        kept = tmp_path / "kept"
        shutil.move(emb / "search_index", kept)
        shutil.rmtree(emb)
        write_embeddings(ShotStore(tiny_store), emb, seed=2)
        shutil.move(kept, emb / "search_index")
        first = None
    before = outside_the_index(tmp_path)
    again, err = hits_and_err(capsys, argv)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"{index}:" in lines[0] and "rebuilding" in lines[0], lines
    assert outside_the_index(tmp_path) == before
    if first is not None:
        assert again == first  # the rebuilt index answers as the first one did
    third, err = hits_and_err(capsys, argv)  # and is reused, silently
    assert third == again and err == ""


@needs_faiss
def test_an_index_score_that_is_no_cosine_is_an_error_naming_the_shot(tiny_store, emb):
    """An index that answers a score no cosine can have: an error naming the shot"""
    store = ShotStore(tiny_store)
    searcher = search.Searcher(store, str(emb), backend="faiss")
    searcher.index.index.reset()  # refilled behind the searcher's back with unscaled rows
    searcher.index.index.add(np.ascontiguousarray(searcher.vectors_nd * 1e6, np.float32))
    with pytest.raises(SearchError, match=r"scored title '.*' shot \d+ at .* not a cosine"):
        searcher.search(store.title_ids[2], 3, k=5)
