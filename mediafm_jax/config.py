"""Typed, frozen experiment configuration, and its one validation point.

Experiment files in ``experiments/configs/`` define ``get_config(arg) -> ExperimentConfig``;
``--set a.b=value`` overrides one field and fails loudly on unknown keys. Shapes that the
data determines (modality dims, title-embedding dim) are not here: they come from the
store's manifest, so they are never typed twice.

Each field's type says what it may hold: a ``Literal`` lists the choices, and an
``Annotated[..., Range(...)]`` its bounds. ``validate(config, num_devices)`` checks those
generically plus the rules that tie fields together (heads vs hidden, mesh vs devices,
batch vs data parallelism), so a bad run stops before anything is written.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from mediafm_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a numeric field; ``*_open`` excludes the bound itself."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts)

    def holds(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below


Count = Annotated[int, Range(1)]  # sizes, step counts, cadences
NonNegative = Annotated[int, Range(0)]
Ratio = Annotated[float, Range(0.0, 1.0)]
OpenRatio = Annotated[float, Range(0.0, 1.0, high_open=True)]  # dropout, betas, momentum
Positive = Annotated[float, Range(0.0, low_open=True)]
MeshAxis = Annotated[int, Range(-1)]  # -1 (fill) or a size >= 1; 0 is caught by validate
Dtype = Literal["float32", "bfloat16", "float16"]


@dataclasses.dataclass(frozen=True)
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
    # None = XLA picks; "cudnn" for flash attention on GPU
    attention_impl: Literal["xla", "cudnn"] | None = None
    # What [GLOBAL] sees: "title_embedding" (the given vector), "title_mean" (the title's
    # mean fused shot, computed at ingest) or "both" (concatenated). Issue 14.
    global_input: Literal["title_embedding", "title_mean", "both"] = "title_embedding"
    # Input fusion (fusion.py): unit-norm each modality before concatenation. Read by
    # training and inference alike; runs before it recorded it as objective.per_modality_norm.
    per_modality_norm: bool = False


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    mask_ratio: Ratio = 0.2
    # BERT's 80/10/10: of the selected shots, this share gets [MASK], the same share of the
    # rest gets a random other shot, the remainder stays as it is (but is still predicted).
    mask_token_share: Ratio = 0.8
    random_shot_share: Ratio = 0.1
    modality_dropout: OpenRatio = 0.0  # drop a whole modality of a shot during training
    # Span masking: targets in contiguous runs of geometric length with this mean (shots),
    # same budget; 0 = single shots (masking.py). Issue 14.
    span_mean_shots: Annotated[float, Range(0.0, 64.0)] = 0.0
    # InfoNCE between each predicted target and its true shot, the batch's other targets
    # as negatives, added to the cosine loss at this weight; 0 = off. Issue 14.
    contrastive_weight: Annotated[float, Range(0.0, 100.0)] = 0.0
    contrastive_temperature: Annotated[float, Range(1e-4, 100.0)] = 0.1


@dataclasses.dataclass(frozen=True)
class DataConfig:
    split: Literal["train", "val", "test"] | None = "train"  # None: every title
    in_memory: Literal["auto", "yes", "no"] = "auto"  # copy the shot table into host RAM
    in_memory_max_gb: Annotated[float, Range(0.0)] = 8.0
    threads: Count = 4  # Grain read threads (4 beat 2 on a 2-core machine: page faults overlap)
    prefetch: NonNegative = 2


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    kind: Literal["muon_adamw", "adamw"] = "muon_adamw"
    learning_rate: Positive = 1e-3
    muon_learning_rate: Positive | None = None  # None: reuse learning_rate (moonlight scale)
    warmup_steps: NonNegative = 100
    min_lr_ratio: Ratio = 0.1
    b1: OpenRatio = 0.9
    b2: OpenRatio = 0.98
    eps: Positive = 1e-8
    weight_decay: Annotated[float, Range(0.0)] = 0.01
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
    # (a, b, c) for every step) | "polar_express" (one per step, muon_ns_steps <= 5).
    muon_stack: str = "auto"
    muon_ns_coeffs: str = "keller"


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: MeshAxis = -1  # -1 fills with the devices left over
    fsdp: MeshAxis = 1
    tensor: MeshAxis = 1


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every_steps: Count = 500
    keep: Count = 3
    async_save: bool = True


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: Count = 1000
    batch_size: Count = 8  # global, in windows
    seed: NonNegative = 0
    log_every: Count = 50


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    name: str = "default"
    model: ModelConfig = ModelConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    mesh: MeshConfig = MeshConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    train: TrainConfig = TrainConfig()


# ---------------------------------------------------------------------------------------
# Field types: what a field may hold, read from its annotation.
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FieldType:
    """A field's annotation taken apart: base type, choices, bounds, None allowed."""

    base: Any
    choices: tuple[Any, ...] | None = None
    bounds: Range | None = None
    optional: bool = False

    def expected(self) -> str:
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            text = getattr(self.base, "__name__", str(self.base))
            if self.bounds is not None:
                text += " " + self.bounds.describe()
        return text + (" or none" if self.optional else "")


