"""Large on 4 hosts x 8 H100 (32 GPUs): FSDP inside a host over NVLink, data across hosts.

sbatch --nodes=4 launch/slurm_gpu.sbatch --config experiments/configs/large_4x8xh100.py ...
"""

from mediafm_jax import config as config_lib
from mediafm_jax import presets
from mediafm_jax.config import ExperimentConfig


def get_config(arg: str | None = None) -> ExperimentConfig:
    del arg
    return config_lib.apply_overrides(
        presets.large(),
        [
            "mesh.data=4",
            "mesh.fsdp=8",
            "mesh.tensor=1",
            "train.batch_size=1024",
            "model.attention_impl=cudnn",
        ],
    )
