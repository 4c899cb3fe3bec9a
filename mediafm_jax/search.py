"""Nearest shots across an embedded catalog, by cosine (``mediafm search``, notebooks).

A query is one shot, or a clip: the mean of its shots' unit vectors, unit-normed again;
either way the catalog entries searched are *shots* (one vector per row of the shot store),
so a clip query asks "which shots look like this clip", and the answer lists where they
are (title, shot index, start/end time).

Two kinds of vector: ``context`` — the in-context shot embeddings of a trained run (an
embedding store from ``mediafm embed``, or computed by an ``Embedder``); ``concat`` — the
fused input vectors the model sees (``fusion.fuse``, with the run's
``model.per_modality_norm`` as the embedding store records it), for comparison.

Two engines: exact search (a normalized float32 matmul over row chunks of 32k, so the
temporary scores stay bounded whatever the catalog size) and, for large catalogs, an
inverted-file index from ``faiss`` (faiss-cpu, the optional ``[search]`` extra). ``backend="auto"``
picks the index from ``INDEX_MIN_ROWS`` rows up, chosen by measuring
(experiments/benchmarks/search.py, numbers in docs/BENCHMARKS.md); without faiss installed it says
so in one line and searches exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from mediafm_jax import outputs
from mediafm_jax.data import store as store_lib
from mediafm_jax.data.embeddings import EmbeddingStore, check_finite, digest
from mediafm_jax.data.store import ShotStore
from mediafm_jax.errors import SearchError
from mediafm_jax.fusion import fuse, unit

METHODS = ("context", "concat")
BACKENDS = ("auto", "exact", "faiss")
INDEX_MIN_ROWS = 200_000  # "auto" builds a faiss IVF index from here (docs/BENCHMARKS.md)
CHUNK_ROWS = 32_768
COSINE_SLACK = 1e-3  # float32 rounding of a unit dot product stays far inside this


class ShotEmbedder(Protocol):
    """What search needs of a loaded run (``embed.Embedder``) to compute context vectors."""

    shot_dim: int

    def embed_titles(
        self, store: ShotStore, titles: Sequence[int], progress: bool = False
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]: ...


@dataclasses.dataclass(frozen=True)
class Hit:
    """One neighbour: where it is and how close."""

    rank: int  # 1 = best
    title_id: str
    title: int  # index in the store
    shot: int  # index within the title
    row: int  # row of the shot store
    start_s: float | None  # None where the store does not know the time
    end_s: float | None
    score: float  # cosine similarity

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Query:
    """What was searched for: a shot (``end == start + 1``) or a clip ``[start, end)``."""

    title_id: str
    title: int
    start: int
    end: int
    start_s: float | None
    end_s: float | None

    @property
    def is_clip(self) -> bool:
        return self.end - self.start > 1

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- vectors ---------------------------------------------------------------------------------
def unit_rows(x_nd: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit norm; all-zero rows stay zero (they match nothing)."""
    return unit(np.asarray(x_nd, np.float32))


def concat_vectors(
    store: ShotStore, per_modality_norm: bool = False, chunk_rows: int = CHUNK_ROWS
) -> np.ndarray:
    """Fused input vectors of every shot [S, F], read and fused chunk by chunk."""
    modalities = [(m.start, m.stop) for m in store.modalities]
    out_sf = np.empty((store.num_shots, store.num_features), np.float32)
    starts = range(0, store.num_shots, chunk_rows)
    for start in tqdm(starts, desc="fuse", unit="chunk", disable=None if len(starts) > 4 else True):
        stop = min(store.num_shots, start + chunk_rows)
        out_sf[start:stop] = fuse(store.read_rows(start, stop), modalities, per_modality_norm)
    return out_sf


