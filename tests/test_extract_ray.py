"""`mediafm extract --ray` on a real two-node Ray cluster started here (head + worker, both
on 127.0.0.1 with token auth, in their own temp folder and ports), stopped through the
handle that started it; never a machine-wide `ray stop`.

The driver is the CLI in a subprocess, as a user runs it. References: the local engine on
the same videos (same cuts, vectors within 1e-5).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av", reason="needs the [extract] extra")
ray = pytest.importorskip("ray", reason="needs the [ray] extra")

from mediafm_jax.extract import Settings, extract, media  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


# The cluster lives in its own process (so Ray's auth mode, read once per process, is the
# cluster's): it starts a head and a worker node, prints the address, and stops both
# through its handle when its stdin closes.
CLUSTER = """
import sys
from ray import _common, _private, cluster_utils

# the testing Cluster records its address in the machine-wide /tmp/ray: not ours to touch
_private.utils.write_ray_address = _common.utils.reset_ray_address = lambda *a, **k: None
temp, port = sys.argv[1], int(sys.argv[2])
common = dict(node_ip_address="127.0.0.1", num_cpus=2, include_dashboard=False,
              object_store_memory=100 * 1024 * 1024, temp_dir=temp)
cluster = cluster_utils.Cluster(initialize_head=True, head_node_args=dict(common, gcs_server_port=port))
try:
    cluster.add_node(**common)
    cluster.wait_for_nodes()
    print(cluster.address, flush=True)
    sys.stdin.read()
