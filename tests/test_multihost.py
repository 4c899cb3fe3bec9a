"""Multi-process runs on one machine (gloo CPU collectives) stand in for hosts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from mediafm_jax import config as config_lib
from mediafm_jax import presets, sharding, train
from mediafm_jax.checkpoint import Checkpointer

ROOT = Path(__file__).resolve().parent.parent
TRAIN = [
    sys.executable,
    "-m",
    "mediafm_jax.cli",
    "train",
    "--config",
    "experiments/configs/tiny.py",
]
SETTINGS = [
    "train.steps=16",
    "train.log_every=1",
    "checkpoint.every_steps=100",
    "checkpoint.async_save=false",
]


def _train(store, workdir, processes, *extra):
    args = [*TRAIN, "--store", store, "--workdir", str(workdir), *extra]
    for s in SETTINGS:
        args += ["--set", s]
    if processes == 1:
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        }
        command = args
    else:
        env = dict(os.environ)
        env.pop("XLA_FLAGS", None)
        command = [
            str(ROOT / "launch" / "local_multiprocess.sh"),
            "--devices-per-process",
            "2",
            "--port",
            str(12000 + os.getpid() % 5000),
            str(processes),
            "--",
            *args,
        ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def _losses(workdir):
    return [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").open()]


def _final_params(workdir, store):
    from mediafm_jax.data.store import ShotStore

    cfg = config_lib.apply_overrides(presets.tiny(), SETTINGS)
    mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
    setup = train.TrainSetup.create(cfg, train.data_dims(ShotStore(store)), mesh)
    ckpt = Checkpointer(workdir)
    params = ckpt.restore_params(ckpt.latest_step(), setup.abstract_state["params"])
    ckpt.close()
    return jax.device_get(params)


def test_two_processes_match_one_and_checkpoints_cross_process_counts(tiny_store, tmp_path):
    _train(tiny_store, tmp_path / "one", 1)
    _train(tiny_store, tmp_path / "two", 2)
    reference = _losses(tmp_path / "one")
    assert len(reference) == 16
    np.testing.assert_allclose(_losses(tmp_path / "two"), reference, rtol=2e-5)
    one_params = _final_params(tmp_path / "one", tiny_store)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    jax.tree.map(close, _final_params(tmp_path / "two", tiny_store), one_params)
    # Written by 2 processes, resumed by 1 -- and the other way round.
    for first, second, name in ((2, 1, "two_then_one"), (1, 2, "one_then_two")):
        _train(tiny_store, tmp_path / name, first, "--stop-at", "8")
        _train(tiny_store, tmp_path / name, second)
        np.testing.assert_allclose(_losses(tmp_path / name), reference, rtol=2e-5)
        jax.tree.map(close, _final_params(tmp_path / name, tiny_store), one_params)