def field_type(annotation: Any) -> FieldType:
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        optional = type(None) in args
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported config annotation {annotation}")
        annotation, origin = inner[0], typing.get_origin(inner[0])
    bounds = None
    if origin is Annotated:
        annotation, *extras = typing.get_args(annotation)
        bounds = next((e for e in extras if isinstance(e, Range)), None)
        origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        return FieldType(type(choices[0]), choices=choices, optional=optional)
    return FieldType(annotation, bounds=bounds, optional=optional)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _coerce(text: str, annotation: Any, key: str) -> Any:
    """Parses an override string into the field's declared type."""
    ftype = field_type(annotation)
    if ftype.optional and text.lower() in ("none", "null"):
        return None
    value: Any = None
    if ftype.base is bool:
        value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        value = value.get(text.lower())
    elif ftype.base in (int, float, str):
        try:
            value = ftype.base(text)
        except ValueError:
            value = None
    if value is None or (ftype.choices is not None and value not in ftype.choices):
        raise ConfigError(f"--set {key}={text}: expected {ftype.expected()}")
    return value


def apply_overrides(config: ExperimentConfig, overrides: Iterable[str]) -> ExperimentConfig:
    """Applies ``a.b=value`` strings; unknown keys raise a ConfigError listing valid ones."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.steps=100")
        key, text = item.split("=", 1)
        config = _replace_path(config, key.strip().split("."), text.strip(), key.strip())
    return config


def _replace_path(node: Any, path: list[str], text: str, key: str) -> Any:
    hints = _field_types(type(node))
    name = path[0]
    if name not in hints:
        valid = ", ".join(sorted(hints))
        raise ConfigError(f"--set {key}: unknown key {name!r}; valid here: {valid}")
    current = getattr(node, name)
    if len(path) == 1:
        if dataclasses.is_dataclass(current):
            raise ConfigError(f"--set {key}: is a section; set one of its fields")
        return dataclasses.replace(node, **{name: _coerce(text, hints[name], key)})
    if not dataclasses.is_dataclass(current):
        raise ConfigError(f"--set {key}: {name!r} is a value, not a section")
    return dataclasses.replace(node, **{name: _replace_path(current, path[1:], text, key)})


def to_dict(config: ExperimentConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(data: Mapping[str, Any], cls: type = ExperimentConfig) -> Any:
    """Rebuilds a config from its JSON form; unknown keys are an error (a stale run dir)."""
    hints = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            raise ConfigError(f"config JSON: unknown key {key!r} in {cls.__name__}")
        sub = hints[key]
        kwargs[key] = from_dict(value, sub) if dataclasses.is_dataclass(sub) else value
    return cls(**kwargs)


def to_json(config: ExperimentConfig) -> str:
    return json.dumps(to_dict(config), indent=2, sort_keys=True)


def save_json(config: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(to_json(config) + "\n")


def parse_arg(arg: str | None, **defaults: Any) -> dict[str, Any]:
    """A config file's ``arg`` (``key=value,key=value``, big_vision's ``parse_arg``) over
    ``defaults``, each value coerced to its default's type; an unknown key or a value of
    the wrong type is a ``ConfigError`` that names it."""
    values = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in defaults:
            raise ConfigError(
                f"unknown arg {item!r}; expected key=value with a key of {sorted(defaults)}"
            )
        kind = type(defaults[key])
        try:
            values[key] = kind(text.strip())
            if kind is int and values[key] < 0:
                raise ValueError
        except ValueError:
            raise ConfigError(
                f"arg {key}={text!r}: expected a {kind.__name__} >= 0"
                if kind is int
                else f"arg {key}={text!r}: expected a {kind.__name__}"
            ) from None
    return values


def load_config_file(spec: str) -> ExperimentConfig:
    """Loads ``path/to/file.py[:arg]`` by calling its ``get_config(arg)``."""
    path_text, _, arg = spec.partition(":")
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(f"--config {spec}: no such file {path}")
    module_spec = importlib.util.spec_from_file_location(f"_mediafm_cfg_{path.stem}", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"--config {spec}: {path} defines no get_config(arg)")
    try:
        config = module.get_config(arg or None)
    except ConfigError as err:
        raise ConfigError(f"--config {spec}: {err}") from None
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"--config {spec}: get_config returned {type(config).__name__}")
    return config


# ---------------------------------------------------------------------------------------
# Validation: every field against its type, then the rules between fields.
# ---------------------------------------------------------------------------------------


def _fields(node: Any, prefix: str = "") -> Iterator[tuple[str, Any, FieldType]]:
    """(dotted key, value, field type) of every leaf field of a config tree."""
    for name, annotation in _field_types(type(node)).items():
        value = getattr(node, name)
        if dataclasses.is_dataclass(annotation):
            yield from _fields(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value, field_type(annotation)


def _field_problem(value: Any, ftype: FieldType) -> bool:
    """True when ``value`` does not fit ``ftype`` (a bool is not an int, NaN is no float)."""
    if value is None:
        return not ftype.optional
    if ftype.choices is not None:
        return value not in ftype.choices or type(value) is not ftype.base
    if ftype.base is bool:
        return not isinstance(value, bool)
    if ftype.base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return True
    elif ftype.base is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return True
    elif not isinstance(value, ftype.base):
        return True
    return ftype.bounds is not None and not ftype.bounds.holds(value)


def resolve_mesh_shape(config: MeshConfig, num_devices: int) -> tuple[int, int, int]:
    """Fills one -1 axis with the devices left over; checks the product."""
    shape = [config.data, config.fsdp, config.tensor]
    if shape.count(-1) > 1:
        raise ValueError(f"mesh {shape}: at most one axis may be -1")
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


def problems(config: ExperimentConfig, num_devices: int | None = None, processes: int = 1):
    """Every problem of ``config`` as ``key=value: expected ...`` strings (empty: valid).

    ``num_devices``: the devices the run will use, for the mesh and batch rules (None
    skips them, as inference does: it builds its own mesh).
    """
    found = [
        f"{key}={value!r}: expected {ftype.expected()}"
        for key, value, ftype in _fields(config)
        if _field_problem(value, ftype)
    ]
    if found:  # the rules below assume well-typed fields
        return found
    model, objective, mesh = config.model, config.objective, config.mesh
    if model.hidden_size % model.num_heads:
        found.append(
            f"model.num_heads={model.num_heads} does not divide "
            f"model.hidden_size={model.hidden_size}"
        )
    if model.per_modality_norm and model.global_input != "title_embedding":
        found.append(
            f"model.global_input={model.global_input!r} with model.per_modality_norm: the "
            "store's title_mean is the mean of the default fusion (ingest); use one or the other"
        )
    if objective.mask_token_share + objective.random_shot_share > 1:
        found.append(
            f"objective.mask_token_share={objective.mask_token_share} + "
            f"objective.random_shot_share={objective.random_shot_share} exceeds 1"
        )
    axes = {"mesh.data": mesh.data, "mesh.fsdp": mesh.fsdp, "mesh.tensor": mesh.tensor}
    found += [f"{k}=0: expected -1 (fill) or a size >= 1" for k, v in axes.items() if v == 0]
    if list(axes.values()).count(-1) > 1:
        found.append("mesh: at most one of data, fsdp, tensor may be -1")
    batch = config.train.batch_size
    if batch % processes:
        found.append(f"train.batch_size={batch} is not divisible by the {processes} processes")
    if num_devices is not None and not found:
        try:
            data, fsdp, _ = resolve_mesh_shape(mesh, num_devices)
        except ValueError as err:
            found.append(str(err))
        else:
            if batch % (data * fsdp):
                found.append(
                    f"train.batch_size={batch} is not divisible by the data-parallel size "
                    f"{data * fsdp} (mesh.data={data} x mesh.fsdp={fsdp})"
                )
    return found


def validate(config: ExperimentConfig, num_devices: int | None = None, processes: int = 1) -> None:
    """Raises one ConfigError listing every problem of ``config``; see ``problems``."""
    found = problems(config, num_devices, processes)
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
