"""The model-size presets, importable from an installed package: the one source of each.

``experiments/configs/{tiny,demo,base,large}.py`` return these through ``configure`` (so
``--config demo.py:steps=50`` works); target configs (``large_8xh100.py`` ...) start
from one and replace typed fields. ``mediafm demo`` uses ``demo()`` directly so that it
also works from a wheel without the experiments folder.
"""

import dataclasses

from mediafm_jax import config as config_lib
from mediafm_jax.config import (
    CheckpointConfig,
    DataConfig,
    ExperimentConfig,
    MeshConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)


def tiny() -> ExperimentConfig:
    """For tests and smoke runs: seconds on a CPU."""
    return ExperimentConfig(
        name="tiny",
        model=ModelConfig(hidden_size=32, num_layers=2, num_heads=4, mlp_size=64, max_shots=64),
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=10, muon_ns_dtype="float32"),
        train=TrainConfig(steps=50, batch_size=8, log_every=10),
        checkpoint=CheckpointConfig(every_steps=25, keep=2),
    )


def demo() -> ExperimentConfig:
    """Minutes on a 2-core laptop CPU (what `mediafm demo` trains).

    192 hidden x 3 layers rather than 128 x 4 at about the same cost: with 128 hidden the
    in-context embeddings lost to the raw inputs on the 100-class tone probe (0.66 vs
    0.73 micro AP); at 192 they match them and gain elsewhere (docs/RESULTS.md, "Demo").
    """
    return ExperimentConfig(
        name="demo",
        model=ModelConfig(hidden_size=192, num_layers=3, num_heads=6, mlp_size=768, max_shots=256),
        optim=OptimConfig(
            learning_rate=3e-3, muon_learning_rate=1e-2, warmup_steps=50, muon_ns_dtype="float32"
        ),
        train=TrainConfig(steps=600, batch_size=16, log_every=50),
        checkpoint=CheckpointConfig(every_steps=250, keep=2),
    )


def base() -> ExperimentConfig:
    """The original's size: 768 hidden x 12 layers x 12 heads, 512-shot windows, bf16."""
    return ExperimentConfig(
        name="base",
        model=ModelConfig(
            hidden_size=768,
            num_layers=12,
            num_heads=12,
            mlp_size=3072,
            max_shots=512,
            compute_dtype="bfloat16",
        ),
        optim=OptimConfig(learning_rate=1e-3, warmup_steps=1000),
        train=TrainConfig(steps=50_000, batch_size=256, log_every=100),
        checkpoint=CheckpointConfig(every_steps=2000, keep=3),
        data=DataConfig(threads=8, prefetch=4),
    )


def large() -> ExperimentConfig:
    """1024 hidden x 24 layers x 16 heads; FSDP over the mesh's fsdp axis."""
    return ExperimentConfig(
        name="large",
        model=ModelConfig(
            hidden_size=1024,
            num_layers=24,
            num_heads=16,
            mlp_size=4096,
            max_shots=512,
            compute_dtype="bfloat16",
            remat=True,
        ),
        optim=OptimConfig(learning_rate=6e-4, warmup_steps=2000),
        train=TrainConfig(steps=100_000, batch_size=512, log_every=100),
        checkpoint=CheckpointConfig(every_steps=2000, keep=3),
        data=DataConfig(threads=8, prefetch=4),
        mesh=MeshConfig(data=-1, fsdp=8, tensor=1),
    )


VARIANTS = {"tiny": tiny, "demo": demo, "base": base, "large": large}


def configure(config: ExperimentConfig, arg: str | None) -> ExperimentConfig:
    """A config file's ``arg`` applied to its config, big_vision style:
    ``variant=NAME`` (the model of preset NAME), ``steps=N``, ``batch_size=N``, ``seed=N``
    (typed and checked as ``--set train.steps=N`` ... would be).
    """
    args = config_lib.parse_arg(arg, ("variant", "steps", "batch_size", "seed"))
    variant = args.pop("variant", "")
    if variant and variant not in VARIANTS:
        raise config_lib.ConfigError(f"arg variant={variant!r}: expected one of {sorted(VARIANTS)}")
    if variant:
        config = dataclasses.replace(config, model=VARIANTS[variant]().model)
    overrides = [f"train.{key}={value}" for key, value in args.items()]
    return config_lib.apply_overrides(config, overrides, where="arg")
