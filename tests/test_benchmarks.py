"""The benchmarks stay runnable and fair: the GPU script's CPU smoke mode, and PyTorch's
model in the CPU comparison computing the very loss ours does."""

import json
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mediafm_jax.config import ModelConfig, ObjectiveConfig
from mediafm_jax.model import DataDims, Encoder
from mediafm_jax.objective import msm_loss

BENCHMARKS = Path(__file__).parent.parent / "experiments" / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_check.py"


@pytest.mark.slow(80)
def test_gpu_check_smoke(tmp_path):
    # GPU sessions are rare and short: a script that broke since the last one wastes them.
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--no-torch", "--steps", "2", "--out", tmp_path],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["errors"] == {}
    # bf16 on the device vs fp32 on the CPU, same state and batches: within bf16 tolerance.
    assert len(report["loss_cpu_fp32"]) == 3 and report["max_rel_diff"] < 2e-2
    assert report["mediafm-jax b2"]["step_ms"] > 0 and report["bf16_peak_tflops"] > 0
    variants = ("AdamW only", "Muon, one NS per matrix", "Muon, stacked NS", "Muon, Polar Express")
    for row in variants:
        assert report[f"{row} b2"] == {"lowered": True}
    assert report["mediafm-jax embed"]["shots_per_s"] > 0 and report["optimizer_update_ms"] > 0
    encoders = report["extract_encoders"]
    assert encoders["video"]["frames_per_s"] > 0 and encoders["audio"]["x_real_time"] > 0


@pytest.mark.slow(35)
def test_torch_model_computes_our_loss():
    # The PyTorch side of vs_torch.py must be the same model: with our parameters copied
    # in, its loss on a batch equals ours ([MASK]-only corruption, no dropout).
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(BENCHMARKS))
    import torch_model
    from vs_torch import make_batch

    h, layers, heads, mlp, w, b, f, g = spec = (32, 2, 4, 64, 24, 3, 48, 16)
    config = ModelConfig(
        hidden_size=h, num_layers=layers, num_heads=heads, mlp_size=mlp, max_shots=w
    )
    dims = DataDims(f, g, ((0, 16), (16, 32), (32, 48)))
    encoder = Encoder(config, dims, nnx.Rngs(3))
    host = make_batch(spec, seed=1)
    graphdef, state = nnx.split(encoder)
    loss = jax.jit(  # one program, not op by op
        lambda state, batch: msm_loss(
            nnx.merge(graphdef, state), batch, ObjectiveConfig(), train=False
        )[0]
    )
    with jax.default_matmul_precision("highest"):
        ours = loss(state, {k: jnp.asarray(v) for k, v in host.items()})
    params = nnx.to_pure_dict(nnx.state(encoder, nnx.Param))
    model, _ = torch_model.build(spec, g)
    t = lambda x: torch.from_numpy(np.array(x, np.float32))
    with torch.no_grad():
        pairs = [
            (model.inp, params["input_proj"]),
            (model.title, params["title_proj"]),
            (model.out, params["output_proj"]),
        ]
        for blk, p in zip(model.blocks, params["blocks"].values(), strict=True):
            pairs += [(getattr(blk, n), p[n]) for n in ("q", "k", "v", "o")]
            pairs += [(blk.fc1, p["mlp_in"]), (blk.fc2, p["mlp_out"])]
            for ln, name in ((blk.ln1, "ln_attn"), (blk.ln2, "ln_mlp")):
                ln.weight.copy_(t(p[name]["scale"]))
                ln.bias.copy_(t(p[name]["bias"]))
        for linear, p in pairs:
            linear.weight.copy_(t(p["kernel"]).T)
            if linear.bias is not None:
                linear.bias.copy_(t(p["bias"]))
        for ln, name in ((model.ln_in, "embed_norm"), (model.ln_out, "final_norm")):
            ln.weight.copy_(t(params[name]["scale"]))
            ln.bias.copy_(t(params[name]["bias"]))
        model.cls.copy_(t(params["cls_token"]))
        model.mask.copy_(t(params["mask_token"]))
        model.pos.copy_(t(params["positions"]))
        batch = torch_model.tensors(host, "cpu")
        theirs = model(batch["shots"], batch["valid"], batch["targets"], batch["title_embedding"])
        fused = torch.nn.functional.normalize(batch["shots"].float(), dim=-1, eps=1e-6)
        masked = torch.zeros(b, w, dtype=torch.bool)
        masked[0, :5] = True
        hidden_theirs = model.encode(
            fused, batch["valid"], batch["title_embedding"].float(), masked
        )
    with jax.default_matmul_precision("highest"):
        hidden_ours = encoder(
            jnp.asarray(fused.numpy()),
            jnp.asarray(host["valid"]),
            jnp.asarray(host["title_embedding"]),
            mask_bw=jnp.asarray(masked.numpy()),
        )
    np.testing.assert_allclose(float(theirs), float(ours), rtol=1e-5)
    # Padded positions differ (their queries attend differently); compare the valid ones.
    valid = np.concatenate([np.ones((b, 2), bool), host["valid"]], 1)
    np.testing.assert_allclose(
        hidden_theirs.numpy()[valid], np.asarray(hidden_ours)[valid], atol=1e-4
    )


