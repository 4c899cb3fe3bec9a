"""Tiny: for tests and smoke runs (seconds on a CPU)."""

from mediafm_jax.config import (
    CheckpointConfig,
    ExperimentConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)


def get_config(arg: str | None = None) -> ExperimentConfig:
    del arg
    return ExperimentConfig(
        name="tiny",
        model=ModelConfig(hidden_size=32, num_layers=2, num_heads=4, mlp_size=64, max_shots=64),
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=10, muon_ns_dtype="float32"),
        train=TrainConfig(steps=50, batch_size=8, log_every=10),
        checkpoint=CheckpointConfig(every_steps=25, keep=2),
    )
