"""One video -> shots, per-shot video/audio/text embeddings, thumbnails and a transcript.

A single decode pass feeds the shot detector and a bounded per-shot frame sample; each
finished shot gets its thumbnail at once and its frames are embedded in small batches,
so memory is bounded by a few shots. Audio (spooled to disk during the pass) and text
follow per shot. Outputs are built in a private temp folder and moved into place only
when the whole title is done, so a crash never leaves a half-written title.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from mediafm_jax.data import source
from mediafm_jax.errors import ExtractError
from mediafm_jax.extract import decode, encoders, shots, speech, subtitles
from mediafm_jax.extract.settings import Settings

STAGES = ("decode", "shots", "video", "audio", "speech", "text")
EMBED_BATCH_FRAMES = 32
# A file whose streams end this much before the duration in its header is cut short
# (a partial download or copy): refused rather than catalogued as a shorter film.
TRUNCATED_SLACK_S = 1.0
TRUNCATED_SLACK_FRACTION = 0.02


class Models:
    """The settings and encoders of one process, encoders loaded on first use (a worker
    loads each once); what every stage of a video's extraction is handed."""

    def __init__(self, settings: Settings, threads: int) -> None:
        self.settings, self.threads = settings, threads
        self._cache: dict[str, Any] = {}
        self.load_s: dict[str, float] = {}

    def get(self, kind: str) -> Any:
        """The encoder of ``kind`` (or "speech"); load time goes to ``load_s``, not a stage."""
        if kind not in self._cache:
            started = time.perf_counter()
            if kind == "speech":
                self._cache[kind] = speech.WhisperTinyEn(self.threads)
            else:
                spec = getattr(self.settings, f"{kind}_encoder")
                self._cache[kind] = encoders.resolve(kind, spec)(self.threads)
            self.load_s[kind] = round(time.perf_counter() - started, 3)
        return self._cache[kind]

    def check_loads(self) -> None:
        """Loads now each encoder that is a model folder a library reads (hub ``family:id``),
        so damaged weights (a truncated download) are one line naming the folder before any
        video is decoded, not a failure per video after its decoding. Built-in weights are
        checked by sha256 when described; a plug-in's are its own business."""
        for kind in encoders.KINDS:
            spec = getattr(self.settings, f"{kind}_encoder")
            if encoders.resolve(kind, spec).check_by_loading:
                self.get(kind)

    def clear(self) -> None:
        """Drops the loaded encoders (worker processes load their own)."""
        self._cache.clear()


class _Timer:
    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - since
        return now


def extract_video(
    path: Path,
    title_id: str,
    out: Path,
    models: Models,
    progress: Any = None,
) -> dict[str, Any]:
    """Extracts one video into ``out`` (npz, thumbs, transcript); returns its record.

    Raises ExtractError (unreadable file, bad subtitles); anything written so far is
    removed. ``progress``: optional tqdm bar over the video's seconds.
    """
    started = time.perf_counter()
    info = decode.probe(path)
    tmp = out / ".tmp" / f"{title_id}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    source.thumbs_dir(tmp, title_id).mkdir(parents=True)  # tmp: the title's own source
    try:
        record = _extract_into(path, title_id, tmp, info, models, progress)
        _commit(tmp, out, title_id)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record["wall_s"] = round(time.perf_counter() - started, 3)
    return record


