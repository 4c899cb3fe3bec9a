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


RAY = LAUNCH / "ray" / "extract.sh"


def test_ray_up_cluster_validates_and_runs_extract_on_it():
    yaml = pytest.importorskip("yaml")
    pytest.importorskip("ray")
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((LAUNCH / "ray" / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # what `ray up` checks, defaults filled in
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["resources"]["GPU"] >= 1 and config["head_node_type"] == "head"
    out = subprocess.run(
        [RAY, "--dry-run", "--cluster-yaml", "--videos", "/mnt/v", "--out", "/mnt/o src"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    up, run = (shlex.split(line) for line in out.strip().splitlines())
    assert up[:3] == ["ray", "up", "-y"] and up[3].endswith("launch/ray/cluster.yaml")
    assert run[:2] == ["ray", "exec"]
    assert shlex.split(run[3]) == [
        "mediafm",
        "extract",
        "/mnt/v",
        "/mnt/o src",
        "--ray",
        "--workers",
        "4",
    ]


def test_kuberay_job_renders_with_gpu_workers(tmp_path):
    yaml = pytest.importorskip("yaml")
    out = subprocess.run(
        [
            RAY,
            "--dry-run",
            "--kuberay",
            "--videos",
            "/c/v",
            "--out",
            "/c/o",
            "--workers",
            "3",
            "--name",
            "films",
            "--pvc",
            "shared",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    ).stdout
    words = shlex.split(out.strip())
    assert words[:3] == ["kubectl", "apply", "-f"]
    job = yaml.safe_load(Path(words[3]).read_text())
    assert (job["apiVersion"], job["kind"], job["metadata"]["name"]) == (
        "ray.io/v1",
        "RayJob",
        "films",
    )
    assert shlex.split(job["spec"]["entrypoint"]) == [
        "mediafm",
        "extract",
        "/c/v",
        "/c/o",
        "--ray",
        "--workers",
        "3",
    ]
    cluster = job["spec"]["rayClusterSpec"]
    group = cluster["workerGroupSpecs"][0]
    assert group["replicas"] == 3 and group["maxReplicas"] == 3
    container = group["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    volumes = (
        group["template"]["spec"]["volumes"]
        + cluster["headGroupSpec"]["template"]["spec"]["volumes"]
    )
    assert {v["persistentVolumeClaim"]["claimName"] for v in volumes} == {"shared"}
    assert "NAME" not in words[3] and "IMAGE" not in Path(words[3]).read_text()


def test_ray_launcher_refuses_missing_arguments():
    for args in (
        ["--dry-run"],
        ["--dry-run", "--kuberay", "--videos", "v"],
        ["--dry-run", "--kuberay", "--videos", "v", "--out", "o", "--workers", "0"],
    ):
        assert subprocess.run([RAY, *args], capture_output=True).returncode == 2
