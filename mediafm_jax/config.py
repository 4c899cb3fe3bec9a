"""Typed, frozen experiment configuration, validated by pydantic where it is built.

Experiment files in ``experiments/configs/`` define ``get_config(arg) -> ExperimentConfig``;
``--set a.b=value`` overrides one field and fails loudly on unknown keys. Shapes that the
data determines (modality dims, title-embedding dim) are not here: they come from the
store's manifest, so they are never typed twice.

Each section is a frozen pydantic dataclass: a field's type says what it may hold (a
``Literal`` lists the choices, ``Annotated[..., Field(ge=...)]`` the bounds) and the rules
that tie fields of a section together are its validators, so no instance holds a bad
value: ``ModelConfig(num_heads=3)``, ``dataclasses.replace`` in a config file and a
restored ``config.json`` are checked alike. Strict: a config file's ``"yes"`` is no bool
and ``True`` no int; ``--set`` strings are parsed by the same types (``apply_overrides``).
What needs the machine (mesh vs devices, batch vs data parallelism) is ``validate``.
Errors are one line (``errors.validation_message``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field, ValidationInfo, field_validator

from mediafm_jax.errors import ConfigError, validation_message

# NaN and inf are refused everywhere; a key a section does not have is an error.
section = pydantic.dataclasses.dataclass(
    frozen=True, config=pydantic.ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
)

Count = Annotated[int, Field(ge=1)]  # sizes, step counts, cadences
NonNegative = Annotated[int, Field(ge=0)]
Ratio = Annotated[float, Field(ge=0.0, le=1.0)]
OpenRatio = Annotated[float, Field(ge=0.0, lt=1.0)]  # dropout, betas, momentum
Positive = Annotated[float, Field(gt=0.0)]
MeshAxis = Annotated[int, Field(ge=-1)]  # -1 (fill) or a size >= 1; 0 is refused below
Dtype = Literal["float32", "bfloat16", "float16"]


@section
class ModelConfig:
    hidden_size: Count = 256
    num_layers: Count = 4
    num_heads: Count = 4
    mlp_size: Count = 1024
    max_shots: Count = 512
    post_ln: bool = False  # BERT-style post-LN blocks instead of pre-LN
    dropout: OpenRatio = 0.0
    compute_dtype: Dtype = "float32"  # "bfloat16" on GPU/TPU
    remat: bool = False
    # None = per platform: the fused kernel on the CPU (attention.py), the library's choice
    # elsewhere; "xla" forces jax's XLA attention, "cudnn" flash attention on GPU
    attention_impl: Literal["xla", "cudnn"] | None = None
    # What [GLOBAL] sees: "title_embedding" (the given vector), "title_mean" (the title's
    # mean fused shot, computed at ingest) or "both" (concatenated). Issue 14.
    global_input: Literal["title_embedding", "title_mean", "both"] = "title_embedding"
    # Input fusion (fusion.py): unit-norm each modality before concatenation. Read by
    # training and inference alike; runs before it recorded it as objective.per_modality_norm.
    per_modality_norm: bool = False

    @field_validator("num_heads")
    @classmethod
    def _heads_divide_hidden(cls, heads: int, info: ValidationInfo) -> int:
        hidden = info.data.get("hidden_size")
        if hidden is not None and hidden % heads:
            raise ValueError(f"does not divide hidden_size={hidden}")
        return heads

    @field_validator("per_modality_norm")
    @classmethod
    def _title_mean_is_default_fusion(cls, norm: bool, info: ValidationInfo) -> bool:
        summary = info.data.get("global_input")
        if norm and summary not in (None, "title_embedding"):
            raise ValueError(
                f"not with global_input={summary!r}: the store's title_mean is the mean of "
                "the default fusion (ingest); use one or the other"
            )
        return norm


@section
class ObjectiveConfig:
    mask_ratio: Ratio = 0.2
    # BERT's 80/10/10: of the selected shots, this share gets [MASK], the same share of the
    # rest gets a random other shot, the remainder stays as it is (but is still predicted).
    mask_token_share: Ratio = 0.8
    random_shot_share: Ratio = 0.1
    modality_dropout: OpenRatio = 0.0  # drop a whole modality of a shot during training
    # Span masking: targets in contiguous runs of geometric length with this mean (shots),
    # same budget; 0 = single shots (masking.py). Issue 14.
    span_mean_shots: Annotated[float, Field(ge=0.0, le=64.0)] = 0.0
    # InfoNCE between each predicted target and its true shot, the batch's other targets
    # as negatives, added to the cosine loss at this weight; 0 = off. Issue 14.
    contrastive_weight: Annotated[float, Field(ge=0.0, le=100.0)] = 0.0
    contrastive_temperature: Annotated[float, Field(ge=1e-4, le=100.0)] = 0.1
    # BaSSL's pseudo-boundary prediction (issue 23): in each span of this many shots the
    # split that best groups the input, predicted by a head on the shot states (binary
    # cross-entropy) at this weight; 0 = off (and no head).
    boundary_weight: Annotated[float, Field(ge=0.0, le=100.0)] = 0.0
    boundary_span: Annotated[int, Field(ge=3, le=512)] = 16
    # The share of the batch's spans that get a pseudo-boundary: those whose best split
    # explains the most of the span's spread; the others are labelled "no boundary" (every
    # shot negative). 1 = every span (BaSSL; a span without a cut is split all the same).
    # Shot-to-scene matching reads it too (an uncut span is one pseudo-scene): one field,
    # because both terms ask the same question of the same spans (is this split a real
    # cut?), and a run with boundary_weight 0 uses it for matching alone.
    boundary_keep: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    # BaSSL's shot-to-scene matching (issue 23): InfoNCE pulling each shot's state toward
    # the mean state of its pseudo-scene (its part of its span of boundary_span shots, on
    # its side of the pseudo-boundary; the whole span where boundary_keep leaves it uncut),
    # away from the batch's other pseudo-scenes, at this weight and temperature; 0 = off.
    # Needs no head: it acts on the states themselves.
    scene_match_weight: Annotated[float, Field(ge=0.0, le=100.0)] = 0.0
    scene_match_temperature: Annotated[float, Field(ge=1e-4, le=100.0)] = 0.1

    @property
    def boundary_head(self) -> bool:
        """Whether the encoder carries the pseudo-boundary head (the term is on): the one
        rule training, inference and ``plan`` build the model's structure by."""
        return self.boundary_weight > 0

    @field_validator("random_shot_share")
    @classmethod
    def _shares_fit(cls, share: float, info: ValidationInfo) -> float:
        mask_share = info.data.get("mask_token_share")
        if mask_share is not None and mask_share + share > 1:
            raise ValueError(f"mask_token_share={mask_share} + this exceeds 1")
        return share

    @field_validator("span_mean_shots")
    @classmethod
    def _runs_are_shots(cls, mean: float) -> float:
        if 0 < mean < 1:
            raise ValueError("expected 0 (single shots) or a mean run length >= 1")
        return mean