def test_probe_fit_benchmark_smoke():
    # The probe's inner loops against their defaults: the script runs and both rows compare.
    run = subprocess.run(
        [sys.executable, "probe_fit.py", "--sizes", "200x16", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=BENCHMARKS,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line for line in run.stdout.splitlines() if line.startswith(("logistic", "AP"))]
    assert len(rows) == 2 and all(row.endswith("x") for row in rows), run.stdout
    gap = float(re.search(r"\(diff ([^)]+)\)", rows[1]).group(1))
    assert gap < 1e-9, rows[1]  # our AP and scikit-learn's agree


@pytest.mark.slow(60)
def test_windows_benchmark_smoke():
    # Issue 14's window-length table: the script runs, and XLA's buffer sizes come back.
    run = subprocess.run(
        [sys.executable, "windows.py", "--windows", "16,32", "--shots", "64", "--steps", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=BENCHMARKS,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line.split("|") for line in run.stdout.splitlines() if line.startswith("| 16 |")]
    rows += [line.split("|") for line in run.stdout.splitlines() if line.startswith("| 32 |")]
    assert len(rows) == 2 and [r[2].strip() for r in rows] == ["4", "2"]  # same shots per step
    assert all(float(r[-2].replace(",", "")) > 0 for r in rows)  # step temp MB measured


def test_vs_torch_says_how_quiet_it_was(monkeypatch):
    # A table measured on a busy machine flatters us (PyTorch's OpenMP threads degrade more
    # under load): the benchmark must say so, and refuse with --require-quiet.
    sys.path.insert(0, str(BENCHMARKS))
    import vs_torch

    assert vs_torch.quietness([0.4, 1.9], cores=2).startswith("quiet: ")
    assert "1.9" in vs_torch.quietness([0.4, 1.9], cores=2)
    warning = vs_torch.quietness([0.4, 2.6, None], cores=2)
    assert warning.startswith("WARNING") and "2.6" in warning
    assert "not checked" in vs_torch.quietness([None], cores=2)
    monkeypatch.setattr(vs_torch.os, "getloadavg", lambda: (99.0, 1.0, 1.0))
    monkeypatch.setattr(sys, "argv", ["vs_torch.py", "--require-quiet", "--shapes", "small"])
    with pytest.raises(SystemExit) as exit_info:
        vs_torch.main()
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--env", "one=GLIBC_TUNABLES"], "is not LABEL:KEY=VALUE"),
        (["--impls", "jax,jax@other"], "@LABEL needs --src or --env"),
    ],
)
def test_vs_torch_refuses_an_ab_it_cannot_run(monkeypatch, capsys, argv, message):
    # An A/B label must name a checkout (--src) or a setting (--env), before any worker runs.
    sys.path.insert(0, str(BENCHMARKS))
    import vs_torch

    monkeypatch.setattr(sys, "argv", ["vs_torch.py", "--shapes", "small", *argv])
    with pytest.raises(SystemExit) as exit_info:
        vs_torch.main()
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
