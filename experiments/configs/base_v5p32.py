"""Base on a TPU v5p-32 slice (16 chips, 4 hosts): FSDP inside a host, data across hosts.

    launch/tpu_vm.sh run --name NAME --zone ZONE --type v5p-32 --bucket gs://B \
        --config experiments/configs/base_v5p32.py
"""

from mediafm_jax import config as config_lib
from mediafm_jax import presets
from mediafm_jax.config import ExperimentConfig


def get_config(arg: str | None = None) -> ExperimentConfig:
    del arg
    return config_lib.apply_overrides(
        presets.base(),
        [
            "mesh.data=4",
            "mesh.fsdp=4",
            "mesh.tensor=1",
            "train.batch_size=512",
            "model.attention_impl=none",
        ],
    )