@section
class DataConfig:
    split: Literal["train", "val", "test"] | None = "train"  # None: every title
    in_memory: Literal["auto", "yes", "no"] = "auto"  # copy the shot table into host RAM
    in_memory_max_gb: Annotated[float, Field(ge=0.0)] = 8.0
    threads: Count = 4  # Grain read threads (4 beat 2 on a 2-core machine: page faults overlap)
    prefetch: NonNegative = 2


@section
class OptimConfig:
    kind: Literal["muon_adamw", "adamw"] = "muon_adamw"
    learning_rate: Positive = 1e-3
    muon_learning_rate: Positive | None = None  # None: reuse learning_rate (moonlight scale)
    warmup_steps: NonNegative = 100
    min_lr_ratio: Ratio = 0.1
    b1: OpenRatio = 0.9
    b2: OpenRatio = 0.98
    eps: Positive = 1e-8
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.01
    muon_momentum: OpenRatio = 0.95
    muon_nesterov: bool = True
    muon_ns_steps: Count = 5
    muon_ns_dtype: Dtype = "bfloat16"
    muon_scale: Literal["moonlight", "keller", "none"] = "moonlight"
    clip_norm: Positive | None = 1.0
    accumulate_steps: Count = 1
    muon_gather_free: bool = False  # stack same-shape matrices, shard the stack over fsdp
    # One batched Newton-Schulz per matrix shape: "auto" = on accelerators, off on CPUs
    # (where it measured no faster); "on" | "off". And the NS coefficients: "keller" (one
    # (a, b, c) for every step) | "polar_express" (one per step, for muon_ns_steps=5).
    muon_stack: Literal["auto", "on", "off"] = "auto"
    muon_ns_coeffs: Literal["keller", "polar_express"] = "keller"

    @field_validator("muon_ns_coeffs")
    @classmethod
    def _polar_express_steps(cls, coeffs: str, info: ValidationInfo) -> str:
        steps = info.data.get("muon_ns_steps")
        # The schedule has one (a, b, c) per step for 5 steps (optim/muon.py).
        if coeffs == "polar_express" and steps != 5:
            raise ValueError(f"the Polar Express schedule is for muon_ns_steps=5, not {steps}")
        return coeffs


