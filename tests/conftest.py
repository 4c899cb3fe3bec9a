"""Test set-up: 8 fake CPU devices (set before JAX is imported) and tiny catalogs."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _share_compiled_programs() -> None:
    """One persistent XLA compilation cache for the whole session: the xdist workers and
    every CLI subprocess (they inherit the environment) compile the tiny programs once
    instead of once each. It changes no result: a hit is the executable a compile would
    have made. The size limit turns on JAX's file lock, so no process reads a half-written
    entry. Made here, removed here; a cache the caller set is used and left alone."""
    import atexit
    import shutil
    import tempfile

    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    path = tempfile.mkdtemp(prefix="mediafm-test-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(4 << 30)
    atexit.register(shutil.rmtree, path, ignore_errors=True)


_share_compiled_programs()

import pytest  # noqa: E402

from mediafm_jax.data import ingest, synthetic  # noqa: E402

TINY = synthetic.SynthConfig(
    titles=12,
    seed=3,
    video_dim=16,
    audio_dim=12,
    text_dim=8,
    title_dim=6,
    min_shots=40,
    max_shots=700,
    noise=0.15,  # low noise: the tests check the code, not the research question
)


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory):
    return synthetic.write_catalog(tmp_path_factory.mktemp("src") / "src", TINY, progress=False)


@pytest.fixture(scope="session")
def tiny_store(tiny_source, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("store") / "store")
    ingest.ingest(tiny_source, path, shard_rows=256, progress=False)
    return path


@pytest.fixture(scope="session")
def tiny_run(tiny_store, tmp_path_factory):
    """A tiny model trained for a few steps (for embedding and probe tests)."""
    import jax

    from mediafm_jax import config as config_lib
    from mediafm_jax import presets, train

    workdir = tmp_path_factory.mktemp("run") / "run"
    config = config_lib.apply_overrides(
        presets.tiny(), ["train.steps=30", "checkpoint.async_save=false", "model.max_shots=48"]
    )
    train.train(config, tiny_store, workdir, devices=jax.devices()[:1])
    return workdir


@pytest.fixture(scope="module")
def store(tiny_store):
    """The tiny store, opened once per test module."""
    from mediafm_jax.data.store import ShotStore

    return ShotStore(tiny_store)


@pytest.fixture(scope="module")
def embedder(tiny_run):
    """The tiny run's encoder on one device."""
    import jax

    from mediafm_jax import embed

    return embed.Embedder(tiny_run, devices=jax.devices()[:1])


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow(seconds): its usual wall time on 2 busy cores; orders the files"
    )


def pytest_collection_modifyitems(config, items):
    """Files longest first, each file's tests in their order. A file's weight is its
    ``@pytest.mark.slow(seconds)`` marks plus 1 s per unmarked test. ``make test`` (``-n 2
    --dist loadscope --no-loadscope-reorder``) gives a worker a whole file at a time in this
    order, so module fixtures are built once and the long files start early, the short ones
    filling in at the end instead of one long file running alone. Every worker sorts the
    same collection the same way."""
    weight: dict = {}
    for item in items:
        marker = item.get_closest_marker("slow")
        weight[item.path] = weight.get(item.path, 0.0) + (marker.args[0] if marker else 1.0)
    items.sort(key=lambda item: -weight[item.path])  # stable: a file's tests stay together
