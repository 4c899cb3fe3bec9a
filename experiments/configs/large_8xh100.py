"""Large on one host with 8 H100s: FSDP over the 8 GPUs, cuDNN flash attention, bf16.

launch/slurm_gpu.sbatch --config experiments/configs/large_8xh100.py --store ... --workdir ...
"""

import dataclasses

from mediafm_jax import presets
from mediafm_jax.config import ExperimentConfig, MeshConfig


def get_config(arg: str | None = None) -> ExperimentConfig:
    """``arg``: ``steps=N,batch_size=N,seed=N,variant=NAME`` (``presets.configure``)."""
    config = presets.large()
    config = dataclasses.replace(
        config,
        mesh=MeshConfig(data=1, fsdp=8, tensor=1),
        train=dataclasses.replace(config.train, batch_size=256),
        model=dataclasses.replace(config.model, attention_impl="cudnn"),
    )
    return presets.configure(config, arg)
