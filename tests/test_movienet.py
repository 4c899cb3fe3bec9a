"""MovieNet-318 preparation on tiny fixtures written here (no shared data, no torch)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mediafm_jax.data import ingest
from mediafm_jax.data.store import ShotStore
from mediafm_jax.extract import subtitles
from mediafm_jax.probe import input_rows

SPEC = importlib.util.spec_from_file_location(
    "movienet_prepare",
    Path(__file__).resolve().parent.parent / "experiments" / "movienet318" / "prepare.py",
)
prep = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = prep  # dataclasses look their module up by name
SPEC.loader.exec_module(prep)

SRT = """1
00:00:01,000 --> 00:00:02,500
<i>Hello there.</i>

2
00:00:04,000 --> 00:00:09,000
A long line across shots.

3
00:00:xx,000 --> 00:00:12,000
broken timestamp

4
00:00:20,000 --> 00:00:21,000
Last words.
"""


def test_srt_parsing_and_cue_assignment(tmp_path):
    """MovieNet's subtitles go through the product's reader (extract's): a broken cue is
    skipped and named (extract itself refuses the file), the rest placed on shots."""
    (tmp_path / "a.srt").write_text("\ufeff" + SRT)
    cues, problems = prep.read_subtitles(tmp_path / "a.srt")
    assert [c.text for c in cues] == ["Hello there.", "A long line across shots.", "Last words."]
    assert cues[0].start_s == 1.0 and cues[1].end_s == 9.0
    assert problems == ["line 10: cannot read the timing '00:00:xx,000 --> 00:00:12,000'"]
    (tmp_path / "empty.srt").write_text("")
    assert prep.read_subtitles(tmp_path / "empty.srt")[0] == []
    assert prep.read_subtitles(tmp_path / "none.srt") == ([], [])
    start = np.array([0.0, 3.0, 5.0, 8.5, 15.0])
    end = np.array([3.0, 5.0, 8.5, 15.0, 30.0])
    texts = subtitles.cues_to_shots(cues, start, end)
    assert texts == [
        "Hello there.",
        "A long line across shots.",
        "A long line across shots.",
        "A long line across shots.",
        "Last words.",
    ]
    # A cue ending exactly where a shot starts does not reach into it.
    assert subtitles.cues_to_shots([prep.Cue(0.0, 3.0, "x")], start, end) == ["x", "", "", "", ""]


def test_frames_labels_and_shot_lists(tmp_path):
    start_s, end_s = prep.frames_to_seconds(np.array([[0, 23], [24, 71]]), 24.0)
    np.testing.assert_allclose(start_s, [0.0, 1.0])
    np.testing.assert_allclose(end_s, [1.0, 3.0])
    (tmp_path / "l.txt").write_text("0000 0\n0001 1\n0002 -1\n")
    np.testing.assert_array_equal(prep.parse_labels(tmp_path / "l.txt", 4), [0, 1, -1, -1])
    (tmp_path / "bad.txt").write_text("0000 7\n")
    with pytest.raises(prep.PrepareError, match="line 1: label 7"):
        prep.parse_labels(tmp_path / "bad.txt", 2)
    (tmp_path / "s.txt").write_text("0 48 1 2 3\n49 20 1 2 3\n")
    with pytest.raises(prep.PrepareError, match="line 2: frames 49..20"):
        prep.parse_shots(tmp_path / "s.txt")


def test_fps_choice_prefers_the_rate_that_aligns_cues_with_cuts():
    rng = np.random.default_rng(0)
    frames_end = np.cumsum(rng.integers(30, 200, 600))
    frames = np.stack([np.r_[0, frames_end[:-1] + 1], frames_end], axis=1)
    cut_seconds_25 = frames[1:, 0] / 25.0  # cues were timed against a 25 fps release
    cues = [prep.Cue(float(t) + 0.1, float(t) + 1.0, "x") for t in cut_seconds_25[::3]]
    fps, offset, scores = prep.choose_timing(cues, frames)
    assert fps == 25.0 and offset == 0.0 and scores[25.0]["best"] > 3 * scores[24.0]["at_0s"]
    shifted = [prep.Cue(c.start_s - 7.5, c.end_s - 7.5, c.text) for c in cues]  # a later opening
    fps, offset, _ = prep.choose_timing(shifted, frames)
    assert fps == 25.0 and abs(offset - 7.5) <= prep.CUT_WINDOW_S  # found to the window's width
    random_cues = [
        prep.Cue(float(t), float(t) + 1, "x") for t in rng.uniform(0, frames[-1, 1] / 24, 200)
    ]
    assert prep.choose_timing(random_cues, frames)[:2] == (24.0, 0.0)


def _fixture(root):
    movienet, movielens = root / "movienet", root / "movielens"
    for sub in ("shot_movie318", "label318", "subtitle"):
        (movienet / sub).mkdir(parents=True)
    films = {"tt0000001": "train", "tt0000002": "val", "tt0000003": "test"}
    for i, film in enumerate(films):
        n = 30 + 10 * i
        lines = [f"{24 * s} {24 * s + 23} 0 0 0" for s in range(n)]
        (movienet / "shot_movie318" / f"{film}.txt").write_text("\n".join(lines) + "\n")
        labels = [f"{s:04d} {1 if s % 7 == 6 else 0}" for s in range(n - 1)] + [f"{n - 1:04d} -1"]
        (movienet / "label318" / f"{film}.txt").write_text("\n".join(labels) + "\n")
        if film != "tt0000003":  # one film without subtitles
            (movienet / "subtitle" / f"{film}.srt").write_text(SRT)
    (movienet / "split318.json").write_text(
        json.dumps(
            {s: [f for f, v in films.items() if v == s] for s in ("train", "val", "test")}
            | {"all": list(films)}  # as the real split318.json has
        )
    )
    movielens.mkdir()
    (movielens / "links.csv").write_text(
        "movieId, imdbId , tmdbId\n 1, 0000001, 5\n 2, 0000002, 6\n 3, 0000003, 7\n"
    )
    (movielens / "movies.csv").write_text(
        "movieId,title,genres\n1,Alpha (1950),Drama|Crime\n"
        '2,Beta (1960),Comedy\n3,"Gamma, The (1970)",Drama\n'
    )
    return movienet, movielens


def test_prepare_writes_an_ingestible_source(tmp_path):
    movienet, movielens = _fixture(tmp_path)
    out = tmp_path / "src"
    summary = prep.prepare(movienet, movielens, out, prep.HashingEmbedder(16))
    assert summary["films"] == 3 and summary["shots"] == 30 + 40 + 50
    assert summary["films_with_subtitles"] == 2
    ingest.ingest(out, str(tmp_path / "store"), progress=False)
    store = ShotStore(str(tmp_path / "store"))
    assert [m.name for m in store.modalities] == ["text"] and store.num_features == 16
    assert store.splits == ["train", "val", "test"]
    assert not store.present[slice(*store.title_rows(2)), 0].any()  # no subtitles, no text
    # One modality: the probes' inputs are concat alone (a "text" column would repeat it).
    rows = input_rows(store, np.arange(3))
    assert list(rows) == ["concat"] and not rows["concat"][2].any()
    titles = [json.loads(line) for line in (out / "titles.jsonl").open()]
    assert titles[2]["title"] == "Gamma, The (1970)" and titles[0]["genres"] == ["Drama", "Crime"]
    clips = [json.loads(line) for line in (out / "clips.jsonl").open()]
    scene = [c for c in clips if c["task"] == "scene_boundary"]
    assert {c["split"] for c in scene} == {"val", "test"} and len(scene) == (40 - 1) + (50 - 1)
    assert sum(c["label"] for c in scene) == len([s for s in range(39) if s % 7 == 6]) + len(
        [s for s in range(49) if s % 7 == 6]
    )
    tasks = json.loads((out / "probes.json").read_text())
    assert tasks["genre_names"] == ["Comedy", "Crime", "Drama"]
    # A rerun comes from the cache and is identical.
    first = np.load(out / "shots" / "tt0000001.npz")["text"]
    prep.prepare(movienet, movielens, out, prep.HashingEmbedder(16))
    np.testing.assert_array_equal(np.load(out / "shots" / "tt0000001.npz")["text"], first)
    # The title embedding comes from the title string, not the genres.
    title_vec = np.load(out / "shots" / "tt0000001.npz")["title_embedding"]
    np.testing.assert_allclose(
        title_vec, prep.HashingEmbedder(16).embed(["Alpha (1950)"])[0], rtol=1e-6
    )


def test_utf16_subtitles_parse_and_cue_counts_are_reported(tmp_path, capsys):
    """Issue #14: UTF-16 files were read as cp1252 and silently gave 0 cues."""
    (tmp_path / "utf8.srt").write_text(SRT, encoding="utf-8")
    for encoding in ("utf-16", "utf-16-le", "utf-16-be"):
        data = SRT.encode(encoding)
        if encoding != "utf-16":  # python writes the BOM only for plain "utf-16"
            data = ("\ufeff" + SRT).encode(encoding)
        (tmp_path / f"{encoding}.srt").write_bytes(data)
        read = prep.read_subtitles(tmp_path / f"{encoding}.srt")
        assert read == prep.read_subtitles(tmp_path / "utf8.srt")
    movienet, movielens = _fixture(tmp_path / "data")
    (movienet / "subtitle" / "tt0000001.srt").write_bytes(SRT.encode("utf-16"))
    (movienet / "subtitle" / "tt0000002.srt").write_text("no cue in here\n")
    out = tmp_path / "src"
    prep.prepare(movienet, movielens, out, prep.HashingEmbedder(16))
    alignment = json.loads((out / "alignment.json").read_text())
    assert alignment["tt0000001"]["cues"] == len(prep.read_subtitles(tmp_path / "utf8.srt")[0]) == 3
    assert alignment["tt0000002"]["cues"] == 0 and alignment["tt0000003"]["cues"] == 0
    printed = capsys.readouterr().out
    assert "tt0000002.srt: no subtitle cue parsed" in printed
    assert "tt0000001.srt: line 10: cannot read the timing" in printed  # skipped, not silent
    assert printed.count("warning:") == 2  # tt0000003 has no file: nothing to warn about
    assert json.loads((out / "summary.json").read_text())["cues_skipped"] == 1
