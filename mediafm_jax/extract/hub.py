"""Encoders named by a model id: ``clip:``, ``wav2vec2:``, ``clap:`` and ``st:`` (DESIGN.md §3.8).

``--video-encoder clip:openai/clip-vit-base-patch32`` takes any hub id (``id@revision``
pins one) or a local folder of a ``CLIPVisionModelWithProjection`` or ``SiglipVisionModel``;
``wav2vec2:`` pools a wav2vec2 model's last hidden states over the shot (the original's
audio model); ``clap:`` is a CLAP audio tower; ``st:`` a sentence-transformers model. The
weights come from the user's hub cache (``HF_HUB_CACHE``; fetched when online), and the
snapshot's commit sha is recorded in ``extract.json`` so a moved ``main`` is noticed.

Encoders run on CUDA in float16 when torch sees a GPU (many frames per forward pass, and
the pipeline overlaps decoding with inference), on the CPU in float32 otherwise.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mediafm_jax.errors import ExtractError
from mediafm_jax.extract import encoders
from mediafm_jax.extract.decode import AUDIO_RATE

FAMILIES = {"clip": "video", "wav2vec2": "audio", "clap": "audio", "st": "text"}
# Framework copies of the same weights nobody here loads (a hub repo often holds all of them).
SKIP_FILES = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "onnx/*", "openvino/*", "*.tflite"]
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
GPU_BATCH_FRAMES, CPU_BATCH_FRAMES = 256, 32
AUDIO_CHUNK_S = 30.0  # wav2vec2 attends over the whole input: long shots go in pieces


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def snapshot(where: str, model_id: str) -> tuple[Path, str | None]:
    """A local folder as is (no revision), or the hub snapshot of ``id[@revision]`` and its
    commit sha; a model absent from the cache while offline is one line saying how to fetch it."""
    if Path(model_id).expanduser().is_dir():
        return Path(model_id).expanduser().resolve(), None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    repo, _, revision = model_id.partition("@")
    cache_dir = os.environ.get("HF_HUB_CACHE")
    try:
        folder = Path(
            snapshot_download(
                repo,
                revision=revision or None,
                cache_dir=cache_dir,
                local_files_only=_offline(),
                ignore_patterns=SKIP_FILES,
            )
        )
    except HFValidationError:
        raise ExtractError(
            f"{where}: {model_id!r} is neither a folder nor a hub id (owner/name[@revision])"
        ) from None
    except Exception as err:  # noqa: BLE001 - offline, missing, gated, unreachable: one line
        cache = cache_dir or "the hub cache (HF_HUB_CACHE)"
        fetch = f"`hf download {repo}{f' --revision {revision}' if revision else ''}`"
        if _offline():
            what = f"is not in {cache} (HF_HUB_OFFLINE is set)"
        else:  # no network, a wrong id, a gated model: the library's class says which
            what = f"could not be fetched ({type(err).__name__}) and is not in {cache}"
        raise ExtractError(
            f"{where}: {repo} {what}; check the id, or fetch it on a machine with internet "
            f"({fetch}) into {cache}, or give a local folder"
        ) from None
    return folder, folder.name if len(folder.name) == 40 else None


def _torch_device(threads: int) -> tuple[Any, Any]:
    import torch

    torch.set_num_threads(max(1, threads))
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.float16
    return torch.device("cpu"), torch.float32


def _unit(x_nd: np.ndarray) -> np.ndarray:
    return x_nd / (np.linalg.norm(x_nd, axis=-1, keepdims=True) + 1e-8)


def _pool_by_counts(features_fd: np.ndarray, counts: list[int]) -> np.ndarray:
    """Unit-normed mean of each group's unit-normed rows (a shot's frames or audio pieces)."""
    features_fd = _unit(features_fd.astype(np.float32))
    bounds = np.cumsum([0, *counts])
    means_nd = np.stack(
        [features_fd[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    )
    return _unit(means_nd)


class HubEncoder(encoders.Encoder):
    """An encoder whose weights are a model folder; subclassed once per ``family:id``."""

    check_by_loading = True  # weights no sha256 pins: a truncated download fails to load
    family: ClassVar[str]
    model_id: ClassVar[str]
    folder: ClassVar[Path]
    revision: ClassVar[str | None]

    @classmethod
    def weights_path(cls) -> Path | None:
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (cls.folder / name).is_file():
                return cls.folder / name
        return None

    @classmethod
    def describe(cls) -> dict:
        """Id, resolved commit and dim; a local folder's weights are hashed instead."""
        path = cls.weights_path()
        local = cls.revision is None
        return {
            "kind": cls.kind,
            "name": cls.name,
            "dim": cls.dim,
            "id": cls.model_id,
            "revision": cls.revision,
            "weights": str(cls.folder),
            "sha256": encoders.sha256_file(path) if local and path else None,
        }

    @classmethod
    def read_dim(cls) -> int:
        raise NotImplementedError

    def __init__(self, threads: int = 1) -> None:
        super().__init__(threads)
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()  # "UNEXPECTED keys" of a full checkpoint
        self.device, self.dtype = _torch_device(threads)
        try:
            self.load()
        except Exception as err:  # noqa: BLE001 - damaged weights: the model's fault, not the video's
            first = str(err).splitlines()[0] if str(err) else ""
            raise ExtractError(
                f"--{self.kind}-encoder {self.name}: cannot load the model in {self.folder} "
                f"({type(err).__name__}: {first})"
            ) from None

    def load(self) -> None:
        raise NotImplementedError

    def _prepare(self, model: Any) -> Any:
        return model.to(self.device, self.dtype).eval()


