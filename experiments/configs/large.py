"""The `large` preset (mediafm_jax/presets.py); edit a copy of this file for your experiment."""

from mediafm_jax import presets
from mediafm_jax.config import ExperimentConfig


def get_config(arg: str | None = None) -> ExperimentConfig:
    del arg
    return presets.large()