@section
class MeshConfig:
    data: MeshAxis = -1  # -1 fills with the devices left over
    fsdp: MeshAxis = 1
    tensor: MeshAxis = 1

    @field_validator("data", "fsdp", "tensor")
    @classmethod
    def _not_zero(cls, size: int) -> int:
        if size == 0:
            raise ValueError("expected -1 (fill) or a size >= 1")
        return size

    @pydantic.model_validator(mode="after")
    def _one_fill(self) -> MeshConfig:
        if [self.data, self.fsdp, self.tensor].count(-1) > 1:
            raise ValueError("at most one of data, fsdp, tensor may be -1")
        return self


@section
class CheckpointConfig:
    every_steps: Count = 500
    keep: Count = 3
    async_save: bool = True


@section
class TrainConfig:
    steps: Count = 1000
    batch_size: Count = 8  # global, in windows
    seed: NonNegative = 0
    log_every: Count = 50


@section
class ExperimentConfig:
    name: str = "default"
    model: ModelConfig = ModelConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    mesh: MeshConfig = MeshConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    train: TrainConfig = TrainConfig()


_ADAPTER = pydantic.TypeAdapter(ExperimentConfig)


def _section_fields(cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation (``Annotated`` metadata stripped) of a section."""
    return {name: info.annotation for name, info in cls.__pydantic_fields__.items()}


def apply_overrides(
    config: ExperimentConfig, overrides: Iterable[str], where: str = "--set"
) -> ExperimentConfig:
    """Applies ``a.b=value`` strings, parsed by each field's type, then validates once
    (so ``model.hidden_size=48 model.num_heads=6`` may come in either order). An unknown
    key is a ConfigError listing the valid ones; ``none``/``null`` is None where allowed."""
    data = to_dict(config)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"{where} {item!r}: expected KEY=VALUE, e.g. train.steps=100")
        key, text = key.strip(), text.strip()
        node, cls, *path = (data, ExperimentConfig, *key.split("."))
        for depth, name in enumerate(path):
            fields = _section_fields(cls)
            if name not in fields:
                valid = ", ".join(sorted(fields))
                raise ConfigError(f"{where} {key}: unknown key {name!r}; valid here: {valid}")
            is_section = dataclasses.is_dataclass(fields[name])
            if depth < len(path) - 1:
                if not is_section:
                    raise ConfigError(f"{where} {key}: {name!r} is a value, not a section")
                node, cls = node[name], fields[name]
            elif is_section:
                raise ConfigError(f"{where} {key}: is a section; set one of its fields")
            else:
                optional = type(None) in typing.get_args(fields[name])
                node[name] = None if optional and text.lower() in ("none", "null") else text
    try:
        return _ADAPTER.validate_python(data, strict=False)
    except pydantic.ValidationError as err:
        raise ConfigError(validation_message(err, where)) from None


def to_dict(config: ExperimentConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(data: Mapping[str, Any], where: str = "config JSON") -> ExperimentConfig:
    """Rebuilds a config from its JSON form, strictly (as JSON types it); unknown keys
    are an error (a stale run dir)."""
    try:
        return _ADAPTER.validate_json(json.dumps(data), strict=True)
    except pydantic.ValidationError as err:
        raise ConfigError(validation_message(err, where)) from None


def to_json(config: ExperimentConfig) -> str:
    return json.dumps(to_dict(config), indent=2, sort_keys=True)


def save_json(config: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(to_json(config) + "\n")


def parse_arg(arg: str | None, keys: Iterable[str]) -> dict[str, str]:
    """A config file's ``arg`` (``key=value,key=value``, big_vision's ``parse_arg``) as
    strings, for ``apply_overrides`` to type; a key not in ``keys`` is a ConfigError."""
    values = {}
    for item in filter(None, (arg or "").split(",")):
        key, sep, text = item.partition("=")
        if not sep or key.strip() not in keys:
            raise ConfigError(
                f"unknown arg {item!r}; expected key=value with a key of {sorted(keys)}"
            )
        values[key.strip()] = text.strip()
    return values


def load_config_file(spec: str) -> ExperimentConfig:
    """Loads ``path/to/file.py[:arg]`` by calling its ``get_config(arg)``."""
    path_text, _, arg = spec.partition(":")
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(f"--config {spec}: no such file {path}")
    if path.suffix != ".py":  # importlib finds no loader for it
        raise ConfigError(f"--config {spec}: not a Python file (expected path/to/file.py[:arg])")
    module_spec = importlib.util.spec_from_file_location(f"_mediafm_cfg_{path.stem}", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as err:  # other errors of the file's own code keep their traceback
        raise ConfigError(f"--config {spec}: line {err.lineno}: {err.msg}") from None
    if not hasattr(module, "get_config"):
        raise ConfigError(f"--config {spec}: {path} defines no get_config(arg)")
    try:
        config = module.get_config(arg or None)
    except ConfigError as err:
        raise ConfigError(f"--config {spec}: {err}") from None
    except pydantic.ValidationError as err:  # a bad value typed in the file itself
        raise ConfigError(validation_message(err, f"--config {spec}: {err.title}")) from None
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"--config {spec}: get_config returned {type(config).__name__}")
    return config


def resolve_mesh_shape(config: MeshConfig, num_devices: int) -> tuple[int, int, int]:
    """Fills the -1 axis (at most one: ``MeshConfig``) with the devices left over; checks
    the product."""
    shape = [config.data, config.fsdp, config.tensor]
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % known:
            raise ValueError(f"mesh {shape}: {num_devices} devices are not divisible by {known}")
        shape[shape.index(-1)] = num_devices // known
    if math.prod(shape) != num_devices:
        raise ValueError(
            f"mesh data={shape[0]} x fsdp={shape[1]} x tensor={shape[2]} needs "
            f"{math.prod(shape)} devices, {num_devices} are available"
        )
    return tuple(shape)  # type: ignore[return-value]


def validate(config: ExperimentConfig, num_devices: int | None = None, processes: int = 1) -> None:
    """The rules that need the machine: the batch splits over ``processes`` and, given
    ``num_devices`` (None skips it, as inference does: it builds its own mesh), the mesh
    fits them and the batch splits over data parallelism. Raises one ConfigError."""
    batch, found = config.train.batch_size, []
    if batch % processes:
        found.append(f"train.batch_size={batch} is not divisible by the {processes} processes")
    if num_devices is not None and not found:
        try:
            data, fsdp, _ = resolve_mesh_shape(config.mesh, num_devices)
        except ValueError as err:
            found.append(str(err))
        else:
            if batch % (data * fsdp):
                found.append(
                    f"train.batch_size={batch} is not divisible by the data-parallel size "
                    f"{data * fsdp} (mesh.data={data} x mesh.fsdp={fsdp})"
                )
    if found:
        raise ConfigError("config: " + "; ".join(found))


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (for diffs of saved configs)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
