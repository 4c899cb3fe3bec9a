"""Careless extract runs on real media: a video that goes bad between runs, odd entries in
the input folder, unreadable folders, broken packets. Each case checks the exit code, the
one line that names the culprit, and that nothing else in the output changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from faults import tree_hashes

pytest.importorskip("av", reason="needs the [extract] extra")

from test_extract import FAST  # noqa: E402  (an encoder without weights)

from mediafm_jax import cli  # noqa: E402
from mediafm_jax.data import ingest  # noqa: E402
from mediafm_jax.extract import extract, media  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


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


ENCODER = ["--video-encoder", "test_extract:MeanColour", "--no-speech"]  # FAST, by flags


def test_odd_entries_in_the_input_folder_are_named_and_counted(tmp_path, capsys):
    """A FIFO, a broken link and a link loop named *.mp4: each named, counted failed, exit 2"""
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    shutil.copy(media.bikes(), folder / "bikes.mp4")
    os.mkfifo(folder / "fifo.mp4")
    (folder / "gone.mp4").symlink_to(tmp_path / "unmounted" / "film.mp4")
    (folder / "loop.mp4").symlink_to(folder / "loop.mp4")
    (folder / "notes.txt").write_text("not a video: not mentioned")
    code = cli.main(["extract", str(folder), str(out), *ENCODER])
    printed = capsys.readouterr().out
    assert code == 2
    assert f"skipped {folder / 'fifo.mp4'}: a FIFO, not a regular file" in printed
    assert f"skipped {folder / 'gone.mp4'}: a broken symbolic link" in printed
    assert f"skipped {folder / 'loop.mp4'}: a symbolic link loop" in printed
    assert "extracted 1, skipped 0 already done, failed 3 (3 entries not readable" in printed
    assert "notes.txt" not in printed
    titles = [json.loads(x)["title_id"] for x in (out / "titles.jsonl").read_text().splitlines()]
    assert titles == ["bikes"]


def _without_permission_override() -> list[str]:
    """A command prefix under which folder modes hold: none for a user, and for root
    setpriv dropping the capabilities that let it read any folder."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root without setpriv: folder modes cannot be made to hold")
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]


def _extract_cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    command = [*_without_permission_override(), sys.executable, "-m", "mediafm_jax.cli"]
    return subprocess.run(
        [*command, "extract", *map(str, args), *ENCODER],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_an_unreadable_folder_names_the_permission(tmp_path):
    """An input folder (or a folder in it) we may not read: named with the reason, not
    'no video files found'"""
    folder, out = tmp_path / "in", tmp_path / "out"
    (folder / "locked").mkdir(parents=True)
    shutil.copy(media.bikes(), folder / "bikes.mp4")
    shutil.copy(media.bikes(), folder / "locked" / "film.mp4")
    try:
        folder.chmod(0)
        whole = _extract_cli(folder, out)
        folder.chmod(0o755)
        assert whole.returncode == 2 and not out.exists(), whole.stderr
        assert whole.stderr.strip() == (
            f"mediafm extract: error: {folder}: cannot read the folder (Permission denied)"
        )
        (folder / "locked").chmod(0)
        part = _extract_cli(folder, out)
    finally:
        folder.chmod(0o755)
        (folder / "locked").chmod(0o755)
    assert part.returncode == 2, part.stderr
    assert f"skipped {folder / 'locked'}: cannot read the folder (Permission denied)" in part.stdout
    assert "extracted 1, skipped 0 already done, failed 1" in part.stdout
