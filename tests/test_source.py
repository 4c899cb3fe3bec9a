"""data/source.py: what its writer writes, its reader reads back; names spelled once."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mediafm_jax.data import source
from mediafm_jax.errors import IngestError


def test_written_title_reads_back(tmp_path):
    video = np.arange(12, dtype=np.float16).reshape(4, 3)
    start = np.array([0.0, 1.0, 2.5, 4.0])
    path = source.write_shots(tmp_path, "film", {"video": video, "start_s": start})
    assert path == tmp_path / "shots" / "film.npz"
    assert source.npz_headers(path) == {
        "video": ((4, 3), np.dtype(np.float16)),
        "start_s": ((4,), np.dtype(np.float64)),
    }
    with np.load(path) as data:
        np.testing.assert_array_equal(data["video"], video)
    assert [p.name for p in path.parent.iterdir()] == ["film.npz"]  # no temp file left
    with pytest.raises(ValueError, match=r"not in the source layout: \['vidoe'\]"):
        source.write_shots(tmp_path, "typo", {"vidoe": video})
    assert not source.shots_path(tmp_path, "typo").exists()


def test_titles_probes_and_text_round_trip(tmp_path):
    source.write_titles(tmp_path, [{"title_id": "a", "split": "train"}, {"title_id": "é b"}])
    assert source.read_titles(tmp_path) == [("a", "train"), ("é b", None)]
    source.write_probes(tmp_path, {"tasks": [{"name": "t"}]}, [{"task": "t", "title_id": "a"}])
    assert json.loads((tmp_path / "probes.json").read_text())["tasks"] == [{"name": "t"}]
    assert (tmp_path / "clips.jsonl").read_text() == '{"task": "t", "title_id": "a"}\n'
    source.write_text(tmp_path, "a", "subtitles (a.srt, utf-8)", ["Café", ""])
    assert source.read_text(tmp_path, "a") == ["Café", ""]
    source.write_titles(tmp_path, [{"title_id": "a/b"}])
    with pytest.raises(IngestError, match="line 1: title_id 'a/b' contains a path separator"):
        source.read_titles(tmp_path)


def test_thumbnails_are_found_padded_or_plain(tmp_path):
    folder = source.thumbs_dir(tmp_path, "film")
    folder.mkdir(parents=True)
    (folder / source.thumb_name(12)).write_bytes(b"x")
    (folder / "7.jpg").write_bytes(b"y")
    assert source.find_thumb(tmp_path, "film", 12).name == "00012.jpg"
    assert source.find_thumb(tmp_path, "film", 7).name == "7.jpg"
    assert not source.find_thumb(tmp_path, "film", 3).exists()
