"""Typed, frozen experiment configuration.

Experiment files in ``experiments/configs/`` define ``get_config(arg) -> ExperimentConfig``;
``--set a.b=value`` overrides one field and fails loudly on unknown keys. Shapes that the
data determines (modality dims, title-embedding dim) are not here: they come from the
store's manifest, so they are never typed twice.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mediafm_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    mlp_size: int = 1024
    max_shots: int = 512
    post_ln: bool = False  # BERT-style post-LN blocks instead of pre-LN
    dropout: float = 0.0
    compute_dtype: str = "float32"  # "bfloat16" on GPU/TPU
    remat: bool = False
    attention_impl: str | None = None  # None = XLA picks; "cudnn" for flash attention on GPU
    # What [GLOBAL] sees: "title_embedding" (the given vector), "title_mean" (the title's
    # mean fused shot, computed at ingest) or "both" (concatenated). Issue 14.
    global_input: str = "title_embedding"


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    mask_ratio: float = 0.2
    # BERT's 80/10/10: of the selected shots, this share gets [MASK], the same share of the
    # rest gets a random other shot, the remainder stays as it is (but is still predicted).
    mask_token_share: float = 0.8
    random_shot_share: float = 0.1
    per_modality_norm: bool = False  # unit-norm each modality before concatenation
    modality_dropout: float = 0.0  # drop a whole modality of a shot during training
    # Span masking: targets in contiguous runs of geometric length with this mean (shots),
    # same budget; 0 = single shots (masking.py). Issue 14.
    span_mean_shots: float = 0.0
    # InfoNCE between each predicted target and its true shot, the batch's other targets
    # as negatives, added to the cosine loss at this weight; 0 = off. Issue 14.
    contrastive_weight: float = 0.0
    contrastive_temperature: float = 0.1


@dataclasses.dataclass(frozen=True)
class DataConfig:
    split: str = "train"
    in_memory: str = "auto"  # "auto" | "yes" | "no": copy the shot table into host RAM
    in_memory_max_gb: float = 8.0
    threads: int = 4  # Grain read threads (4 beat 2 on a 2-core machine: page faults overlap)
    prefetch: int = 2


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    kind: str = "muon_adamw"  # "muon_adamw" | "adamw"
    learning_rate: float = 1e-3
    muon_learning_rate: float | None = None  # None: reuse learning_rate (moonlight scale)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-8
    weight_decay: float = 0.01
    muon_momentum: float = 0.95
    muon_nesterov: bool = True
    muon_ns_steps: int = 5
    muon_ns_dtype: str = "bfloat16"
    muon_scale: str = "moonlight"  # "moonlight" | "keller" | "none"
    clip_norm: float | None = 1.0
    accumulate_steps: int = 1
    muon_gather_free: bool = False  # stack same-shape matrices, shard the stack over fsdp


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: int = -1  # -1 fills with the devices left over
    fsdp: int = 1
    tensor: int = 1


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 500
    keep: int = 3
    async_save: bool = True


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 8  # global, in windows
    seed: int = 0
    log_every: int = 50


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


def _coerce(text: str, annotation: Any, key: str) -> Any:
    """Parses an override string into the field's declared type."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(text, inner[0], key)
    try:
        if annotation is bool:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if annotation is int:
            return int(text)
        if annotation is float:
            return float(text)
        if annotation is str:
            return text
    except ValueError:
        pass
    raise ConfigError(f"--set {key}={text}: expected {getattr(annotation, '__name__', annotation)}")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


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


def load_json(path: str | Path) -> ExperimentConfig:
    return from_dict(json.loads(Path(path).read_text()))


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
    config = module.get_config(arg or None)
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"--config {spec}: get_config returned {type(config).__name__}")
    return config