def _extract_into(
    path: Path,
    title_id: str,
    tmp: Path,
    info: decode.VideoInfo,
    models: Models,
    progress: Any,
) -> dict[str, Any]:
    settings = models.settings
    timer = _Timer()
    load_before = sum(models.load_s.values())
    video_encoder = models.get("video")
    short_side = getattr(video_encoder, "short_side", 224)
    detector = shots.detector(settings.shots, info.fps, settings.min_shot_s, models.threads)
    sampler = shots.FrameSampler(short_side)
    bounds: list[tuple[float, float]] = []
    pending: list[np.ndarray] = []
    video_rows: list[np.ndarray] = []
    spool = tmp / "audio.s16"

    batch_frames = getattr(video_encoder, "batch_frames", EMBED_BATCH_FRAMES)
    # A GPU encoder embeds in a thread while this one decodes on (torch releases the GIL).
    overlap = getattr(video_encoder, "overlap", False)
    embedder = concurrent.futures.ThreadPoolExecutor(1) if overlap else None

    def embed(batch: list[np.ndarray]) -> np.ndarray:
        t = time.perf_counter()
        rows = _embed_video(video_encoder, batch)
        timer.add("video", t)
        return rows

    def flush() -> None:
        nonlocal pending
        if pending:
            if embedder is None:
                video_rows.append(embed(pending))
            else:
                if len(video_rows) >= 2 and isinstance(video_rows[-2], concurrent.futures.Future):
                    video_rows[-2].result()  # two batches in flight at most: memory stays bounded
                video_rows.append(embedder.submit(embed, pending))
            pending = []

    def close_shot(start: float, end: float, frames: list[tuple[float, np.ndarray]]) -> None:
        picks = shots.pick_evenly(frames, settings.frames_per_shot)
        thumb = source.thumbs_dir(tmp, title_id) / source.thumb_name(len(bounds))
        _write_thumb(thumb, picks, settings.thumb_width)
        bounds.append((start, end))
        pending.append(np.stack(picks) if picks else np.zeros((0, 1, 1, 3), np.uint8))
        if sum(len(p) for p in pending) >= batch_frames:
            flush()

    shot_start: float | None = None
    last_time = 0.0
    frames_seen = 0
    reported = 0.0
    t = time.perf_counter()
    undecodable: dict[str, Any] = {"video": 0, "audio": 0}  # packets skipped, as FFmpeg's do
    for frame in decode.stream_frames(path, spool if info.has_audio else None, undecodable):
        frames_seen += 1
        sampler.add(frame)
        t = timer.add("decode", t)
        if shot_start is None:
            shot_start = frame.time_s
        cuts = detector.feed(frame)
        t = timer.add("shots", t)
        for cut in cuts:
            if cut > shot_start:
                close_shot(shot_start, cut, sampler.split(cut))
                shot_start = cut
        last_time = frame.time_s
        if progress is not None and last_time - reported >= 1.0:
            progress.update(round(last_time - reported, 2))
            reported = last_time
        t = time.perf_counter()
    if shot_start is None:
        raise ExtractError(f"{path}: no video frame could be decoded")
    _check_complete(path, info, last_time, spool)
    _check_decoded(path, info, frames_seen, undecodable)
    undecodable.pop("audio_s", None)
    for cut in detector.finish():
        if cut > shot_start:
            close_shot(shot_start, cut, sampler.split(cut))
            shot_start = cut
    end = max(last_time + 1.0 / info.fps, shot_start + 1e-3)
    if info.duration_s is not None and shot_start < info.duration_s <= end + 1.0:
        end = max(end, info.duration_s)
    close_shot(shot_start, end, sampler.kept)
    flush()
    if embedder is not None:
        video_rows = [
            r.result() if isinstance(r, concurrent.futures.Future) else r for r in video_rows
        ]
        embedder.shutdown()
    starts_s = np.array([b[0] for b in bounds])
    ends_s = np.array([b[1] for b in bounds])

    audio_i16 = decode.read_spool(spool)
    models.get("audio")
    t = time.perf_counter()
    audio_rows, voiced = _embed_audio(models, audio_i16, starts_s, ends_s)
    timer.add("audio", t)

    texts, text_source = _shot_texts(path, models, audio_i16, voiced, starts_s, ends_s, timer)
    del audio_i16
    if any(texts):
        models.get("text")
    t = time.perf_counter()
    text_rows = _embed_texts(models, texts)
    timer.add("text", t)

    video_nd = np.concatenate(video_rows).astype(np.float32)
    arrays = {"video": video_nd, "audio": audio_rows, "text": text_rows}
    source.write_shots(tmp, title_id, {**arrays, "start_s": starts_s, "end_s": ends_s})
    source.write_text(tmp, title_id, text_source, texts)
    duration = float(ends_s[-1]) if len(ends_s) else 0.0
    return {
        "status": "ok",
        "shots": len(bounds),
        "frames": frames_seen,
        "duration_s": round(duration, 3),
        "width": info.width,
        "height": info.height,
        "codec": info.codec,
        "audio": "track" if info.has_audio else "none",
        "shots_with_audio": int((np.abs(audio_rows).sum(1) > 0).sum()),
        "text_source": text_source,
        "shots_with_text": sum(1 for x in texts if x),
        "stage_s": {k: round(v, 3) for k, v in timer.seconds.items()},
        "model_load_s": round(sum(models.load_s.values()) - load_before, 3),
        "undecodable_packets": undecodable,
    }