def context_vectors(
    store: ShotStore, emb: EmbeddingStore | None = None, embedder: ShotEmbedder | None = None
) -> np.ndarray:
    """Unit in-context shot embeddings [S, H]: read from ``emb``, else computed."""
    if emb is not None:
        vectors_sh = emb.shot_rows(store)  # aligned, undamaged and finite, or an error
        if vectors_sh.shape[0] != store.num_shots:
            raise SearchError(
                f"{emb.root}: {vectors_sh.shape[0]} shot embeddings, store {store.root} "
                f"has {store.num_shots} shots"
            )
        return unit_rows(vectors_sh)
    if embedder is None:
        raise SearchError("context search needs an embedding store or a loaded run")
    out_sh = np.zeros((store.num_shots, embedder.shot_dim), np.float32)
    for title, rows_lh, _ in embedder.embed_titles(store, range(store.num_titles), progress=True):
        start, stop = store.title_rows(title)
        out_sh[start:stop] = rows_lh
    check_finite(out_sh, store, "the run's embeddings")
    return unit_rows(out_sh)


def run_fusion(emb: EmbeddingStore | None, embedder: ShotEmbedder | None) -> bool:
    """The ``model.per_modality_norm`` of the run behind ``embedder`` or ``emb`` (False,
    the default fusion, without either)."""
    config = getattr(embedder, "config", None)
    if config is not None:
        return bool(config.model.per_modality_norm)
    return emb.per_modality_norm() if emb is not None else False


