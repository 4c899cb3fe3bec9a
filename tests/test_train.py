"""Training: learning, sharding equivalence, exact resume, restore on another mesh."""

import json

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from mediafm_jax import config as config_lib
from mediafm_jax import train
from mediafm_jax.checkpoint import Checkpointer

TINY = config_lib.load_config_file("experiments/configs/tiny.py")


def _cfg(*overrides):
    return config_lib.apply_overrides(TINY, ["checkpoint.async_save=false", *overrides])


def _losses(workdir):
    return [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").open()]


def _params(out):
    return jax.tree.map(np.asarray, jax.device_get(out["state"]["params"]))


@pytest.mark.slow(80)
def test_sharded_equals_single_device_and_restores_on_another_mesh(tiny_store, tmp_path):
    """Steps 1-4 on a 2 x 2 x 2 mesh (params and optimizer state sharded as the rules say),
    5-8 resumed on one device: every loss and the final params equal a one-device run."""
    sharded = ["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"]
    cfg = _cfg("train.steps=8", "train.log_every=1", "checkpoint.every_steps=100")
    straight = train.train(cfg, tiny_store, tmp_path / "a", devices=jax.devices()[:1])
    eight = train.train(
        config_lib.apply_overrides(cfg, sharded), tiny_store, tmp_path / "b", stop_at=4
    )
    params = eight["state"]["params"]
    assert params["blocks"][0]["q"]["kernel"].sharding.spec == PartitionSpec("fsdp", "tensor")
    assert params["blocks"][0]["mlp_out"]["kernel"].sharding.spec == PartitionSpec("tensor", "fsdp")
    assert params["input_proj"]["kernel"].sharding.spec == PartitionSpec(None, "fsdp")
    shard = params["blocks"][1]["mlp_in"]["kernel"].addressable_shards[0]
    assert shard.data.shape == (16, 32)  # [32, 64] over fsdp=2 x tensor=2
    mu = eight["state"]["opt_state"]
    leaves = [x for x in jax.tree.leaves(mu) if getattr(x, "shape", None) == (32, 64)]
    assert leaves and all(x.sharding.spec == PartitionSpec("fsdp", "tensor") for x in leaves)
    resumed = train.train(cfg, tiny_store, tmp_path / "b", devices=jax.devices()[:1])
    np.testing.assert_allclose(_losses(tmp_path / "b"), _losses(tmp_path / "a"), rtol=5e-5)
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5),
        _params(resumed),
        _params(straight),
    )
    # ... and a single-device checkpoint restores onto 8 devices.
    setup8 = train.TrainSetup.create(
        config_lib.apply_overrides(cfg, sharded),
        straight["setup"].dims,
        train.sharding.make_mesh(config_lib.apply_overrides(cfg, sharded).mesh),
    )
    ckpt = Checkpointer(tmp_path / "a")
    params8 = ckpt.restore_params(8, setup8.abstract_state["params"])
    ckpt.close()
    assert params8["blocks"][0]["k"]["kernel"].sharding.spec == PartitionSpec("fsdp", "tensor")
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(params8), _params(straight))


@pytest.mark.slow(60)
def test_tiny_model_learns_and_muon_adamw_beats_adamw_at_the_same_budget(tiny_store, tmp_path):
    """Each with its lr tuned once on the tiny catalog (experiments/muon_vs_adamw.py); the
    Muon + AdamW run (the default optimizer, at its tuned lr) also shows a tiny model
    learns at all: its last loss under 0.75 of its first."""
    common = ["train.steps=150", "train.log_every=10", "checkpoint.every_steps=150"]
    runs = {
        "adamw": ["optim.kind=adamw", "optim.learning_rate=0.012"],
        "muon_adamw": [
            "optim.kind=muon_adamw",
            "optim.learning_rate=0.012",
            "optim.muon_learning_rate=0.03",
        ],
    }
    final, outs = {}, {}
    for kind, overrides in runs.items():
        outs[kind] = train.train(
            _cfg(*common, *overrides), tiny_store, tmp_path / kind, devices=jax.devices()[:1]
        )
        final[kind] = float(np.mean(_losses(tmp_path / kind)[-3:]))
    assert final["muon_adamw"] < final["adamw"] - 0.01, final
    losses = _losses(tmp_path / "muon_adamw")
    assert losses[-1] < 0.75 * losses[0], losses
    assert (tmp_path / "muon_adamw" / "plots" / "loss.png").stat().st_size > 0
    assert (
        json.loads((tmp_path / "muon_adamw" / "config.json").read_text())["train"]["steps"] == 150
    )
    assert outs["muon_adamw"]["last"]["shots_per_s"] > 0


