"""Multi-process runs on one machine (gloo CPU collectives) stand in for hosts."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from mediafm_jax import config as config_lib
from mediafm_jax import presets, run, sharding, train
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


def _train_two(store, workdir, *extra):
    """The CLI as two processes of 2 devices each (launch/local_multiprocess.sh, gloo)."""
    args = [*TRAIN, "--store", store, "--workdir", str(workdir), *extra]
    for s in SETTINGS:
        args += ["--set", s]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    port = str(12000 + os.getpid() % 5000)
    launch = [str(ROOT / "launch" / "local_multiprocess.sh"), "--devices-per-process", "2"]
    command = [*launch, "--port", port, "2", "--", *args]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def _config():
    """What ``TRAIN`` with ``SETTINGS`` runs (experiments/configs/tiny.py is the preset)."""
    return config_lib.apply_overrides(presets.tiny(), SETTINGS)


def _train_here(store, workdir, stop_at=None):
    """One process over 4 devices, in the test's own process (no start-up, warm compiles)."""
    train.train(_config(), store, workdir, devices=jax.devices()[:4], stop_at=stop_at)


def _losses(workdir):
    return [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").open()]


def _final_params(workdir, store):
    from mediafm_jax.data.store import ShotStore

    cfg = _config()
    mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
    setup = train.TrainSetup.create(cfg, run.data_dims(ShotStore(store)), mesh)
    ckpt = Checkpointer(workdir)
    params = ckpt.restore_params(ckpt.latest_step(), setup.abstract_state["params"])
    ckpt.close()
    return jax.device_get(params)


def _process_env(index: int, processes: int, port: int) -> dict[str, str]:
    """What launch/local_multiprocess.sh sets for one process."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return {
        **env,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "MEDIAFM_COORDINATOR": f"localhost:{port}",
        "MEDIAFM_NUM_PROCESSES": str(processes),
        "MEDIAFM_PROCESS_ID": str(index),
    }


def _preempt_two(store, workdir) -> int:
    """Two CLI processes; once a step is logged, SIGTERM to process 1 only. Both must stop
    at the same step, each saying so, exit 143 and leave that one step saved; returns it."""
    args = [*TRAIN, "--store", store, "--workdir", str(workdir)]
    for s in SETTINGS:
        args += ["--set", s]
    port = 12000 + (os.getpid() + 1) % 5000
    procs = [
        subprocess.Popen(
            args,
            cwd=ROOT,
            env=_process_env(i, 2, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        deadline = time.time() + 300
        metrics = workdir / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().strip()):
            assert time.time() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGTERM)  # the other process is not told
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    # both stopped short of the last step for the notice: 128 + SIGTERM, not "done"
    assert [p.returncode for p in procs] == [143, 143], [err[-2000:] for _, err in outputs]
    saved = [
        re.search(r"process (\d): preempted \(SIGTERM\): saved step (\d+)", out)
        for out, _ in outputs
    ]
    assert all(saved), [out[-1000:] for out, _ in outputs]
    assert [int(m.group(1)) for m in saved] == [0, 1]
    step = int(saved[0].group(2))
    assert int(saved[1].group(2)) == step
    ckpt = Checkpointer(workdir)
    assert ckpt.all_steps() == [step]
    ckpt.close()
    return step


@pytest.mark.slow(150)
def test_preempted_two_processes_resume_on_one_then_two_and_match_one(tiny_store, tmp_path):
    """One run that changes its process count twice: initialised by 2 processes and
    preempted there (SIGTERM to one of them), resumed by 1 for three steps, then by 2 to
    the end. Every loss and the final parameters equal the uninterrupted 1-process run."""
    _train_here(tiny_store, tmp_path / "one")
    reference = _losses(tmp_path / "one")
    assert len(reference) == 16
    one_params = _final_params(tmp_path / "one", tiny_store)
    chain = tmp_path / "two_one_two"
    step = _preempt_two(tiny_store, chain)
    assert 1 <= step <= 12, f"preempted at step {step}: too late to resume on one and two"
    _train_here(tiny_store, chain, stop_at=step + 3)
    _train_two(tiny_store, chain)
    np.testing.assert_allclose(_losses(chain), reference, rtol=2e-5)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    jax.tree.map(close, _final_params(chain, tiny_store), one_params)


def test_two_process_embed_equals_one_process(tiny_run, tiny_store, tmp_path):
    from mediafm_jax import embed
    from mediafm_jax.data.embeddings import EmbeddingStore
    from mediafm_jax.data.store import ShotStore

    out = tmp_path / "emb2"
    command = [
        str(ROOT / "launch" / "local_multiprocess.sh"),
        "--devices-per-process",
        "2",
        "--port",
        str(12000 + (os.getpid() + 2) % 5000),
        "2",
        "--",
        sys.executable,
        "-m",
        "mediafm_jax.cli",
        "embed",
        "--workdir",
        str(tiny_run),
        "--store",
        tiny_store,
        "--out",
        str(out),
    ]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote ") == 1  # process 0 alone writes and reports
    assert not list(tmp_path.glob("emb2.partial-*"))
    store = ShotStore(tiny_store)
    one = embed.embed_store(
        embed.Embedder(tiny_run, devices=jax.devices()[:1]), store, str(tmp_path / "emb1")
    )
    two = EmbeddingStore(str(out))
    np.testing.assert_allclose(two.shot_embeddings(), one.shot_embeddings(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(two.cls_embeddings(), one.cls_embeddings(), rtol=1e-5, atol=1e-5)
