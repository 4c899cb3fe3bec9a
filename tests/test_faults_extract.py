"""Careless extract runs on real media: a video that goes bad between runs, odd entries in
the input folder, unreadable folders, broken packets. Each case checks the exit code, the
one line that names the culprit, and that nothing else in the output changed."""

from __future__ import annotations

import json
import shutil

import pytest
from faults import tree_hashes

pytest.importorskip("av", reason="needs the [extract] extra")

from test_extract import FAST  # noqa: E402  (an encoder without weights)

from mediafm_jax.data import ingest  # noqa: E402
from mediafm_jax.extract import extract, media  # noqa: E402


def _title_files(out):
    return {d: tree_hashes(out / d) for d in ("shots", "thumbs", "text")}


def test_a_failed_redo_keeps_the_earlier_good_title(tmp_path):
    """A video replaced by garbage after a good extract: its earlier title is kept, and said so"""
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    shutil.copy(media.bikes(), folder / "film.mp4")
    shutil.copy(media.bikes(), folder / "other.mp4")
    assert not extract([folder], out, FAST, log=lambda *_: None).failed
    before = _title_files(out)
    (folder / "film.mp4").write_bytes(b"not a video any more\n" * 50)
    lines: list[str] = []
    summary = extract([folder], out, FAST, log=lines.append)
    assert summary.kept == ["film"] and list(summary.failed) == ["film"]
    assert "kept its earlier extract" in summary.failed["film"]
    assert any("failed 1 (1 kept their earlier extract)" in line for line in lines), lines
    assert _title_files(out) == before
    titles = [json.loads(x)["title_id"] for x in (out / "titles.jsonl").read_text().splitlines()]
    assert titles == ["film", "other"]
    record = json.loads((out / "extract.json").read_text())["videos"]["film"]
    assert record["status"] == "ok" and "not a readable video" in record["redo_failed"]["error"]
    assert ingest.ingest(out, str(tmp_path / "store"), progress=False).titles == 2
    shutil.copy(media.bikes(), folder / "film.mp4")  # a good file again: redone, not skipped
    summary = extract([folder], out, FAST, log=lambda *_: None)
    assert summary.done == ["film"] and not summary.failed and not summary.kept
    record = json.loads((out / "extract.json").read_text())["videos"]["film"]
    assert "redo_failed" not in record
