"""Nearest-shot search: vector-index libraries against exact NumPy search, same run.

    python experiments/benchmarks/search.py [--sizes 100000,1000000] [--dims 192,768]
        [--queries 500] [--threads 2] [--libs faiss-hnsw,usearch,hnswlib,faiss-ivf]

Data are clustered like a catalog's shots (a title's shots sit near each other, titles of
a genre near each other): unit vectors around ``n / 500`` cluster centres that are
themselves grouped in 32 genres; queries are fresh draws from the same clusters, not
catalog rows. For each (size, dim): exact search (normalized float32 matmul in chunks,
``mediafm_jax.search.exact_search``) gives the truth; each engine reports its build
time, queries/s (all queries in one batch, ``--threads``), the ratio of its queries/s to
exact's, the median latency of single queries (``ms/1 q``: what one ``mediafm search``
pays after loading), and recall@10 against the truth. A library that is not installed
is skipped with a line. ``mediafm search`` uses the ``faiss-ivf`` settings (docs/BENCHMARKS.md,
"Search", says why).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import platform
import time
from collections.abc import Callable

import numpy as np

from mediafm_jax.search import exact_search

K = 10


def clustered(n: int, dim: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(catalog [n, dim], queries [q, dim]) unit float32 vectors in nested clusters."""
    rng = np.random.default_rng(seed)
    genres_gd = rng.standard_normal((32, dim), np.float32)
    clusters = max(1, n // 500)
    centres_cd = genres_gd[rng.integers(0, 32, clusters)] + rng.standard_normal(
        (clusters, dim), np.float32
    )

    def draw(count: int) -> np.ndarray:
        out_nd = np.empty((count, dim), np.float32)
        for i in range(0, count, 65536):  # bounded temporaries at 1M x 768
            m = min(65536, count - i)
            out_nd[i : i + m] = centres_cd[rng.integers(0, clusters, m)]
            out_nd[i : i + m] += 1.2 * rng.standard_normal((m, dim), np.float32)
        out_nd /= np.linalg.norm(out_nd, axis=1, keepdims=True)
        return out_nd

    return draw(n), draw(queries)


# -- candidates: build(vectors, threads) -> search(queries, k) -> ids [q, k] --------------
def faiss_hnsw(x_nd: np.ndarray, threads: int) -> Callable[[np.ndarray, int], np.ndarray]:
    import faiss

    faiss.omp_set_num_threads(threads)
    index = faiss.IndexHNSWFlat(x_nd.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 128
    index.add(x_nd)
    index.hnsw.efSearch = 128
    return lambda q, k: index.search(q, k)[1]


def faiss_ivf(x_nd: np.ndarray, threads: int) -> Callable[[np.ndarray, int], np.ndarray]:
    import faiss

    faiss.omp_set_num_threads(threads)
    nlist = int(4 * np.sqrt(len(x_nd)))
    quantizer = faiss.IndexFlatIP(x_nd.shape[1])
    index = faiss.IndexIVFFlat(quantizer, x_nd.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    sample = x_nd[np.random.default_rng(1).permutation(len(x_nd))[: 64 * nlist]]
    index.train(sample)
    index.add(x_nd)
    index.nprobe = 32
    return lambda q, k: index.search(q, k)[1]


def usearch_hnsw(x_nd: np.ndarray, threads: int) -> Callable[[np.ndarray, int], np.ndarray]:
    from usearch.index import Index

    index = Index(
        ndim=x_nd.shape[1],
        metric="ip",
        dtype="f32",
        connectivity=16,
        expansion_add=128,
        expansion_search=128,
    )
    index.add(np.arange(len(x_nd), dtype=np.uint64), x_nd, threads=threads)
    return lambda q, k: np.asarray(index.search(q, k, threads=threads).keys, np.int64)


def hnswlib_hnsw(x_nd: np.ndarray, threads: int) -> Callable[[np.ndarray, int], np.ndarray]:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=x_nd.shape[1])
    index.init_index(max_elements=len(x_nd), ef_construction=128, M=16)
    index.set_num_threads(threads)
    index.add_items(x_nd, np.arange(len(x_nd)))
    index.set_ef(128)
    return lambda q, k: index.knn_query(q, k=k)[0].astype(np.int64)


LIBS: dict[str, tuple[str, Callable]] = {
    "faiss-hnsw": ("faiss", faiss_hnsw),
    "faiss-ivf": ("faiss", faiss_ivf),
    "usearch": ("usearch", usearch_hnsw),
    "hnswlib": ("hnswlib", hnswlib_hnsw),
}


def exact_ids(x_nd: np.ndarray, q_qd: np.ndarray, k: int) -> np.ndarray:
    return exact_search(x_nd, q_qd, k)[0]


def one_at_a_time_ms(search: Callable, q_qd: np.ndarray, count: int = 20) -> float:
    """Median latency of single queries: what one `mediafm search` call pays."""
    times = []
    for q_d in q_qd[:count]:
        t0 = time.perf_counter()
        search(q_d[None], K)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def recall_at_k(found_qk: np.ndarray, truth_qk: np.ndarray) -> float:
    hits = [len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found_qk, truth_qk, strict=True)]
    return float(np.sum(hits) / truth_qk.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dims", default="192,768")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--libs", default="usearch,faiss-hnsw,hnswlib,faiss-ivf")
    args = parser.parse_args()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, threads={args.threads}")
    header = f"{'n':>9} {'dim':>4} {'method':<11} {'build s':>8} {'q/s':>9} {'x exact':>8} {'ms/1 q':>9} {'recall@10':>10}"
    print(header)
    for n in (int(s) for s in args.sizes.split(",")):
        for dim in (int(d) for d in args.dims.split(",")):
            x_nd, q_qd = clustered(n, dim, args.queries)
            exact_search(x_nd, q_qd[:2], K)  # warm-up: BLAS threads, page faults
            t0 = time.perf_counter()
            truth_qk, _ = exact_search(x_nd, q_qd, K)
            exact_qps = len(q_qd) / (time.perf_counter() - t0)
            exact_ms = one_at_a_time_ms(functools.partial(exact_ids, x_nd), q_qd)
            print(
                f"{n:>9} {dim:>4} {'exact':<11} {0.0:>8.1f} {exact_qps:>9.0f} {1.0:>8.2f} "
                f"{exact_ms:>9.2f} {1.0:>10.3f}",
                flush=True,
            )
            for name in args.libs.split(","):
                module, build = LIBS[name]
                if importlib.util.find_spec(module) is None:
                    print(f"{n:>9} {dim:>4} {name:<11} not installed")
                    continue
                t0 = time.perf_counter()
                search = build(x_nd, args.threads)
                built = time.perf_counter() - t0
                t0 = time.perf_counter()
                found_qk = search(q_qd, K)
                qps = len(q_qd) / (time.perf_counter() - t0)
                recall = recall_at_k(found_qk, truth_qk)
                ms = one_at_a_time_ms(search, q_qd)
                print(
                    f"{n:>9} {dim:>4} {name:<11} {built:>8.1f} {qps:>9.0f} "
                    f"{qps / exact_qps:>8.1f} {ms:>9.2f} {recall:>10.3f}",
                    flush=True,
                )
                del search
            del x_nd


if __name__ == "__main__":
    main()