class VisionTower(HubEncoder):
    """CLIP (projected image embeds) or SigLIP (pooled output) over a shot's frames.

    Frames come scaled to the model's input size on the short side; CLIP crops the
    centre square, SigLIP squashes the frame to a square, as their image processors do.
    Each frame's vector is unit-normed, averaged over the shot and normed again.
    """

    kind = "video"
    short_side: ClassVar[int]
    crop: ClassVar[bool]

    @classmethod
    def _config(cls) -> Any:
        import transformers

        model_type = json.loads((cls.folder / "config.json").read_text()).get("model_type", "")
        if model_type.startswith("siglip"):
            return transformers.SiglipVisionConfig.from_pretrained(cls.folder)
        if model_type.startswith("clip"):
            return transformers.CLIPVisionConfig.from_pretrained(cls.folder)
        raise ExtractError(
            f"--video-encoder {cls.name}: {cls.folder / 'config.json'} is a {model_type!r} "
            "model, not CLIP or SigLIP"
        )

    @classmethod
    def setup(cls) -> None:
        config = cls._config()
        cls.siglip = config.model_type.startswith("siglip")
        cls.dim = config.hidden_size if cls.siglip else config.projection_dim
        cls.short_side, cls.crop = config.image_size, not cls.siglip
        processor = cls.folder / "preprocessor_config.json"
        spec = json.loads(processor.read_text()) if processor.is_file() else {}
        default_mean, default_std = (
            ((0.5,) * 3, (0.5,) * 3) if cls.siglip else (CLIP_MEAN, CLIP_STD)
        )
        cls.mean = tuple(spec.get("image_mean", default_mean))
        cls.std = tuple(spec.get("image_std", default_std))

    def load(self) -> None:
        import torch
        import transformers

        family = (
            transformers.SiglipVisionModel
            if self.siglip
            else transformers.CLIPVisionModelWithProjection
        )
        self.model = self._prepare(family.from_pretrained(self.folder))
        shape = (1, 3, 1, 1)
        self.mean_t = torch.tensor(self.mean, device=self.device).view(shape)
        self.std_t = torch.tensor(self.std, device=self.device).view(shape)
        cuda = self.device.type == "cuda"
        self.batch_frames = GPU_BATCH_FRAMES if cuda else CPU_BATCH_FRAMES
        self.overlap = cuda  # the pipeline decodes the next shots while the GPU works

    def pixels(self, frames_fhwc: np.ndarray) -> Any:
        """uint8 frames -> normalized [f, 3, size, size] on the device."""
        import torch
        import torch.nn.functional as F

        size = self.short_side
        x = torch.from_numpy(frames_fhwc).to(self.device).permute(0, 3, 1, 2).float() / 255
        height, width = x.shape[2:]
        if self.crop:
            if min(height, width) != size:
                scale = size / min(height, width)
                new = (max(size, round(height * scale)), max(size, round(width * scale)))
                x = F.interpolate(x, size=new, mode="bicubic", antialias=True, align_corners=False)
            top, left = (x.shape[2] - size) // 2, (x.shape[3] - size) // 2
            x = x[:, :, top : top + size, left : left + size]
        elif (height, width) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True)
        return ((x.clamp(0, 1) - self.mean_t) / self.std_t).to(self.dtype)

    def embed(self, shots: list[np.ndarray]) -> np.ndarray:
        import torch

        counts = [len(s) for s in shots]
        frames_fhwc = np.concatenate(shots)
        parts = []
        with torch.inference_mode():
            for i in range(0, len(frames_fhwc), self.batch_frames):
                output = self.model(
                    pixel_values=self.pixels(frames_fhwc[i : i + self.batch_frames])
                )
                vectors = output.pooler_output if self.siglip else output.image_embeds
                parts.append(vectors.float().cpu().numpy())
        return _pool_by_counts(np.concatenate(parts), counts)