def _check_decoded(path: Path, info: decode.VideoInfo, frames: int, skipped: dict) -> None:
    """With packets skipped, what decoded must still cover the duration (within the
    truncation slack): a few bad packets pass, a file that is mostly damage does not."""
    if info.duration_s is None:
        return
    slack_s = max(TRUNCATED_SLACK_S, TRUNCATED_SLACK_FRACTION * info.duration_s)
    if skipped["video"] and frames / info.fps < info.duration_s - slack_s:
        raise ExtractError(
            f"{path}: only {frames / info.fps:.1f}s of its {info.duration_s:.1f}s of video "
            f"decode ({skipped['video']} packets undecodable; damaged file?)"
        )
    if skipped.get("audio_s", 0.0) > slack_s:
        raise ExtractError(
            f"{path}: {skipped['audio_s']:.1f}s of its audio do not decode "
            f"({skipped['audio']} packets undecodable; damaged file?)"
        )


def _check_complete(path: Path, info: decode.VideoInfo, last_time: float, spool: Path) -> None:
    """Raises when decoding stopped well before the header's duration: FFmpeg reads a
    truncated file (moov or header up front) to where its bytes end without an error."""
    if info.duration_s is None:
        return
    reached_s = last_time + 1.0 / info.fps
    if spool.exists():  # an audio track may run past the last video frame
        reached_s = max(reached_s, spool.stat().st_size / 2 / decode.AUDIO_RATE)
    slack_s = max(TRUNCATED_SLACK_S, TRUNCATED_SLACK_FRACTION * info.duration_s)
    if reached_s < info.duration_s - slack_s:
        raise ExtractError(
            f"{path}: decoding stopped at {reached_s:.1f}s of the {info.duration_s:.1f}s its "
            "header declares (truncated or damaged file?)"
        )


def _embed_video(encoder: Any, shots_list: list[np.ndarray]) -> np.ndarray:
    """Embeds shots grouped by frame size; a shot with no frame gets a zero row."""
    out_nd = np.zeros((len(shots_list), encoder.dim), np.float32)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, s in enumerate(shots_list):
        if len(s):
            by_shape.setdefault(s.shape[1:], []).append(i)
    for indices in by_shape.values():
        out_nd[indices] = encoder.embed([shots_list[i] for i in indices])
    return out_nd


