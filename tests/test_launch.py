"""Every launch script's --help and --dry-run produce well-formed commands."""

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parent.parent / "launch"
CASES = {
    "local_multiprocess.sh": (["--dry-run", "3", "--", "mediafm", "train", "--config", "c.py"], 3),
    "tpu_vm.sh": (["--dry-run", "run", "--name", "n", "--zone", "z", "--bucket", "gs://b"], 1),
    "xpk.sh": (
        ["--dry-run", "--cluster", "c", "--workload", "w", "--bucket", "gs://b", "--slices", "2"],
        1,
    ),
    "slurm_gpu.sbatch": (["--dry-run", "--config", "c.py", "--store", "s", "--workdir", "w"], 1),
    "gpu_multinode.sh": (
        [
            "--dry-run",
            "--coordinator",
            "h:1",
            "--nodes",
            "2",
            "--node-rank",
            "1",
            "--",
            "--config",
            "c.py",
        ],
        1,
    ),
}


@pytest.mark.parametrize("script", sorted(CASES))
def test_dry_run_and_help(script):
    args, lines = CASES[script]
    out = subprocess.run(
        [LAUNCH / script, *args], capture_output=True, text=True, check=True
    ).stdout
    commands = out.strip().splitlines()
    assert len(commands) == lines
    for command in commands:
        words = shlex.split(command)
        assert "mediafm" in " ".join(words) or words[0] in ("gcloud", "xpk")
    if script == "local_multiprocess.sh":
        assert [shlex.split(c)[5] for c in commands] == [
            f"MEDIAFM_PROCESS_ID={i}" for i in range(3)
        ]
    if script == "gpu_multinode.sh":
        assert shlex.split(commands[0])[-4:] == ["--num-processes", "2", "--process-id", "1"]
    help_text = subprocess.run(
        [LAUNCH / script, "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert script.split(".")[0] in help_text or "launch/" in help_text


@pytest.mark.parametrize("script", sorted(CASES))
def test_missing_arguments_fail(script):
    result = subprocess.run([LAUNCH / script, "--dry-run"], capture_output=True, text=True)
    assert result.returncode != 0


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_clean():
    subprocess.run(
        ["shellcheck", *sorted(str(p) for p in LAUNCH.iterdir() if p.suffix in (".sh", ".sbatch"))],
        check=True,
    )
