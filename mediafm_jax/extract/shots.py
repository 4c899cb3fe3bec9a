"""Shot boundaries while frames stream past, and a bounded sample of each shot's frames.

``AdaptiveShots`` wraps PySceneDetect's ``AdaptiveDetector`` (its defaults: a content score
per frame compared with a rolling mean of its neighbours), fed frames we decode ourselves,
so the same decode pass serves cuts, embeddings and thumbnails. Cuts come out
``window_width`` frames late; ``FrameSampler`` keeps the recent frames so the ones that
turn out to lie after a cut move to the next shot.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from mediafm_jax.extract.decode import Frame

DETECT_WIDTH = 256  # PySceneDetect's own default downscale target for its content score
_MICROSECONDS = Fraction(1, 1_000_000)


class AdaptiveShots:
    """PySceneDetect ``AdaptiveDetector`` on frames scaled to 256 px wide; times in seconds."""

    name = "pyscenedetect-adaptive"

    def __init__(self, fps: float, min_shot_s: float) -> None:
        from scenedetect import AdaptiveDetector

        self.fps = Fraction(fps).limit_denominator(1001)
        self.detector = AdaptiveDetector(min_scene_len=float(min_shot_s))
        self.last = None

    def _timecode(self, time_s: float):
        from scenedetect import FrameTimecode
        from scenedetect.common import Timecode

        pts = max(0, round(time_s * 1_000_000))
        return FrameTimecode(Timecode(pts=pts, time_base=_MICROSECONDS), fps=self.fps)

    def feed(self, frame: Frame) -> list[float]:
        """Feeds one frame; returns the cut times (start of the new shot) found so far."""
        timecode = self._timecode(frame.time_s)
        self.last = timecode
        cuts = self.detector.process_frame(timecode, frame.bgr_width(DETECT_WIDTH))
        return [cut.seconds for cut in cuts]

    def finish(self) -> list[float]:
        if self.last is None:
            return []
        return [cut.seconds for cut in self.detector.post_process(self.last)]


class FrameSampler:
    """Candidate frames of the current shot, at most ``max_kept`` whatever the shot's length.

    A frame is kept when at least ``gap_s`` has passed since the last kept one; when the
    buffer is full every other frame is dropped and the gap doubles, so the kept frames
    stay spread evenly over the shot and memory stays bounded.
    """

    def __init__(self, short_side: int, max_kept: int = 32, min_gap_s: float = 0.1) -> None:
        self.short_side = short_side
        self.max_kept = max_kept
        self.min_gap_s = min_gap_s
        self.gap_s = min_gap_s
        self.kept: list[tuple[float, np.ndarray]] = []

    def add(self, frame: Frame) -> None:
        if self.kept and frame.time_s - self.kept[-1][0] < self.gap_s:
            return
        self.kept.append((frame.time_s, frame.rgb(self.short_side)))
        if len(self.kept) > self.max_kept:
            self.kept = self.kept[::2]
            self.gap_s *= 2

    def split(self, cut_s: float) -> list[tuple[float, np.ndarray]]:
        """Returns the frames before ``cut_s`` (the shot that ended) and keeps the rest."""
        ended = [item for item in self.kept if item[0] < cut_s]
        self.kept = [item for item in self.kept if item[0] >= cut_s]
        self.gap_s = self.min_gap_s
        return ended


def pick_evenly(frames: list[tuple[float, np.ndarray]], count: int) -> list[np.ndarray]:
    """``count`` frames at the centres of equal slices of the shot (fewer if it has fewer)."""
    if not frames:
        return []
    count = min(count, len(frames))
    picks = sorted({int((k + 0.5) * len(frames) / count) for k in range(count)})
    return [frames[i][1] for i in picks]
