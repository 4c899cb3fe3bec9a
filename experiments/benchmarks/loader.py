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


def numpy_copies(table: np.ndarray, batch: int, batches: int, fresh: bool) -> float:
    """Shots/s of plain window copies: into one reused buffer, or a new one per batch."""
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(table) - WINDOW, (batches, batch))
    out = np.empty((batch, WINDOW, table.shape[1]), np.float16)
    t0 = time.perf_counter()
    for row in starts:
        if fresh:
            out = np.empty((batch, WINDOW, table.shape[1]), np.float16)
        for i, s in enumerate(row):
            out[i] = table[s : s + WINDOW]
    return batches * batch * WINDOW / (time.perf_counter() - t0)


def pipeline_rate(shots, batch: int, batches: int, threads: int, start: int) -> float:
    from mediafm_jax.data import pipeline

    ds = pipeline.make_dataset(shots, global_batch_size=batch, max_shots=WINDOW, seed=0, split=None)
    it = pipeline.BatchIterator(ds, prefetch=4, threads=threads)
    it.set_state({"next_batch": start})
    for _ in range(3):  # warm up threads
        next(it)
    t0 = time.perf_counter()
    n = sum(int(next(it)["valid"].sum()) for _ in range(batches))
    return n / (time.perf_counter() - t0)


def in_memory_rounds(store: str, batch: int, batches: int, threads: int, rounds: int) -> dict:
    """Baselines and the in-memory pipeline, interleaved in rounds on the same table."""
    from mediafm_jax.data.store import ShotStore

    shots = ShotStore(store, in_memory=True)
    shots.load_into_memory()
    table = shots.read_rows(0, shots.num_shots)
    rates: dict[str, list[float]] = {"reuse": [], "fresh": [], "pipeline": []}
    for r in range(rounds):
        rates["reuse"].append(numpy_copies(table, batch, batches, fresh=False))
        rates["fresh"].append(numpy_copies(table, batch, batches, fresh=True))
        rates["pipeline"].append(
            pipeline_rate(shots, batch, batches, threads, start=r * (batches + 3))
        )
    return {k: float(np.median(v)) for k, v in rates.items()} | {"features": table.shape[1]}


def tensorstore_rate(store: str, batch: int, batches: int, threads: int) -> float:
    from mediafm_jax.data.store import ShotStore

    return pipeline_rate(ShotStore(store, in_memory=False), batch, batches, threads, start=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/mediafm_bench_loader")
    parser.add_argument("--titles", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    src, store = f"{args.workdir}/src", f"{args.workdir}/store"
    ingest_stats, ingest_rss = in_child(build, src, store, args.titles)
    mem, mem_rss = in_child(
        in_memory_rounds, store, args.batch, args.batches, args.threads, args.rounds
    )
    disk, disk_rss = in_child(tensorstore_rate, store, args.batch, args.batches // 3, args.threads)
    bytes_per_shot = mem["features"] * 2
    print(
        f"\nstore: {ingest_stats['shots']:,} shots x {mem['features']} features (fp16), {ingest_stats['mb']:.0f} MB"
    )
    print(
        f"ingest: {ingest_stats['mb'] / ingest_stats['seconds']:.0f} MB/s, peak RSS {ingest_rss:.0f} MB"
    )
    print(
        f"medians of {args.rounds} interleaved rounds of {args.batches} batches x {args.batch} windows x {WINDOW} shots\n"
    )
    print(f"{'reader':<34}{'shots/s':>12}{'GB/s':>8}{'vs numpy':>10}{'peak RSS MB':>13}")
    table = (
        ("numpy copy, reused buffer (limit)", mem["reuse"], mem_rss),
        ("numpy copy, new buffer per batch", mem["fresh"], mem_rss),
        ("pipeline, in memory", mem["pipeline"], mem_rss),
        ("pipeline, TensorStore", disk, disk_rss),
    )
    for name, rate, rss in table:
        print(
            f"{name:<34}{rate:>12,.0f}{rate * bytes_per_shot / 1e9:>8.2f}{rate / mem['reuse']:>10.2f}{rss:>13.0f}"
        )


if __name__ == "__main__":
    main()
