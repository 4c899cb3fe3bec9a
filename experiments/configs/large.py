"""The `large` preset (defined once, in mediafm_jax/presets.py).

`--config experiments/configs/large.py:steps=N,batch_size=N,seed=N,variant=NAME` changes the
run length, batch, seed or model size (`presets.configure`); copy a target config such
as large_8xh100.py for an experiment of your own.
"""

from mediafm_jax import presets
from mediafm_jax.config import ExperimentConfig


def get_config(arg: str | None = None) -> ExperimentConfig:
    return presets.configure(presets.large(), arg)