finally:
    cluster.shutdown()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """The address of a head + worker cluster, 2 CPU slots each (4 for a pool of 2, so a
    killed actor's replacement finds room), token auth; the driver inherits the token."""
    patch = pytest.MonkeyPatch()
    for key, value in {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
        "RAY_USAGE_STATS_ENABLED": "0",
        # A driver given 127.0.0.1 swaps in the machine's interface address, where nodes
        # started at 127.0.0.1 do not listen; Ray's single-machine switch keeps loopback.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }.items():
        patch.setenv(key, value)
    temp = tempfile.mkdtemp(prefix="mfray", dir="/tmp")  # short: socket paths have a limit
    handle = subprocess.Popen(
        [sys.executable, "-c", CLUSTER, temp, str(_free_port())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        address = handle.stdout.readline().strip()
        assert address, "the test cluster did not start"
        yield address
    finally:
        handle.stdin.close()
        try:
            handle.wait(timeout=120)
        except subprocess.TimeoutExpired:
            handle.kill()  # its reaper takes the node processes with it
            handle.wait()
        patch.undo()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    shutil.copy(media.bikes(), folder / "bikes.mp4")
    media.mux_clip(folder / "speech.mp4", speech_at_s=4.0, speech_span_s=(0.0, 3.2))
    (folder / "broken.mp4").write_bytes(b"this is not a video\n" * 10)
    return folder


def _cli(*args, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mediafm_jax.cli", "extract", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        **popen,
    )


def _load(out: Path, title: str) -> dict[str, np.ndarray]:
    with np.load(out / "shots" / f"{title}.npz") as data:
        return {k: data[k] for k in data.files}


def _whole(out: Path, title: str) -> int:
    """A committed title: npz, transcript and one thumbnail per shot; returns its shots."""
    shots = _load(out, title)
    n = len(shots["start_s"])
    assert all(len(shots[k]) == n for k in ("video", "audio", "text", "end_s"))
    assert len(list((out / "thumbs" / title).glob("*.jpg"))) == n
    assert len(json.loads((out / "text" / f"{title}.json").read_text())["shots"]) == n
    return n


@pytest.mark.slow(100)
def test_ray_gives_the_local_titles_and_names_a_broken_video(cluster, videos, tmp_path):
    out = tmp_path / "ray"
    run = _cli(videos, out, "--ray", cluster, "--workers", "2", "--no-speech")
    stdout, stderr = run.communicate(timeout=900)
    assert "failed: broken: " in stdout, stderr[-3000:]
    assert run.returncode == 2 and "extracted 2," in stdout
    local_no_speech = tmp_path / "local_no_speech"
    extract([videos], local_no_speech, Settings(speech=False, workers=2), log=lambda *_: None)
    for title in ("bikes", "speech"):
        ours, theirs = _load(out, title), _load(local_no_speech, title)
        np.testing.assert_array_equal(ours["start_s"], theirs["start_s"])
        for key in ("video", "audio", "text"):
            np.testing.assert_allclose(ours[key], theirs[key], atol=1e-5)
        _whole(out, title)
    manifest = json.loads((out / "extract.json").read_text())
    assert manifest["videos"]["broken"]["status"] == "failed"
    assert not (out / ".tmp").exists() and not (out / "shots" / "broken.npz").exists()
    titles = [json.loads(line)["title_id"] for line in (out / "titles.jsonl").open()]
    assert titles == ["bikes", "speech"]

    # a rerun resumes: the finished titles are skipped, the broken one tried again
    rerun = _cli(videos, out, "--ray", cluster, "--workers", "2", "--no-speech")
    stdout, _ = rerun.communicate(timeout=900)
    assert rerun.returncode == 2 and "extracted 0, skipped 2 already done, failed 1" in stdout
    # and another setting is refused before any work, as locally
    other = _cli(videos, out, "--ray", cluster, "--frames-per-shot", "2")
    _, stderr = other.communicate(timeout=300)
    assert other.returncode == 2 and "frames_per_shot: 3 -> 2" in stderr


@pytest.mark.slow(100)
def test_sigkill_to_an_actor_mid_video_leaves_every_title_whole(cluster, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    media.mux_clip(folder / "long0.mp4", speech_at_s=2.0, loops=3)
    shutil.copy(folder / "long0.mp4", folder / "long1.mp4")
    out = tmp_path / "out"
    run = _cli(folder, out, "--ray", cluster, "--workers", "2", "--no-speech")
    killed = None
    deadline = time.monotonic() + 600
    while killed is None and time.monotonic() < deadline and run.poll() is None:
        for tmp in (out / ".tmp").glob("*-*") if (out / ".tmp").is_dir() else []:
            pid = int(tmp.name.rsplit("-", 1)[1])
            os.kill(pid, signal.SIGKILL)  # an actor process in the middle of a video
            killed = pid
            break
        time.sleep(0.05)
    stdout, stderr = run.communicate(timeout=900)
    assert killed is not None, "no video was seen in progress"
    assert run.returncode == 0, stderr[-3000:]
    assert "extracted 2," in stdout
    # the two are copies, one of them redone after the kill: the same title twice
    assert _whole(out, "long0") == _whole(out, "long1") >= 3 * len(media.BIKES_CUTS_S)
    np.testing.assert_allclose(
        _load(out, "long0")["video"], _load(out, "long1")["video"], atol=1e-5
    )
    assert not (out / ".tmp").exists()
    assert not list(out.rglob("*.tmp*"))


def test_a_bad_address_is_one_line_naming_what_was_typed(videos, tmp_path, capsys):
    """No cluster needed: nothing listening, a malformed address, Ray Client; each is one
    line that names the address as typed (Ray swaps 127.0.0.1 for this machine's own
    address), before anything is written."""
    from mediafm_jax import cli

    port = _free_port()
    cases = {
        f"127.0.0.1:{port}": f"--ray 127.0.0.1:{port}: no Ray head answers (ConnectionRefused",
        f"localhost:{port}": f"--ray localhost:{port}: no Ray head answers (ConnectionRefused",
        ":5": "--ray :5: expected HOST:PORT of a Ray head",
        "head:63790x": "--ray head:63790x: expected HOST:PORT",
        "head": "--ray head: expected HOST:PORT",
        "ray://127.0.0.1:10001": "--ray ray://127.0.0.1:10001: Ray Client (ray://) is not",
    }
    for address, expected in cases.items():
        out = tmp_path / "out"
        assert cli.main(["extract", str(videos), str(out), "--ray", address]) == 2, address
        captured = capsys.readouterr()
        assert len(captured.err.strip().splitlines()) == 1, captured.err
        assert captured.err.startswith(f"mediafm extract: error: {expected}"), captured.err
        assert not out.exists()
