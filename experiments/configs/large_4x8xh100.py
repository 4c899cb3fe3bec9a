"""Large on 4 hosts x 8 H100 (32 GPUs): FSDP inside a host over NVLink, data across hosts.

sbatch --nodes=4 launch/slurm_gpu.sbatch --config experiments/configs/large_4x8xh100.py ...
"""

import dataclasses

from mediafm_jax import presets
from mediafm_jax.config import ExperimentConfig, MeshConfig


def get_config(arg: str | None = None) -> ExperimentConfig:
    """``arg``: ``steps=N,batch_size=N,seed=N,variant=NAME`` (``presets.configure``)."""
    config = presets.large()
    config = dataclasses.replace(
        config,
        mesh=MeshConfig(data=4, fsdp=8, tensor=1),
        train=dataclasses.replace(config.train, batch_size=1024),
        model=dataclasses.replace(config.model, attention_impl="cudnn"),
    )
    return presets.configure(config, arg)