# -- engines -------------------------------------------------------------------------------
def _sorted_topk(
    scores_qn: np.ndarray, ids_qn: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` per row by score, ties broken by the smaller id (deterministic)."""
    k = min(k, scores_qn.shape[1])
    if k < scores_qn.shape[1]:
        part = np.argpartition(-scores_qn, k - 1, axis=1)[:, :k]
        scores_qn = np.take_along_axis(scores_qn, part, 1)
        ids_qn = np.take_along_axis(ids_qn, part, 1)
    order = np.lexsort((ids_qn, -scores_qn), axis=1)
    return np.take_along_axis(ids_qn, order, 1), np.take_along_axis(scores_qn, order, 1)


def exact_search(
    vectors_nd: np.ndarray,
    queries_qd: np.ndarray,
    k: int,
    exclude: Sequence[tuple[int, int] | None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows by inner product: (ids [q, k] int64, scores [q, k] float32).

    Vectors and queries are taken as given (unit rows make scores cosines). ``exclude[i]``:
    a row range ``[a, b)`` query ``i`` may not return. Scores are computed chunk by chunk
    with a running top-k, so memory is ``q x chunk_rows`` whatever the catalog size.
    """
    queries_qd = np.atleast_2d(np.asarray(queries_qd, np.float32))
    q = len(queries_qd)
    best_ids = np.zeros((q, 0), np.int64)
    best_scores = np.zeros((q, 0), np.float32)
    for start in range(0, len(vectors_nd), chunk_rows):
        chunk_cd = np.asarray(vectors_nd[start : start + chunk_rows], np.float32)
        scores_qc = queries_qd @ chunk_cd.T
        if exclude is not None:
            for i, span in enumerate(exclude):
                if span is not None:
                    a, b = max(span[0] - start, 0), min(span[1] - start, len(chunk_cd))
                    if a < b:
                        scores_qc[i, a:b] = -np.inf
        ids_qc = np.broadcast_to(
            np.arange(start, start + len(chunk_cd), dtype=np.int64), (q, len(chunk_cd))
        )
        best_ids, best_scores = _sorted_topk(
            np.concatenate([best_scores, scores_qc], 1), np.concatenate([best_ids, ids_qc], 1), k
        )
    keep = np.isfinite(best_scores).all(0)  # columns that exist for every query
    return best_ids[:, keep], best_scores[:, keep]


class ExactIndex:
    """Brute force: exact, no build time; what small catalogs and one-off queries want."""

    name = "exact"

    def __init__(self, vectors_nd: np.ndarray):
        self.vectors_nd = vectors_nd

    def search(
        self,
        queries_qd: np.ndarray,
        k: int,
        exclude: Sequence[tuple[int, int] | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        return exact_search(self.vectors_nd, queries_qd, k, exclude)


class FaissIndex:
    """An inverted-file index (faiss ``IndexIVFFlat``, inner product on unit float32
    vectors): ``4 sqrt(n)`` k-means lists, ``nprobe`` of them scanned per query.

    Exclusions are served by asking for ``k`` plus the excluded count and dropping them;
    a query left with fewer than ``k`` scans twice as many lists until it has ``k``.
    """

    name = "faiss-ivf"
    PARAMS = {"lists_per_sqrt_n": 4, "train_per_list": 64, "nprobe": 32, "seed": 0}

    def __init__(self, index, size: int):
        self.index = index
        self.size = size

    @classmethod
    def build(cls, vectors_nd: np.ndarray) -> FaissIndex:
        import faiss

        n, dim = vectors_nd.shape
        # k-means wants about 39+ points per list: small catalogs get fewer lists
        lists = max(1, min(int(cls.PARAMS["lists_per_sqrt_n"] * math.sqrt(n)), n // 40))
        rng = np.random.default_rng(cls.PARAMS["seed"])
        sample = np.sort(rng.permutation(n)[: cls.PARAMS["train_per_list"] * lists])
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = cls.PARAMS["seed"]
        index.train(np.ascontiguousarray(vectors_nd[sample], np.float32))
        for start in tqdm(range(0, n, CHUNK_ROWS), desc="index", unit="chunk", disable=None):
            index.add(np.ascontiguousarray(vectors_nd[start : start + CHUNK_ROWS], np.float32))
        return cls(index, n)

    @classmethod
    def cached(
        cls, vectors_nd: np.ndarray, path: Path, key: dict[str, Any], write: bool = True
    ) -> FaissIndex:
        """The index saved at ``path`` when its key file (``path.json``: what it was built
        from, the vectors' digest included) matches and the file hashes to the digest the
        key records; else built (saying why an old one was not used) and, with ``write``,
        saved there atomically, key file last."""
        import faiss

        key = {**key, "rows": len(vectors_nd), "dim": int(vectors_nd.shape[1]),
               "vectors_sha256": digest(vectors_nd), "params": cls.PARAMS,
               "faiss": faiss.__version__}  # fmt: skip
        meta = path.with_suffix(".json")
        reason = None
        if path.is_file():
            index, reason = cls._load(path, meta, key)
            if index is not None:
                return cls(index, len(vectors_nd))
        where = f"into {path}" if write else f"in memory (none written to {path})"
        if reason is not None:
            print(f"search: {path}: {reason}; rebuilding the index {where}", file=sys.stderr)
        else:
            print(
                f"search: building an IVF index of {len(vectors_nd)} shots {where}",
                file=sys.stderr,
            )
        built = cls.build(vectors_nd)
        if not write:
            return built
        path.parent.mkdir(parents=True, exist_ok=True)

        def save(temp: Path) -> None:
            faiss.write_index(built.index, str(temp))
            meta.unlink(missing_ok=True)  # no moment where an old key vouches for a new file

        outputs.atomic_file(path, save)
        meta.write_text(json.dumps({**key, "index_sha256": _file_digest(path)}))
        return built

    @staticmethod
    def _load(path: Path, meta: Path, key: dict[str, Any]):
        """(the saved index, None) when it may be used, else (None, why not)."""
        import faiss

        try:
            saved = json.loads(meta.read_text())
        except FileNotFoundError:
            return None, "no key file beside it"
        except (OSError, ValueError) as err:
            return None, f"its key file is unreadable ({err})"
        if not isinstance(saved, dict):
            return None, "its key file is not a JSON object"
        recorded = saved.pop("index_sha256", None)
        if saved.get("vectors_sha256") != key["vectors_sha256"]:
            return None, "built from other vectors than these"
        if saved != key:
            changed = sorted(k for k in key.keys() | saved.keys() if saved.get(k) != key.get(k))
            return None, f"built with other settings ({', '.join(changed)})"
        if recorded != _file_digest(path):
            return None, "damaged (its checksum differs from the one recorded)"
        try:
            return faiss.read_index(str(path)), None
        except RuntimeError as err:
            return None, f"unreadable ({str(err).strip().splitlines()[-1]})"

    def search(
        self,
        queries_qd: np.ndarray,
        k: int,
        exclude: Sequence[tuple[int, int] | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        queries_qd = np.ascontiguousarray(np.atleast_2d(queries_qd), np.float32)
        spans = list(exclude) if exclude is not None else [None] * len(queries_qd)
        extra = max((b - a for a, b in (s for s in spans if s is not None)), default=0)
        want = min(self.size, k + extra)
        nprobe = min(self.PARAMS["nprobe"], self.index.nlist)
        while True:
            self.index.nprobe = nprobe
            scores_qw, keys_qw = self.index.search(queries_qd, want)
            ids = np.zeros((len(queries_qd), k), np.int64)
            scores = np.full((len(queries_qd), k), -np.inf, np.float32)
            for i, span in enumerate(spans):
                ok = keys_qw[i] >= 0  # unfilled slots are -1
                if span is not None:
                    ok &= (keys_qw[i] < span[0]) | (keys_qw[i] >= span[1])
                ids_i, scores_i = _sorted_topk(scores_qw[i][ok][None], keys_qw[i][ok][None], k)
                ids[i, : ids_i.shape[1]], scores[i, : ids_i.shape[1]] = ids_i[0], scores_i[0]
            if np.isfinite(scores).all() or nprobe >= self.index.nlist:
                break
            nprobe = min(2 * nprobe, self.index.nlist)
        keep = np.isfinite(scores).all(0)
        return ids[:, keep], scores[:, keep]


def _file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def index_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


def build_index(
    vectors_nd: np.ndarray,
    backend: str = "auto",
    cache: Path | None = None,
    cache_key: dict[str, Any] | None = None,
    write_cache: bool = True,
) -> ExactIndex | FaissIndex:
    """The engine for ``vectors_nd``: exact below ``INDEX_MIN_ROWS`` (or when asked), else
    a faiss IVF index (kept at ``cache`` when given, so it is built once; with
    ``write_cache`` off a cached one is used but none written); when faiss is missing,
    exact search with a one-line note on stderr."""
    if backend not in BACKENDS:
        raise SearchError(f"backend {backend!r}: expected one of {BACKENDS}")
    if backend == "exact" or (backend == "auto" and len(vectors_nd) < INDEX_MIN_ROWS):
        return ExactIndex(vectors_nd)
    if not index_available():
        if backend == "faiss":
            raise SearchError(
                "backend 'faiss' is not installed (pip install 'mediafm-jax[search]')"
            )
        print(
            f"search: {len(vectors_nd)} vectors but faiss is not installed "
            "(pip install 'mediafm-jax[search]'): exact search",
            file=sys.stderr,
        )
        return ExactIndex(vectors_nd)
    if cache is not None:
        return FaissIndex.cached(vectors_nd, cache, cache_key or {}, write_cache)
    return FaissIndex.build(vectors_nd)


# -- the catalog -----------------------------------------------------------------------------
def _time(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def resolve_query(
    store: ShotStore,
    times_s2: np.ndarray,
    title: str | int | None,
    shot: int | None = None,
    clip: tuple[int, int] | None = None,
) -> Query:
    """Validates a query (title id or index; a shot or a clip ``(start, end)``); cheap,
    so the CLI calls it before loading any vectors."""
    if title is None:
        raise SearchError("no query title given")
    if isinstance(title, str):
        if title not in store.title_ids:
            raise SearchError(f"{store.root}: unknown title id {title!r}")
        index = store.title_ids.index(title)
    else:
        if not 0 <= int(title) < store.num_titles:
            raise SearchError(f"{store.root}: title index {title} out of range")
        index = int(title)
    length = store.title_length(index)
    title_id = store.title_ids[index]
    if (shot is None) == (clip is None):
        raise SearchError("give either a shot or a clip (start, end), not both or neither")
    if clip is None:
        start, end = int(shot), int(shot) + 1
        if not 0 <= start < length:
            raise SearchError(
                f"title {title_id!r}: shot {shot} out of range (it has {length} shots: 0-{length - 1})"
            )
    else:
        start, end = (int(c) for c in clip)
        if not 0 <= start < end <= length:
            raise SearchError(
                f"title {title_id!r}: clip {start}:{end} out of range "
                f"(need 0 <= START < END <= {length})"
            )
    first = int(store.offsets[index])
    return Query(
        title_id,
        index,
        start,
        end,
        _time(times_s2[first + start, 0]),
        _time(times_s2[first + end - 1, 1]),
    )


def capped_k(k: int, available: int, what: str = "shots") -> tuple[int, str]:
    """(neighbours to return, a note or ""): the one rule for ``k`` of ``mediafm search``
    and ``browse``. Below 1 is an error; above what the catalog can return it is cut to
    that and said (asking a million of 3,000 shots is a typo or "all of them", and an
    index must not allocate a million slots for it)."""
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise SearchError(f"k={k}: need at least 1 neighbour")
    if k <= available:
        return int(k), ""
    return available, f"k={k}: only {available} {what} can be returned; returning {available}"


class Searcher:
    """A catalog's vectors and engine, built once and queried many times (notebooks).

    ``method="context"`` takes ``emb`` (an ``EmbeddingStore`` or its path) or, without it,
    computes the embeddings with ``embedder``; ``method="concat"`` needs only the store.
    ``per_modality_norm`` (concat's fusion): None takes the run's, from ``embedder`` or as
    ``emb`` records it, else the default fusion.
    ``index_cache``: keep a built index in ``EMB/search_index/`` (local ``emb`` only),
    reused while the vectors it was built from are unchanged; building one takes minutes
    at 1M shots, a query against it under a millisecond (the CLI turns this on).
    ``index_cache="read"`` uses a cached index but never writes one (``mediafm browse``).
    """

    def __init__(
        self,
        store: ShotStore | str,
        emb: EmbeddingStore | str | None = None,
        method: str = "context",
        backend: str = "auto",
        embedder: ShotEmbedder | None = None,
        per_modality_norm: bool | None = None,
        index_cache: bool | str = False,
    ):
        if method not in METHODS:
            raise SearchError(f"method {method!r}: expected one of {METHODS}")
        self.store = ShotStore(store) if isinstance(store, str) else store
        if isinstance(emb, str | os.PathLike):
            emb = EmbeddingStore(str(emb))
        if emb is not None:
            emb.check_aligned(self.store)  # also for concat: the user named both
        self.method = method
        if per_modality_norm is None:
            per_modality_norm = run_fusion(emb, embedder) if method == "concat" else False
        if method == "context":
            self.vectors_nd = context_vectors(self.store, emb, embedder)
        else:
            self.vectors_nd = concat_vectors(self.store, per_modality_norm)
        cache, key = None, None
        if index_cache and emb is not None and store_lib.is_local(emb.root):
            cache = Path(emb.root) / "search_index" / f"{method}.faiss"
            made = {
                k: emb.manifest.get(k) for k in ("run", "step", "layers", "shot_store_checksum")
            }
            key = {"method": method, "store": self.store.manifest.get("checksums"),
                   "per_modality_norm": per_modality_norm,
                   "emb": made if method == "context" else None}  # fmt: skip
        self.index = build_index(
            self.vectors_nd, backend, cache, key, write_cache=index_cache != "read"
        )
        self.times_s2 = self.store.shot_times()

    # -- queries ---------------------------------------------------------------------------
    def resolve(
        self, title: str | int, shot: int | None = None, clip: tuple[int, int] | None = None
    ) -> Query:
        return resolve_query(self.store, self.times_s2, title, shot, clip)

    def query_vector(self, query: Query) -> np.ndarray:
        first = int(self.store.offsets[query.title])
        rows_ld = self.vectors_nd[first + query.start : first + query.end]
        vector_d = unit_rows(rows_ld.mean(0))
        if not np.any(vector_d):
            what = f"clip {query.start}:{query.end}" if query.is_clip else f"shot {query.start}"
            raise SearchError(
                f"title {query.title_id!r}: {what} has no content in any modality "
                f"(an all-zero {self.method} vector matches nothing)"
            )
        return vector_d

    def search(
        self,
        title: str | int,
        shot: int | None = None,
        k: int = 10,
        clip: tuple[int, int] | None = None,
        exclude_title: bool = False,
    ) -> list[Hit]:
        """The ``k`` nearest shots to a shot or clip; ``exclude_title`` skips its own title.
        Fewer when fewer can be returned (``neighbours`` also says so)."""
        return self.neighbours(title, shot, k, clip, exclude_title)[0]

    def neighbours(
        self,
        title: str | int,
        shot: int | None = None,
        k: int = 10,
        clip: tuple[int, int] | None = None,
        exclude_title: bool = False,
    ) -> tuple[list[Hit], str]:
        """(hits, note): ``search``, with the note ``capped_k`` gives when ``k`` was cut."""
        query = self.resolve(title, shot, clip)
        rows = self.store.title_rows(query.title)
        available = self.store.num_shots - (rows[1] - rows[0] if exclude_title else 0)
        k, note = capped_k(k, available, "other titles' shots" if exclude_title else "shots")
        if k == 0:
            return [], note
        exclude = [rows] if exclude_title else None
        ids, scores = self.index.search(self.query_vector(query)[None], k, exclude)
        self._check_scores(ids[0], scores[0])
        hits = [
            self._hit(rank + 1, int(row), float(s))
            for rank, (row, s) in enumerate(zip(ids[0], scores[0], strict=True))
        ]
        return hits, note

    def _check_scores(self, ids: np.ndarray, scores: np.ndarray) -> None:
        """A score no cosine of unit vectors can have (NaN, or beyond [-1, 1]) is an error
        naming the shot: a damaged index, never an answer."""
        bad = ~(np.abs(scores) <= 1.0 + COSINE_SLACK)
        if bad.any():
            at = int(np.argmax(bad))
            title, shot = self.store.locate(int(ids[at]))
            raise SearchError(
                f"{self.index.name} search scored title {self.store.title_ids[title]!r} shot "
                f"{shot} at {scores[at]:g}, which is not a cosine (a damaged index?); rerun "
                "with --backend exact"
            )

    def _hit(self, rank: int, row: int, score: float) -> Hit:
        title, shot = self.store.locate(row)
        return Hit(
            rank,
            self.store.title_ids[title],
            title,
            shot,
            row,
            _time(self.times_s2[row, 0]),
            _time(self.times_s2[row, 1]),
            score,
        )


def search(
    store: ShotStore | str,
    emb: EmbeddingStore | str | None,
    title: str | int,
    shot: int | None = None,
    k: int = 10,
    *,
    clip: tuple[int, int] | None = None,
    method: str = "context",
    exclude_title: bool = False,
    backend: str = "auto",
    embedder: ShotEmbedder | None = None,
) -> list[Hit]:
    """One query against a catalog (builds a ``Searcher``; keep one for many queries)."""
    searcher = Searcher(store, emb, method=method, backend=backend, embedder=embedder)
    return searcher.search(title, shot, k=k, clip=clip, exclude_title=exclude_title)


def format_hits(query: Query, hits: Sequence[Hit], method: str, engine: str, rows: int) -> str:
    """The table ``mediafm search`` prints."""

    def clock(t: float | None) -> str:
        if t is None:
            return "-"
        minutes, seconds = divmod(t, 60)
        hours, minutes = divmod(int(minutes), 60)
        return f"{hours}:{minutes:02d}:{seconds:05.2f}"

    what = f"clip {query.start}:{query.end}" if query.is_clip else f"shot {query.start}"
    lines = [
        f"query {query.title_id} {what} ({clock(query.start_s)}-{clock(query.end_s)}); "
        f"{method} vectors, {engine} search over {rows} shots",
        f"{'rank':>4}  {'title':<16} {'shot':>6}  {'start':>11}  {'end':>11}  {'score':>7}",
    ]
    lines += [
        f"{h.rank:>4}  {h.title_id:<16} {h.shot:>6}  {clock(h.start_s):>11}  "
        f"{clock(h.end_s):>11}  {h.score:>7.4f}"
        for h in hits
    ]
    return "\n".join(lines)
