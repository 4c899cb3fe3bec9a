"""Input pipeline throughput vs the machine's copy limit, measured in the same run.

    python experiments/benchmarks/loader.py [--store STORE] [--titles 380] [--batches 60]

Builds (or reuses) a store of >= 200k shots x 2304 features, then measures, each in a
fresh child process (so peak RSS is its own):

- ingest: MB/s and peak RSS (streaming, so bounded by a shard + a title);
- numpy baseline: plain copies of the same 512-row windows from an in-memory array into
  a batch buffer -- the most a host can do, the pipeline's ceiling;
- pipeline (in memory): the full Grain pipeline (windows, masks, padding, batch) with the
  shot table in host RAM (the `data.in_memory=auto` default when it fits);
- pipeline (TensorStore): the same reading every window from the store on disk.

Prints a table with shots/s, GB/s and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import time

import numpy as np

WINDOW = 512


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(queue, fn, *args):
    queue.put((fn(*args), _peak_rss_mb()))


def in_child(fn, *args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, fn, *args))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def build(src: str, store: str, titles: int) -> dict:
    from mediafm_jax.data import ingest, synthetic

    if not os.path.exists(os.path.join(src, "titles.jsonl")):
        synthetic.write_catalog(src, synthetic.SynthConfig(titles=titles, seed=1), progress=False)
    shutil.rmtree(store, ignore_errors=True)
    summary = ingest.ingest(src, store, progress=False)
    return {"shots": summary.shots, "mb": summary.bytes_written / 1e6, "seconds": summary.seconds}


def numpy_baseline(store: str, batch: int, batches: int) -> dict:
    from mediafm_jax.data.store import ShotStore

    shots = ShotStore(store, in_memory=True)
    table = shots.read_rows(0, shots.num_shots)
    rng = np.random.default_rng(0)
    starts = rng.integers(0, shots.num_shots - WINDOW, (batches, batch))
    out = np.empty((batch, WINDOW, table.shape[1]), np.float16)
    t0 = time.perf_counter()
    for row in starts:
        for i, s in enumerate(row):
            out[i] = table[s : s + WINDOW]
    elapsed = time.perf_counter() - t0
    return {"shots": batches * batch * WINDOW, "seconds": elapsed, "features": table.shape[1]}


def pipeline_run(store: str, batch: int, batches: int, in_memory: bool, threads: int) -> dict:
    from mediafm_jax.data import pipeline
    from mediafm_jax.data.store import ShotStore

    shots = ShotStore(store, in_memory=in_memory)
    if in_memory:
        shots.load_into_memory()
    ds = pipeline.make_dataset(shots, global_batch_size=batch, max_shots=WINDOW, seed=0, split=None)
    it = pipeline.BatchIterator(ds, prefetch=4, threads=threads)
    for _ in range(3):  # warm up threads and caches
        next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += int(next(it)["valid"].sum())
    elapsed = time.perf_counter() - t0
    return {"shots": n, "seconds": elapsed, "features": shots.num_features}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/mediafm_bench_loader")
    parser.add_argument("--titles", type=int, default=380)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    src, store = f"{args.workdir}/src", f"{args.workdir}/store"
    ingest_stats, ingest_rss = in_child(build, src, store, args.titles)
    rows = []
    base, base_rss = in_child(numpy_baseline, store, args.batch, args.batches)
    mem, mem_rss = in_child(pipeline_run, store, args.batch, args.batches, True, args.threads)
    disk, disk_rss = in_child(
        pipeline_run, store, args.batch, args.batches // 3, False, args.threads
    )
    bytes_per_shot = base["features"] * 2
    print(
        f"\nstore: {ingest_stats['shots']:,} shots x {base['features']} features (fp16), {ingest_stats['mb']:.0f} MB"
    )
    print(
        f"ingest: {ingest_stats['mb'] / ingest_stats['seconds']:.0f} MB/s, peak RSS {ingest_rss:.0f} MB\n"
    )
    print(f"{'reader':<28}{'shots/s':>12}{'GB/s':>8}{'vs numpy':>10}{'peak RSS MB':>13}")
    for name, r, rss in (
        ("numpy copy (baseline)", base, base_rss),
        ("pipeline, in memory", mem, mem_rss),
        ("pipeline, TensorStore", disk, disk_rss),
    ):
        rate = r["shots"] / r["seconds"]
        rows.append(rate)
        print(
            f"{name:<28}{rate:>12,.0f}{rate * bytes_per_shot / 1e9:>8.2f}{rate / rows[0]:>10.2f}{rss:>13.0f}"
        )


if __name__ == "__main__":
    main()
