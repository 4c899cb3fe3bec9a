"""The prepared GPU check keeps running: its smoke mode on the CPU, end to end."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "experiments" / "benchmarks" / "gpu_check.py"


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
    assert report["mediafm-jax (xla)"]["step_ms"] > 0 and report["bf16_peak_tflops"] > 0
