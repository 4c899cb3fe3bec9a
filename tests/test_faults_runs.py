"""Damaged checkpoints, resumes that would mix runs, and stops: each case builds the fault,
then checks the exit code, the one-line message, and that nothing else changed.

One base run (checkpoints 2, 4, 6) is trained once; every case works on a copy of it.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from faults import fault_held

import mediafm_jax
from mediafm_jax import cli, embed, outputs, train
from mediafm_jax import config as config_lib
from mediafm_jax.checkpoint import Checkpointer
from mediafm_jax.data import ingest, synthetic

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = [
    "train.steps=6",
    "train.log_every=1",
    "checkpoint.every_steps=2",
    "checkpoint.keep=3",
    "checkpoint.async_save=false",
    "model.max_shots=48",
]


def _config(*extra):
    return config_lib.apply_overrides(
        config_lib.load_config_file("experiments/configs/tiny.py"), [*SETTINGS, *extra]
    )


@pytest.fixture(scope="module")
def base_run(tiny_store, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("faults") / "run"
    train.train(_config(), tiny_store, workdir, devices=jax.devices()[:1])
    return workdir


@pytest.fixture(scope="module")
def step4_params(base_run):
    """The reference: step 4's parameters as the intact run holds them."""
    return jax.device_get(embed.Embedder(base_run, step=4).params)


def _copy(base_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    return run


def _tree_hash(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _data_files(step_dir: Path) -> list[Path]:
    """The array data files of a step (OCDBT packs several arrays per file; damaging every
    one makes sure the parameters, which inference reads alone, are hit too)."""
    return [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]


def _truncate(run):
    for target in _data_files(run / "checkpoints" / "6"):
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])


def _drop_metadata(run):
    (run / "checkpoints" / "6" / "state" / "_METADATA").unlink()


def _flip_byte(run):
    for target in _data_files(run / "checkpoints" / "6"):
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x10
        target.write_bytes(bytes(data))


def _wrong_digest(run):
    path = run / "checkpoints" / "6" / "digest" / "metadata"
    digest = json.loads(path.read_text())
    leaf = digest["leaves"]["params/input_proj/kernel"]
    leaf["sum"] = (leaf["sum"] + 1) % 2**32
    path.write_text(json.dumps(digest))


def _half_written(run):
    shutil.copytree(run / "checkpoints" / "6", run / "checkpoints" / "8")
    shutil.rmtree(run / "checkpoints" / "8" / "state" / "ocdbt.process_0")


DAMAGE = {
    "truncated data file": (_truncate, 4),
    "missing _METADATA": (_drop_metadata, 4),
    "flipped byte": (_flip_byte, 4),
    "digest mismatch": (_wrong_digest, 4),
    "empty step directory": (lambda run: (run / "checkpoints" / "45").mkdir(), 6),
    "half-written step directory": (_half_written, 6),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_inference_falls_back_to_the_newest_intact_step(
    base_run, step4_params, tmp_path, capsys, case
):
    damage, expected = DAMAGE[case]
    run = _copy(base_run, tmp_path)
    damage(run)
    before = _tree_hash(run)
    embedder = mediafm_jax.load(run)
    assert embedder.step == expected
    assert len(embedder.skipped) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if "skipped" in line]
    assert len(lines) == 1 and lines[0].startswith("checkpoint step "), lines
    if case == "digest mismatch":
        assert "digest mismatch in params/input_proj/kernel" in lines[0]
    if expected == 4:
        jax.tree.map(np.testing.assert_array_equal, jax.device_get(embedder.params), step4_params)
    assert _tree_hash(run) == before  # a reader moves and deletes nothing


def test_non_finite_state_is_rejected(base_run, step4_params, tmp_path, capsys):
    run = _copy(base_run, tmp_path)
    abstract = _abstract_state(run)
    ckpt = Checkpointer(run, async_save=False)
    state = ckpt.restore_newest(abstract).state
    poison = lambda x: x * np.nan if x.dtype == np.float32 else x
    state["opt_state"] = jax.tree.map(poison, state["opt_state"])
    ckpt.save(8, state, {"next_batch": 8}, ckpt.restore_config(6))
    ckpt.close()
    restored = Checkpointer(run).restore_newest(abstract)
    assert restored.step == 6 and "non-finite values in opt_state" in restored.skipped[0][1]


