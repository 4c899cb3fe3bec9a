"""MovieNet-318, text only (384-d MiniLM): trains in about 17 minutes on a 2-core CPU.

Demo-sized encoder over 512-shot windows (a film has about 1,600 shots), trained on the
190 train films only (`data.split=train`).
"""

import dataclasses

from mediafm_jax import presets
from mediafm_jax.config import ExperimentConfig


def get_config(arg: str | None = None) -> ExperimentConfig:
    """``arg``: ``steps=N,batch_size=N,seed=N,variant=NAME`` (``presets.configure``)."""
    config = presets.demo()
    config = dataclasses.replace(
        config,
        name="movienet318",
        model=dataclasses.replace(config.model, max_shots=512),
        train=dataclasses.replace(config.train, batch_size=8, steps=1200),
        checkpoint=dataclasses.replace(config.checkpoint, every_steps=400),
    )
    return presets.configure(config, arg)
