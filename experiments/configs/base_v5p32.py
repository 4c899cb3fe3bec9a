"""Base on a TPU v5p-32 slice (16 chips, 4 hosts): FSDP inside a host, data across hosts.

    launch/tpu_vm.sh run --name NAME --zone ZONE --type v5p-32 --bucket gs://B \
        --config experiments/configs/base_v5p32.py
"""

import dataclasses

from mediafm_jax import presets
from mediafm_jax.config import ExperimentConfig, MeshConfig


def get_config(arg: str | None = None) -> ExperimentConfig:
    """``arg``: ``steps=N,batch_size=N,seed=N,variant=NAME`` (``presets.configure``)."""
    config = presets.base()
    config = dataclasses.replace(
        config,
        mesh=MeshConfig(data=4, fsdp=4, tensor=1),
        train=dataclasses.replace(config.train, batch_size=512),
        model=dataclasses.replace(config.model, attention_impl=None),
    )
    return presets.configure(config, arg)
