"""``mediafm extract``'s settings: typed and checked once, here (a pydantic dataclass).

Built once (by the CLI or a caller) and handed as one object to the runner, its workers
and each video's extraction; nothing downstream re-checks a value. Every field but
``workers`` changes the output: those are recorded in ``extract.json`` and hashed into
``key()``, and a rerun into the same OUT_SRC with another key is refused.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
from typing import Annotated, Any

import pydantic

from mediafm_jax.errors import ExtractError, validation_message

MAX_FRAMES_PER_SHOT = 16  # shots.FrameSampler keeps at least this many candidates per shot
RUN_ONLY = frozenset({"workers", "ray"})  # how the work is run, not what it writes


@pydantic.dataclasses.dataclass(frozen=True, config=pydantic.ConfigDict(extra="forbid"))
class Settings:
    """Everything ``mediafm extract`` can be told; see the CLI's help for each."""

    shots: str = "adaptive"  # a registered shot detector or module:Class
    min_shot_s: Annotated[float, pydantic.Field(ge=0, allow_inf_nan=False)] = 0.6
    frames_per_shot: Annotated[int, pydantic.Field(ge=1, le=MAX_FRAMES_PER_SHOT)] = 3
    video_encoder: str = "mobilenet_v2"
    audio_encoder: str = "logmel_stats"
    text_encoder: str = "minilm_l6"
    speech: bool = True
    silence_dbfs: Annotated[float, pydantic.Field(le=0, allow_inf_nan=False)] = -55.0
    thumb_width: Annotated[int, pydantic.Field(ge=16, le=4096)] = 192
    subtitle_encoding: str | None = None
    workers: Annotated[int, pydantic.Field(ge=1, le=1024)] = 1
    ray: str | None = None  # a Ray cluster's address ("": $RAY_ADDRESS or a new one here)

    @pydantic.field_validator("shots")
    @classmethod
    def _known_detector(cls, spec: str) -> str:
        from mediafm_jax.extract import shots  # scenedetect: imported when a value is checked

        _reason_of(shots.resolve, spec, prefix=f"--shots {spec}: ")
        return spec

    @pydantic.field_validator("video_encoder", "audio_encoder", "text_encoder")
    @classmethod
    def _known_encoder(cls, spec: str, info: pydantic.ValidationInfo) -> str:
        from mediafm_jax.extract import encoders

        kind = info.field_name.removesuffix("_encoder")
        _reason_of(encoders.resolve, kind, spec, prefix=f"--{kind}-encoder {spec}: ")
        return spec

    @pydantic.field_validator("subtitle_encoding")
    @classmethod
    def _known_codec(cls, name: str | None) -> str | None:
        if name is not None:
            try:
                codecs.lookup(name)
            except LookupError:
                raise ValueError("unknown encoding (e.g. cp1252, latin-1, utf-16)") from None
        return name

    @classmethod
    def parse(cls, where: str = "extract settings", **values: Any) -> Settings:
        """Settings from ``values``; a bad value is one ExtractError line naming the key."""
        try:
            return cls(**values)
        except pydantic.ValidationError as err:
            raise ExtractError(validation_message(err, where)) from None

    def to_dict(self) -> dict[str, Any]:
        """The settings that change the output (what ``extract.json`` records)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUN_ONLY}

    def key(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _reason_of(resolve: Any, *args: Any, prefix: str) -> None:
    """Runs a registry's ``resolve``; its ExtractError becomes a ValueError with the reason
    only (the one-line message names the key and value itself)."""
    try:
        resolve(*args)
    except ExtractError as err:
        raise ValueError(str(err).removeprefix(prefix)) from None
