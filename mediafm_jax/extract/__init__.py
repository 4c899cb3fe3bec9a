"""Raw video in: ``mediafm extract VIDEOS... OUT_SRC`` (docs/DESIGN.md §3.8).

Modules, in the order a video meets them: ``settings`` (every setting, checked once),
``decode`` (PyAV, one streaming pass), ``shots`` (shot detectors as plug-ins, bounded frame
samples), ``encoders`` (the registry of video/audio/text encoders), ``mobilenet`` (the
default video network as an ONNX graph), ``subtitles`` (sidecar .srt/.vtt), ``speech``
(Whisper words placed on shots), ``title`` (one video -> one title) and ``runner`` (many
videos, workers, resume). The names below load on first use, so reading the settings (the
CLI's help) does not import the decoders and models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mediafm_jax.extract.runner import Summary, extract
    from mediafm_jax.extract.settings import Settings
    from mediafm_jax.extract.title import STAGES

_HOMES = {"STAGES": "title", "Settings": "settings", "Summary": "runner", "extract": "runner"}
__all__ = ["STAGES", "Settings", "Summary", "extract"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