def _write_thumb(path: Path, picks: list[np.ndarray], width: int) -> None:
    from PIL import Image

    if picks:
        image = Image.fromarray(picks[len(picks) // 2])
        height = max(1, round(image.height * width / image.width))
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    else:
        image = Image.new("RGB", (width, width * 9 // 16))
    image.save(path, quality=80)


def _dbfs(clip_i16: np.ndarray) -> float:
    if clip_i16.size == 0:
        return -np.inf
    rms = np.sqrt(np.mean(np.square(clip_i16.astype(np.float32) / 32768.0)))
    return 20 * np.log10(rms + 1e-12)


def _embed_audio(
    models: Models,
    audio_i16: np.ndarray,
    starts_s: np.ndarray,
    ends_s: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """[n, dim] rows (zero where the shot is silent or has no audio) and the voiced mask."""
    encoder = models.get("audio")
    rows_nd = np.zeros((len(starts_s), encoder.dim), np.float32)
    voiced = np.zeros(len(starts_s), bool)
    rate = decode.AUDIO_RATE
    for i, (a, b) in enumerate(zip(starts_s, ends_s, strict=True)):
        clip = audio_i16[int(a * rate) : int(b * rate)]
        if _dbfs(clip) < models.settings.silence_dbfs:
            continue
        voiced[i] = True
        rows_nd[i] = encoder.embed([np.asarray(clip, np.float32) / 32768.0])[0]
    return rows_nd, voiced


def _shot_texts(
    path: Path,
    models: Models,
    audio_i16: np.ndarray,
    voiced: np.ndarray,
    starts_s: np.ndarray,
    ends_s: np.ndarray,
    timer: _Timer,
) -> tuple[list[str], str]:
    """Per-shot text from a sidecar subtitle file, else from speech; and where it came from."""
    sub = subtitles.sidecar(path)
    if sub is not None:
        cues, encoding = subtitles.read_cues(sub, models.settings.subtitle_encoding)
        return subtitles.cues_to_shots(
            cues, starts_s, ends_s
        ), f"subtitles ({sub.name}, {encoding})"
    if not models.settings.speech:
        return [""] * len(starts_s), "none (speech to text off)"
    if audio_i16.size == 0:
        return [""] * len(starts_s), "none (no audio track)"
    if not voiced.any():
        return [""] * len(starts_s), "none (no audio above the silence level)"
    whisper = models.get("speech")
    t = time.perf_counter()
    words = whisper.transcribe(audio_i16)
    timer.add("speech", t)
    return speech.words_to_shots(words, starts_s, ends_s), "speech"


def _embed_texts(models: Models, texts: list[str]) -> np.ndarray:
    dim = encoders.resolve("text", models.settings.text_encoder).dim
    rows_nd = np.zeros((len(texts), dim), np.float32)
    have = [i for i, text in enumerate(texts) if text]
    if have:
        rows_nd[have] = models.get("text").embed([texts[i] for i in have])
    return rows_nd


def _commit(tmp: Path, out: Path, title_id: str) -> None:
    """Moves a finished title into place: thumbs folder, transcript, then the npz last, each
    earlier version first renamed aside into ``tmp``. Anything that stops it half-way (an
    OSError, Ctrl-C, SIGTERM) puts the earlier version back, so the title is all old or
    all new, never new thumbnails beside the old npz; a rerun then redoes it."""
    for folder in (source.SHOTS, source.THUMBS, source.TEXT):
        (out / folder).mkdir(parents=True, exist_ok=True)
    pieces = [
        (source.thumbs_dir(tmp, title_id), source.thumbs_dir(out, title_id)),
        (source.text_path(tmp, title_id), source.text_path(out, title_id)),
        (source.shots_path(tmp, title_id), source.shots_path(out, title_id)),
    ]
    done: list[tuple[Path, Path, Path | None]] = []  # (new, its place, the old one aside)
    try:
        for index, (new, place) in enumerate(pieces):
            aside = None
            if place.exists():
                aside = tmp / f"old-{index}"
                os.replace(place, aside)
            done.append((new, place, aside))
            os.replace(new, place)
    except BaseException:
        for new, place, aside in reversed(done):
            if place.exists() and not new.exists():
                os.replace(place, new)  # the new piece back where it came from
            if aside is not None and aside.exists():
                os.replace(aside, place)
        raise


def remove_title(out: Path, title_id: str) -> None:
    """Removes a title's outputs (ours: only called inside an extract output)."""
    for p in (source.shots_path(out, title_id), source.text_path(out, title_id)):
        p.unlink(missing_ok=True)
    shutil.rmtree(source.thumbs_dir(out, title_id), ignore_errors=True)