class AudioTower(HubEncoder):
    """Shared by wav2vec2 and CLAP: a shot's audio cut into pieces, pieces pooled."""

    kind = "audio"
    piece_s: ClassVar[float] = AUDIO_CHUNK_S

    def pieces(self, clip: np.ndarray) -> list[np.ndarray]:
        step = int(self.piece_s * AUDIO_RATE)
        return [clip[i : i + step] for i in range(0, max(len(clip), 1), step)]

    def embed(self, clips: list[np.ndarray]) -> np.ndarray:
        """clips: float32 mono 16 kHz audio per shot -> [n, dim], unit norm."""
        rows = []
        for clip in clips:
            pieces = self.pieces(np.asarray(clip, np.float32))
            vectors_pd = self.embed_pieces(pieces)
            weights = np.array([max(len(p), 1) for p in pieces], np.float32)
            rows.append(_unit((_unit(vectors_pd) * weights[:, None]).sum(0)))
        return np.stack(rows).astype(np.float32)

    def embed_pieces(self, pieces: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError


class Wav2Vec2(AudioTower):
    """wav2vec2 (or HuBERT-like) last hidden states, mean over time; inputs normalized per piece."""

    MIN_SAMPLES = 400  # the convolutional front end's receptive field

    @classmethod
    def setup(cls) -> None:
        import transformers

        cls.dim = transformers.AutoConfig.from_pretrained(cls.folder).hidden_size
        processor = cls.folder / "preprocessor_config.json"
        spec = json.loads(processor.read_text()) if processor.is_file() else {}
        cls.normalize = bool(spec.get("do_normalize", True))

    def load(self) -> None:
        import transformers

        self.model = self._prepare(transformers.AutoModel.from_pretrained(self.folder))

    def embed_pieces(self, pieces: list[np.ndarray]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for piece in pieces:
                if len(piece) < self.MIN_SAMPLES:
                    piece = np.pad(piece, (0, self.MIN_SAMPLES - len(piece)))
                if self.normalize:
                    piece = (piece - piece.mean()) / np.sqrt(piece.var() + 1e-7)
                x = torch.from_numpy(piece[None]).to(self.device, self.dtype)
                hidden = self.model(input_values=x).last_hidden_state
                out.append(hidden.float().mean(1)[0].cpu().numpy())
        return np.stack(out)


class Clap(AudioTower):
    """A CLAP audio tower's projected embeds; audio resampled to its 48 kHz, 10 s pieces."""

    @classmethod
    def setup(cls) -> None:
        import transformers

        config = transformers.ClapAudioConfig.from_pretrained(cls.folder)
        cls.dim, cls.fusion = config.projection_dim, bool(config.enable_fusion)

    def load(self) -> None:
        import transformers

        self.model = self._prepare(
            transformers.ClapAudioModelWithProjection.from_pretrained(self.folder)
        )
        if (self.folder / "preprocessor_config.json").is_file():
            self.features = transformers.ClapFeatureExtractor.from_pretrained(self.folder)
        else:
            self.features = transformers.ClapFeatureExtractor()
        self.rate = self.features.sampling_rate
        self.piece_s = self.features.nb_max_samples / self.rate

    def embed_pieces(self, pieces: list[np.ndarray]) -> np.ndarray:
        import torch
        from scipy.signal import resample_poly

        resampled = [resample_poly(p, self.rate, AUDIO_RATE).astype(np.float32) for p in pieces]
        inputs = self.features(
            resampled,
            sampling_rate=self.rate,
            truncation="fusion" if self.fusion else "rand_trunc",  # pieces are never cut
            padding="repeatpad",
            return_tensors="pt",
        )
        with torch.inference_mode():
            output = self.model(
                input_features=inputs["input_features"].to(self.device, self.dtype),
                is_longer=inputs["is_longer"].to(self.device) if self.fusion else None,
            )
        return output.audio_embeds.float().cpu().numpy()


class SentenceTransformerText(HubEncoder):
    """A sentence-transformers model, unit-normed embeddings."""

    kind = "text"

    @classmethod
    def setup(cls) -> None:
        cls.dim = _sentence_dim(cls.folder)

    def load(self) -> None:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(self.folder), device=str(self.device))
        self.model = model.half() if self.device.type == "cuda" else model

    def embed(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.asarray(vectors, np.float32)


def _sentence_dim(folder: Path) -> int:
    """The output dim from modules.json (the last Dense, else the pooling's width) without
    loading the weights; loads the model when the folder does not say."""
    modules_file = folder / "modules.json"
    dim = None
    if modules_file.is_file():
        for module in json.loads(modules_file.read_text()):
            config = folder / module.get("path", "") / "config.json"
            if not config.is_file():
                continue
            spec = json.loads(config.read_text())
            if module.get("type", "").endswith("Pooling"):
                modes = [k for k, v in spec.items() if k.startswith("pooling_mode_") and v is True]
                dim = spec["word_embedding_dimension"] * max(1, len(modes))
            elif module.get("type", "").endswith("Dense"):
                dim = spec["out_features"]
    if dim is None:
        from sentence_transformers import SentenceTransformer

        dim = SentenceTransformer(str(folder), device="cpu").get_sentence_embedding_dimension()
    return int(dim)


CLASSES: dict[str, type[HubEncoder]] = {
    "clip": VisionTower,
    "wav2vec2": Wav2Vec2,
    "clap": Clap,
    "st": SentenceTransformerText,
}


@functools.cache
def encoder_class(kind: str, spec: str) -> type[HubEncoder]:
    """The encoder class of ``family:id`` (one per spec, so its dim and folder resolve once)."""
    family, _, model_id = spec.partition(":")
    if FAMILIES[family] != kind:
        raise ExtractError(f"--{kind}-encoder {spec}: {family}: is a {FAMILIES[family]} encoder")
    if not model_id:
        raise ExtractError(f"--{kind}-encoder {spec}: name a model id or folder after {family}:")
    where = f"--{kind}-encoder {spec}"
    folder, revision = snapshot(where, model_id)
    if not (folder / "config.json").is_file() and family != "st":
        raise ExtractError(f"{where}: {folder} has no config.json (not a transformers model)")
    attrs = {"name": spec, "family": family, "model_id": model_id, "folder": folder}
    cls = type(
        f"{CLASSES[family].__name__}_{family}", (CLASSES[family],), attrs | {"revision": revision}
    )
    try:
        cls.setup()
    except ExtractError:
        raise
    except (OSError, ValueError, KeyError) as err:
        raise ExtractError(f"{where}: cannot read the model in {folder} ({err})") from None
    return cls
