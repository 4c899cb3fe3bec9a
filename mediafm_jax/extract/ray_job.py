"""``mediafm extract VIDEOS OUT_SRC --ray [ADDRESS]``: the local engine's per-video work as
a Ray Data job, for catalogs that need many machines.

The driver (this process) does everything the local engine does around the work: finds
the videos, takes the lock on OUT_SRC, checks the settings, skips finished titles, and
records each outcome in ``extract.json`` as its row comes back. The work runs in an actor
pool of ``--workers`` actors (one GPU each when the cluster has GPUs); each actor loads
the encoders once and extracts one video per task through ``runner._run_one``, the very
function local workers call, so a title is built in a temp folder and committed into
OUT_SRC exactly as it is locally, and a failing video comes back as a row with its error.
An actor killed mid-video is restarted and its video redone (Ray Data retries actor
tasks); the killed actor's temp folder is removed when the job ends.

OUT_SRC must be one filesystem that the driver and every worker see at the same path
(NFS, Lustre, a GCS/S3 FUSE mount with atomic rename, as ``docs/catalogs.md`` says); so
must the videos.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mediafm_jax.errors import ExtractError


class TitleExtractor:
    """A Ray actor: the encoders loaded once; one video per call, its record as a JSON row."""

    def __init__(self, settings: Any, threads: int) -> None:
        from mediafm_jax.extract import runner

        self.runner = runner
        runner._init_worker(settings, threads, None)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = []
        for title_id, path, size, mtime_ns, out in zip(
            batch["title_id"],
            batch["path"],
            batch["size"],
            batch["mtime_ns"],
            batch["out"],
            strict=True,
        ):
            video = self.runner.Video(str(title_id), Path(path), int(size), int(mtime_ns))
            _, record = self.runner._run_one(video, Path(out))
            records.append(json.dumps(record))
        return {"title_id": batch["title_id"], "record": np.array(records, dtype=object)}


def _bound(settings: Any, threads: int) -> type[TitleExtractor]:
    """TitleExtractor with its arguments in the class: constructor arguments would live in
    the object store, where a restarted actor may no longer find them."""

    class BoundTitleExtractor(TitleExtractor):
        def __init__(self) -> None:
            super().__init__(settings, threads)

    return BoundTitleExtractor


def connect(address: str) -> bool:
    """Connects to ``address`` ("": $RAY_ADDRESS or a new local cluster); True when this
    process started Ray (and so must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    try:
        ray.init(address=address or None, logging_level="WARNING", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExtractError(f"--ray {address or ''}: cannot connect to Ray ({first})") from None
    return True


def check_address(address: str) -> None:
    """Ray installed, and a head at ``address`` ("": $RAY_ADDRESS or a new one here): Ray
    waits forever for a head that is not there, so one line instead. Ray replaces a
    loopback host by this machine's interface address, so that is the one tried."""
    import socket

    try:
        from ray._private import services
    except ImportError:
        raise ExtractError("--ray needs Ray: pip install 'mediafm-jax[ray]'") from None
    flag = "--ray"
    if not address:
        address = os.environ.get("RAY_ADDRESS", "")
        if not address:
            return
        flag = "--ray (RAY_ADDRESS)"
    if address.startswith("ray://"):
        raise ExtractError(
            f"{flag} {address}: Ray Client (ray://) is not supported; give the head's "
            "HOST:PORT (its GCS port, 6379 by default) and run extract on a cluster node"
        )
    host, colon, port = address.rpartition(":")
    if address not in ("auto", "local") and not (
        colon and host.strip("[]") and port.isdigit() and 0 < int(port) < 65536
    ):  # before Ray, which logs a traceback for some of these and hangs on others
        raise ExtractError(
            f"{flag} {address}: expected HOST:PORT of a Ray head (e.g. 127.0.0.1:6379), "
            "auto or local"
        )
    try:
        resolved = services.canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError) as err:
        raise ExtractError(f"{flag} {address}: {err}") from None
    if resolved is None:  # "local": a new cluster on this machine
        return
    host, _, port = resolved.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as err:
        # Ray dials a loopback head at this machine's own address; the user typed theirs
        dialed = f" at {resolved}, Ray's address for it" if resolved != address else ""
        raise ExtractError(
            f"{flag} {address}: no Ray head answers ({err.__class__.__name__}{dialed}); is "
            "the cluster up (ray start --head / ray up)?"
        ) from None


def run(
    out: Path,
    settings: Any,
    todo: list[Any],
    threads: int,
    finish: Callable[[tuple[str, dict[str, Any] | None]], None],
) -> None:
    """Extracts ``todo`` on the cluster at ``settings.ray`` with a pool of
    ``settings.workers`` actors; ``finish`` gets each (title, record) in the driver as it
    completes. Ray started here is stopped here."""
    workers = settings.workers
    started_here = connect(settings.ray)
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its lines would interleave ours
    try:
        context = DataContext.get_current()
        context.enable_progress_bars = False  # ours: one bar of videos, a line per title
        context.print_on_execution_start = False
        gpus = ray.cluster_resources().get("GPU", 0)
        rows = [
            {
                "title_id": v.title_id,
                "path": str(v.path),
                "size": v.size,
                "mtime_ns": v.mtime_ns,
                "out": str(out),
            }
            for v in todo
        ]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _bound(settings, threads),
            batch_size=1,
            compute=ActorPoolStrategy(size=min(workers, len(rows))),
            num_cpus=1,
            num_gpus=1 if gpus else 0,
        )
        for row in dataset.iter_rows():
            finish((str(row["title_id"]), json.loads(row["record"])))
    finally:
        if started_here:
            ray.shutdown()
    # every task is done: a temp folder left now is a killed actor's, whose video was redone
    shutil.rmtree(out / ".tmp", ignore_errors=True)
