"""MovieNet-318, text only (384-d MiniLM): trains in about 17 minutes on a 2-core CPU.

Demo-sized encoder over 512-shot windows (a film has about 1,600 shots), trained on the
190 train films only (`data.split=train`).
"""

from mediafm_jax import config as config_lib
from mediafm_jax import presets
from mediafm_jax.config import ExperimentConfig


def get_config(arg: str | None = None) -> ExperimentConfig:
    del arg
    return config_lib.apply_overrides(
        presets.demo(),
        [
            "name=movienet318",
            "model.max_shots=512",
            "train.batch_size=8",
            "train.steps=1200",
            "checkpoint.every_steps=400",
        ],
    )
