"""Large on one host with 8 H100s: FSDP over the 8 GPUs, cuDNN flash attention, bf16.

launch/slurm_gpu.sbatch --config experiments/configs/large_8xh100.py --store ... --workdir ...
"""

from mediafm_jax import config as config_lib
from mediafm_jax import presets
from mediafm_jax.config import ExperimentConfig


def get_config(arg: str | None = None) -> ExperimentConfig:
    del arg
    return config_lib.apply_overrides(
        presets.large(),
        [
            "mesh.data=1",
            "mesh.fsdp=8",
            "mesh.tensor=1",
            "train.batch_size=256",
            "model.attention_impl=cudnn",
        ],
    )