def test_every_step_bad_is_one_line(base_run, tiny_store, tmp_path, capsys):
    run = _copy(base_run, tmp_path)
    for step in (2, 4, 6):
        (run / "checkpoints" / str(step) / "state" / "_METADATA").unlink()
    before = _tree_hash(run)
    out = tmp_path / "emb"
    assert cli.main(["embed", "--workdir", str(run), "--store", tiny_store, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no checkpoint restores and verifies" in err
    assert "step 2" in err and "step 6" in err
    assert not out.exists() and _tree_hash(run) == before
    fault_held()


def _train_args(run, store) -> list[str]:
    args = ["train", "--config", "experiments/configs/tiny.py", "--store", store]
    args += ["--workdir", str(run)]
    for s in SETTINGS:
        args += ["--set", s]
    return args


def _train_cli(run, store, *extra):
    return cli.main([*_train_args(run, store), *extra])


def test_resume_falls_back_sets_the_bad_step_aside_and_cuts_metrics(
    base_run, tiny_store, tmp_path, capsys
):
    run = _copy(base_run, tmp_path)
    _truncate(run)
    (run / "checkpoints" / "45").mkdir()  # Orbax would count it among the newest `keep`
    train.train(_config(), tiny_store, run, devices=jax.devices()[:1])
    out = capsys.readouterr().out
    assert "checkpoint step 45 skipped" in out and "checkpoint step 6 skipped" in out
    assert f"resumed from {run / 'checkpoints' / '4'}" in out
    assert "metrics.jsonl: dropped 2 records after step 4" in out
    # Steps 5-6 were recomputed from step 4: the records equal the undamaged run's, once each.
    read = lambda w: [json.loads(line) for line in (w / "metrics.jsonl").open()]
    assert [r["step"] for r in read(run)] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in read(run)] == [r["loss"] for r in read(base_run)]
    ckpt = Checkpointer(run)
    assert ckpt.all_steps() == [2, 4, 6]  # step 2 not collected in favour of the empty 45
    assert ckpt.restore_newest(_abstract_state(run)).step == 6  # the new step 6 verifies
    ckpt.close()
    rejected = run / "checkpoints-rejected"
    assert sorted(p.name for p in rejected.iterdir()) == ["45", "6"]  # kept, not deleted


def _abstract_state(run):
    mesh = train.sharding.make_mesh(_config().mesh, jax.devices()[:1])
    return train.TrainSetup.create(_config(), embed.Embedder(run).dims, mesh).abstract_state


@pytest.mark.parametrize(
    ("override", "diff"),
    [
        ("optim.learning_rate=0.002", "optim.learning_rate: 0.003 -> 0.002"),
        ("optim.kind=adamw", "optim.kind: 'muon_adamw' -> 'adamw'"),
        ("train.seed=1", "train.seed: 0 -> 1"),
        ("train.batch_size=16", "train.batch_size: 8 -> 16"),
        ("objective.mask_ratio=0.3", "objective.mask_ratio: 0.2 -> 0.3"),
        ("model.num_layers=3", "model.num_layers: 2 -> 3"),
    ],
)
def test_resume_with_other_settings_stops_with_a_diff(
    base_run, tiny_store, tmp_path, capsys, override, diff
):
    run = _copy(base_run, tmp_path)
    before = _tree_hash(run)
    assert _train_cli(run, tiny_store, "--set", "train.steps=8", "--set", override) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and diff in err and "--allow-config-change" in err
    assert "train.steps" not in err  # the run length may change
    assert _tree_hash(run) == before
    fault_held()


def test_resume_on_another_store_of_the_same_dims_stops(base_run, tmp_path, capsys):
    same_dims = synthetic.SynthConfig(
        titles=12, seed=4, video_dim=16, audio_dim=12, text_dim=8, title_dim=6, max_shots=200
    )
    other_src = synthetic.write_catalog(tmp_path / "src", same_dims, progress=False)
    other = str(tmp_path / "store")
    ingest.ingest(other_src, other, shard_rows=256, progress=False)
    run = _copy(base_run, tmp_path)
    before = _tree_hash(run)
    assert _train_cli(run, other, "--set", "train.steps=8") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "store.checksum" in err
    assert _tree_hash(run) == before
    fault_held()


def test_allowed_config_change_is_recorded(base_run, tiny_store, tmp_path, capsys):
    run = _copy(base_run, tmp_path)
    changed = _config("train.steps=8", "optim.learning_rate=0.002")
    single = jax.devices()[:1]
    train.train(changed, tiny_store, run, devices=single, allow_config_change=True)
    history = [json.loads(line) for line in (run / "config_history.jsonl").open()]
    assert history == [
        {
            "time": history[0]["time"],
            "step": 6,
            "changes": {"optim.learning_rate": [0.003, 0.002]},
        }
    ]
    assert json.loads((run / "config.json").read_text())["optim"]["learning_rate"] == 0.002
    assert "continuing step 6 with changed settings" in capsys.readouterr().out
    flag = cli.build_parser().parse_args([*_train_args(run, tiny_store), "--allow-config-change"])
    assert flag.allow_config_change


@pytest.mark.slow(45)
def test_demo_stops_as_a_whole_on_sigterm(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    command = [sys.executable, "-m", "mediafm_jax.cli", "demo", "--out", str(out)]
    # the demo smoke's size: its compiled programs are in the session's cache; the signal
    # lands while step 1 is still loading or compiling
    command += ["--titles", "14", "--steps", "3"]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen = []
    deadline = time.time() + 300
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("optimizer groups"):  # training is about to start
            proc.send_signal(signal.SIGTERM)
            break
        assert time.time() < deadline, "".join(seen)
    rest, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().count("\n") == 0, err
    assert "stopped by SIGTERM during train" in err and f"--out {out}" in err
    assert "[4/5]" not in rest and not (out / "embeddings").exists()
    assert "preempted (SIGTERM): saved step" in rest
    assert Checkpointer(out / "run").all_steps()  # the half-trained state was saved
    assert outputs.foreign_files(out) == []  # and a rerun may replace it all
