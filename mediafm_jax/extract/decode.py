"""Streaming decode with PyAV: video frames with their timestamps, and the audio track spooled.

One demux pass over a container yields every video frame with its presentation time in
seconds (from the frame's pts, so variable frame rate needs nothing special) while the
audio packets of the same pass are resampled to 16 kHz mono int16 and appended to a spool
file on disk. Memory is bounded by a few frames, not by the film; the spool is read back
with ``np.memmap`` per shot (audio features) or per chunk (speech to text).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mediafm_jax.errors import ExtractError

AUDIO_RATE = 16_000


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What a container holds, from its headers."""

    width: int
    height: int
    duration_s: float | None
    fps: float
    has_audio: bool
    codec: str


@dataclasses.dataclass
class Frame:
    """One decoded video frame: its time (seconds from the start) and the PyAV frame."""

    time_s: float
    av_frame: Any

    def rgb(self, short_side: int) -> np.ndarray:
        """RGB uint8 [h, w, 3] with the short side scaled to ``short_side`` (aspect kept)."""
        return self._scaled(short_side, "rgb24")

    def bgr_width(self, width: int) -> np.ndarray:
        """BGR uint8 [h, w, 3] scaled to ``width`` (what OpenCV-based detectors expect)."""
        w, h = self.av_frame.width, self.av_frame.height
        height = max(2, round(h * width / w / 2) * 2)
        return self.av_frame.reformat(width=width, height=height, format="bgr24").to_ndarray()

    def _scaled(self, short_side: int, fmt: str) -> np.ndarray:
        w, h = self.av_frame.width, self.av_frame.height
        scale = short_side / min(w, h)
        width, height = max(2, round(w * scale)), max(2, round(h * scale))
        return self.av_frame.reformat(width=width, height=height, format=fmt).to_ndarray()


def open_container(path: Path) -> Any:
    """Opens a container with PyAV; an unreadable file is an ExtractError naming it."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise ExtractError(f"{path}: not a readable video ({_short(err)})") from None
    if not container.streams.video:
        container.close()
        raise ExtractError(f"{path}: has no video stream")
    return container


def probe(path: Path) -> VideoInfo:
    container = open_container(path)
    try:
        stream = container.streams.video[0]
        duration = None
        if container.duration is not None:
            duration = container.duration / 1e6
        elif stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            duration_s=duration,
            fps=float(rate) if rate else 25.0,
            has_audio=bool(container.streams.audio),
            codec=stream.codec_context.name,
        )
    finally:
        container.close()


def stream_frames(
    path: Path, audio_spool: Path | None, undecodable: dict[str, int] | None = None
) -> Iterator[Frame]:
    """Yields video frames in presentation order; appends the audio track to ``audio_spool``.

    The spool holds int16 mono samples at 16 kHz starting at time 0 (zeros pad an audio
    track that starts late, and stand in for an audio packet that does not decode). A
    packet its decoder rejects is skipped, as FFmpeg's own tools do, and counted per
    stream type in ``undecodable`` (with ``audio_s``, the audio seconds lost); the caller
    decides whether enough decoded. A demux
    error (the file itself unreadable there) is an ExtractError naming the time.
    """
    import av

    container = open_container(path)
    video = container.streams.video[0]
    video.thread_type = "AUTO"
    audio = container.streams.audio[0] if container.streams.audio and audio_spool else None
    start = container.start_time / 1e6 if container.start_time is not None else 0.0
    rate = float(video.average_rate or video.guessed_rate or 25.0)
    spool = open(audio_spool, "wb") if audio_spool is not None else None  # noqa: SIM115
    resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE) if audio else None
    written = 0
    resync = False  # an audio packet was skipped: pad to the next decoded frame's time
    last_time = -1.0 / rate
    streams = [video] + ([audio] if audio is not None else [])
    undecodable = undecodable if undecodable is not None else {}
    try:
        for packet in container.demux(*streams):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:  # one damaged packet (the demux is fine): skip it
                kind = packet.stream.type
                undecodable[kind] = undecodable.get(kind, 0) + 1
                resync = resync or kind == "audio"
                continue
            for decoded in frames:
                if packet.stream.type == "video":
                    t = decoded.time - start if decoded.time is not None else last_time + 1 / rate
                    last_time = t
                    yield Frame(time_s=t, av_frame=decoded)
                elif resampler is not None and spool is not None:
                    # silence where audio starts late or packets were skipped (a parser that
                    # lost sync may drop more than one frame): later audio stays in time
                    if resync:  # what the resampler holds first, so ``written`` is exact
                        for out in resampler.resample(None):
                            spool.write(out.to_ndarray().reshape(-1).tobytes())
                            written += out.samples
                        resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
                    if (written == 0 or resync) and decoded.time is not None:
                        pad = int(round((decoded.time - start) * AUDIO_RATE)) - written
                        if pad > 0:
                            spool.write(np.zeros(pad, np.int16).tobytes())
                            written += pad
                            if resync:
                                lost_s = undecodable.get("audio_s", 0.0) + pad / AUDIO_RATE
                                undecodable["audio_s"] = round(lost_s, 3)
                        resync = False
                    for out in resampler.resample(decoded):
                        samples = out.to_ndarray().reshape(-1)
                        spool.write(samples.tobytes())
                        written += samples.size
        if resampler is not None and spool is not None:
            for out in resampler.resample(None):
                spool.write(out.to_ndarray().reshape(-1).tobytes())
    except av.error.FFmpegError as err:
        raise ExtractError(f"{path}: decode failed near {last_time:.2f}s ({_short(err)})") from None
    finally:
        if spool is not None:
            spool.close()
        container.close()


def read_spool(audio_spool: Path) -> np.ndarray:
    """The spooled audio as an int16 memmap (empty when there was no audio track)."""
    if not audio_spool.exists() or audio_spool.stat().st_size < 2:
        return np.zeros(0, np.int16)
    return np.memmap(audio_spool, dtype=np.int16, mode="r")


def _short(err: BaseException) -> str:
    """FFmpeg's reason without the errno and the repeated file name."""
    import av

    if isinstance(err, av.error.FFmpegError) and err.strerror:
        return err.strerror
    return str(err).splitlines()[0][:200] if str(err) else type(err).__name__