def test_muon_vs_adamw_paired_table_matches_a_paired_t_interval(tmp_path):
    """``experiments/muon_vs_adamw.py --paired``: per seed both optimizers' values, and the
    mean Muon-minus-AdamW difference with the interval scipy's paired t-test gives."""
    import importlib.util

    from scipy import stats

    spec = importlib.util.spec_from_file_location("muon_vs_adamw", "experiments/muon_vs_adamw.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rng = np.random.default_rng(0)
    rows, work = tmp_path / "rows", tmp_path / "work"
    rows.mkdir()
    losses, scores = {}, {}
    for pair in script.PAIRS:
        for name in pair:
            losses[name] = rng.uniform(0.5, 1.0, 5)
            scores[name] = rng.uniform(0, 1)
            (work / "runs" / name).mkdir(parents=True)
            (work / "runs" / name / "metrics.jsonl").write_text(
                "".join(
                    json.dumps({"step": 50 * i, "loss": v}) + "\n"
                    for i, v in enumerate(losses[name])
                )
            )
            test = {"scene_boundary": {"results": {"mediafm_context": scores[name]}}}
            (rows / f"{name}.json").write_text(json.dumps({"val_mean_context": 0.1, "test": test}))
    text = script.paired(rows, work)
    final = {n: losses[n][-3:].mean() for n in losses}
    for measure, values in (("final loss", final), ("test scene_boundary", scores)):
        muon = [values[m] for m, _ in script.PAIRS]
        adamw = [values[a] for _, a in script.PAIRS]
        low, high = stats.ttest_rel(muon, adamw).confidence_interval(0.95)
        line = next(x for x in text.splitlines() if x.startswith(f"| {measure}"))
        delta = np.mean(muon) - np.mean(adamw)
        assert line.endswith(f"| {delta:+.3f} ({low:+.3f} to {high:+.3f}) |"), line
        assert f"{muon[1]:.3f} / {adamw[1]:.3f}" in line
    # any two sets of rows, a row found in a second folder: the same table, sides swapped
    other = tmp_path / "other"
    other.mkdir()
    (rows / "adamw.json").rename(other / "adamw.json")
    swapped = [(a, m) for m, a in script.PAIRS]
    text = script.paired(rows, work, "", swapped, ("AdamW", "Muon"), (other,))
    assert "| AdamW minus Muon, mean over seeds (95% t-interval) |" in text
    low, high = stats.ttest_rel(adamw, muon).confidence_interval(0.95)
    line = next(x for x in text.splitlines() if x.startswith("| test scene_boundary"))
    assert line.endswith(f"| {-delta:+.3f} ({low:+.3f} to {high:+.3f}) |"), line


@pytest.mark.slow(45)
def test_resume_is_exact_and_every_step_is_in_exactly_one_metrics_record(tiny_store, tmp_path):
    """A run logged every step, and the same run logged every 10 and saved every 25,
    stopped at step 5 and resumed. The second run's records (the stop's 5, then 10, 20,
    the save's 25, 30) are each the mean of exactly their steps' losses in the first and
    carry both groups' learning rates (AdamW's and Muon's); the final parameters are the
    uninterrupted run's to the bit."""
    single = jax.devices()[:1]
    common = ["train.steps=30", "checkpoint.every_steps=25"]
    common += ["optim.learning_rate=0.003", "optim.muon_learning_rate=0.01"]
    straight = train.train(
        _cfg(*common, "train.log_every=1"), tiny_store, tmp_path / "fine", devices=single
    )
    coarse = _cfg(*common, "train.log_every=10")
    first = train.train(coarse, tiny_store, tmp_path / "split", devices=single, stop_at=5)
    assert first["stopped"] == "stop_at" and not first["preempted"]  # planned, not preempted
    ckpt = Checkpointer(tmp_path / "split")
    assert ckpt.latest_step() == 5
    assert ckpt.restore_newest(first["setup"].abstract_state).data == {"next_batch": 5}
    ckpt.close()
    resumed = train.train(coarse, tiny_store, tmp_path / "split", devices=single)
    jax.tree.map(np.testing.assert_array_equal, _params(resumed), _params(straight))
    records = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").open()]
    losses = _losses(tmp_path / "fine")
    assert len(losses) == 30 and [r["step"] for r in records] == [5, 10, 20, 25, 30]
    covered = np.zeros(30, int)
    previous = 0
    for r in records:
        assert r["steps"] == r["step"] - previous
        covered[previous : r["step"]] += 1
        np.testing.assert_allclose(r["loss"], np.mean(losses[previous : r["step"]]), rtol=1e-6)
        previous = r["step"]
        # warmup 10 steps, then cosine to 0.1 x peak at step 30
        shape = min(r["step"] / 10, 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (r["step"] - 10) / 20)))
        np.testing.assert_allclose(r["learning_rate"], 0.003 * shape, rtol=1e-5)
        np.testing.assert_allclose(r["muon_learning_rate"], 0.01 * shape, rtol=1e-5)
    assert (covered == 1).all()


def test_tensorboard_events_match_the_metrics_without_importing_torch(tmp_path):
    """The writer imports tensorboardX with torch held off (torch is installed here) and
    torch imports normally afterwards; the event file, read record by record with its own
    protobuf, holds every logged scalar at its step."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("torch") is None:  # make test installs it (the extract extra)
        pytest.skip("torch is not installed: nothing to hold off")
    script = f"""
import sys
from pathlib import Path
from mediafm_jax.train import MetricsWriter
writer = MetricsWriter(Path({str(tmp_path)!r}), enabled=True)
for step in (1, 2):
    writer.write({{"step": step, "loss": 0.5 / step, "masked_cosine": 0.1 * step,
        "grad_norm": 1.0, "learning_rate": 1e-3, "shots_per_s": 10.0, "step_time_s": 0.1}}, 2)
writer.close()
assert "torch" not in sys.modules
import torch
print("torch", torch.__version__)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "torch " in run.stdout
    from tensorboardX.proto.event_pb2 import Event

    (events_file,) = (tmp_path / "tb").iterdir()
    data, scalars = events_file.read_bytes(), {}
    while data:  # TFRecord: 8-byte length, 4-byte CRC, record, 4-byte CRC
        length = int.from_bytes(data[:8], "little")
        event = Event.FromString(data[12 : 12 + length])
        data = data[16 + length :]
        for value in event.summary.value:
            scalars[value.tag, event.step] = value.simple_value
    assert scalars[("train/loss", 2)] == 0.25
    assert scalars[("train/masked_cosine", 2)] == np.float32(0.2)
    assert {step for _, step in scalars} == {1, 2} and len(scalars) == 2 * 6
