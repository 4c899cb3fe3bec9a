"""Raw video in: ``mediafm extract VIDEOS... OUT_SRC`` (docs/DESIGN.md §3.8).

Modules, in the order a video meets them: ``decode`` (PyAV, one streaming pass),
``shots`` (PySceneDetect cuts, bounded frame samples), ``encoders`` (the registry of
video/audio/text encoders), ``mobilenet`` (the default video network as an ONNX graph),
``subtitles`` (sidecar .srt/.vtt), ``speech`` (Whisper words placed on shots),
``title`` (one video -> one title) and ``runner`` (many videos, workers, resume).
"""

from mediafm_jax.extract.runner import Summary, extract
from mediafm_jax.extract.title import STAGES, Settings

__all__ = ["STAGES", "Settings", "Summary", "extract"]
