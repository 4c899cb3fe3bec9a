"""What the browser shows, read-only: a shot store and what lies beside it.

``Catalog`` opens the store (and, when given, the embedding store, the extract source
folder and a probe report) once at start-up, so a missing or damaged input is one line
before the server starts. Per-title numbers (shots, duration, modality coverage) come
from the arrays the store already keeps in memory (offsets, presence, times): the shot
table itself is read only when a page needs vectors (a title's colour strip, a search).

Files are served only when the catalog names them: a shot's thumbnail at
``SRC/thumbs/<title_id>/<shot>.jpg`` (a regular file, no symlink anywhere below
``SRC/thumbs``) and a title's source video at the path ``extract.json`` recorded, while
it still has the recorded size and modification time.
"""

from __future__ import annotations

import json
import math
import os
import stat
import threading
from pathlib import Path
from typing import Any

import numpy as np

from mediafm_jax import fusion
from mediafm_jax import search as search_lib
from mediafm_jax.data import source
from mediafm_jax.data.embeddings import EmbeddingStore
from mediafm_jax.data.store import ShotStore
from mediafm_jax.errors import SearchError, UsageError

PAGE_SIZE = 50
MAX_K = 100
TEXT_MODALITY = "text"
DEFAULT_TEXT_ENCODER = "minilm_l6"


def _finite(value: float) -> float | None:
    return None if not math.isfinite(value) else round(float(value), 3)


def _regular_file(path: Path) -> bool:
    """True for an existing regular file that is not a symlink."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def named_file(root: Path, folder: str, name: str) -> Path | None:
    """``root/folder/name`` when it is a regular file reached without a symlink or ``..``
    (``folder`` is a title id, which the catalog does not restrict); else None."""
    path = root / folder / name
    if path.parent.parent != root or os.path.realpath(path) != str(path):
        return None
    return path if _regular_file(path) else None


class Catalog:
    """A store (+ embeddings, source folder, report) opened for browsing; never writes."""

    def __init__(
        self,
        store: str,
        emb: str | None = None,
        src: str | None = None,
        report: str | None = None,
    ) -> None:
        self.notes: list[str] = []  # what is missing, said once at start-up
        self.store = ShotStore(store)
        self.emb = None
        if emb is not None:
            self.emb = EmbeddingStore(emb)
            self.emb.check_aligned(self.store)
        else:
            self.notes.append("no --emb: neighbours use the fused input vectors (concat) only")
        self.src = self._source(src)
        self.extract = self._extract_manifest()
        self.report = self._report(report)
        self.times_s2 = self.store.shot_times()
        self._summaries = self._title_summaries()
        self._lock = threading.Lock()
        self._searchers: dict[str, search_lib.Searcher] = {}
        self._spoken: SpokenIndex | None = None

    # -- start-up --------------------------------------------------------------------------
    def _source(self, src: str | None) -> Path | None:
        if src is not None:
            if not os.path.isdir(src):
                what = "is not a folder" if os.path.exists(src) else "folder does not exist"
                raise UsageError(f"--src {src}: {what}")
            return Path(src).resolve()
        recorded = self.store.manifest.get("source")
        if recorded and os.path.isdir(recorded):
            return Path(recorded).resolve()
        where = f"source {recorded} is gone" if recorded else "the store names no source"
        self.notes.append(f"{where} (pass --src): no thumbnails, text or video")
        return None

    def _extract_manifest(self) -> dict[str, Any] | None:
        if self.src is None:
            return None
        from mediafm_jax.extract import runner

        if not (self.src / runner.MANIFEST).is_file():
            return None
        return runner.load_manifest(self.src)  # damaged: one-line ExtractError

    def _report(self, report: str | None) -> dict[str, Any] | None:
        if report is None:
            return None
        folder = Path(report)
        path = folder / "report.json"
        if not path.is_file():
            what = "folder does not exist" if not folder.exists() else "has no report.json"
            raise UsageError(f"--report {report}: {what} (a folder written by `mediafm probe`)")
        try:
            tasks = json.loads(path.read_text())["tasks"]
            if not isinstance(tasks, dict):
                raise TypeError("tasks is not an object")
        except (ValueError, KeyError, TypeError) as err:
            raise UsageError(f"{path}: not a probe report ({err})") from None
        return {"folder": folder.resolve(), "tasks": tasks}

    def _title_summaries(self) -> dict[str, np.ndarray]:
        """Per-title shot counts, durations and modality coverage, vectorized over titles."""
        offsets = self.store.offsets
        lengths = np.diff(offsets)
        starts = offsets[:-1]
        nonempty = lengths > 0
        coverage_tm = np.zeros((self.store.num_titles, self.store.num_modalities), np.float32)
        first_s = np.full(self.store.num_titles, np.nan, np.float32)
        last_s = np.full(self.store.num_titles, np.nan, np.float32)
        if nonempty.any():
            at = starts[nonempty]
            counts_tm = np.add.reduceat(self.store.present.astype(np.int64), at, axis=0)
            coverage_tm[nonempty] = counts_tm / lengths[nonempty, None]
            with np.errstate(invalid="ignore"):
                first_s[nonempty] = np.fmin.reduceat(self.times_s2[:, 0], at)
                last_s[nonempty] = np.fmax.reduceat(self.times_s2[:, 1], at)
        return {"lengths": lengths, "coverage": coverage_tm, "duration": last_s - first_s}

    # -- catalog ---------------------------------------------------------------------------
    def title_index(self, title: int) -> int:
        if not 0 <= title < self.store.num_titles:
            raise SearchError(f"title index {title} out of range")
        return title

    def summary(self, title: int) -> dict[str, Any]:
        s = self._summaries
        return {
            "index": title,
            "title_id": self.store.title_ids[title],
            "split": self.store.splits[title],
            "shots": int(s["lengths"][title]),
            "duration_s": _finite(s["duration"][title]),
            "coverage": {
                m.name: round(float(s["coverage"][title, i]), 3)
                for i, m in enumerate(self.store.modalities)
            },
        }

    def titles(self, query: str = "", page: int = 1, size: int = PAGE_SIZE) -> dict[str, Any]:
        """One page of titles whose id contains ``query`` (case-insensitive)."""
        needle = query.strip().lower()
        ids = self.store.title_ids
        matches = [i for i, t in enumerate(ids) if needle in t.lower()] if needle else None
        total = len(matches) if matches is not None else len(ids)
        pages = max(1, -(-total // size))
        page = min(max(1, page), pages)
        window = range((page - 1) * size, min(total, page * size))
        chosen = [matches[i] for i in window] if matches is not None else list(window)
        return {
            "query": query,
            "page": page,
            "pages": pages,
            "total": total,
            "titles": [self.summary(i) for i in chosen],
        }

    def info(self) -> dict[str, Any]:
        return {
            "store": self.store.root,
            "titles": self.store.num_titles,
            "shots": self.store.num_shots,
            "modalities": [m.name for m in self.store.modalities],
            "methods": list(search_lib.METHODS) if self.emb is not None else ["concat"],
            "has_report": self.report is not None,
            "has_source": self.src is not None,
            "say": self.spoken_status(),
            "notes": self.notes,
        }

    # -- one title -------------------------------------------------------------------------
    def texts(self, title: int) -> tuple[list[str] | None, str]:
        """(each shot's subtitle/transcript text from ``SRC/text/<title_id>.json``, "") or
        (None, why there is none)."""
        if self.src is None:
            return None, "no source folder"
        name = f"{self.store.title_ids[title]}.json"
        path = named_file(self.src, source.TEXT, name)
        if path is None:
            return None, f"no text/{name} in {self.src}"
        try:
            shots = json.loads(path.read_text(encoding="utf-8"))["shots"]
            if not isinstance(shots, list):
                raise TypeError("shots is not a list")
        except (OSError, ValueError, KeyError, TypeError) as err:
            return None, f"{path} is unreadable ({type(err).__name__}); text not shown"
        if len(shots) != self.store.title_length(title):  # another cut of the title
            return None, (
                f"{path} has {len(shots)} shots, the store {self.store.title_length(title)}; "
                "text not shown"
            )
        return [s if isinstance(s, str) else "" for s in shots], ""

    def title(self, title: int) -> dict[str, Any]:
        """The title's shots: times, text, thumbnail or strip colour; its video's state."""
        title = self.title_index(title)
        first, stop = self.store.title_rows(title)
        texts, text_note = self.texts(title)
        colours = self.colours(title)
        thumbs = self.thumb_shots(title)
        present_lm = self.store.present[first:stop].astype(bool)
        names = [m.name for m in self.store.modalities]
        shots = []
        for shot in range(stop - first):
            start_s, end_s = self.times_s2[first + shot]
            shots.append(
                {
                    "shot": shot,
                    "start_s": _finite(start_s),
                    "end_s": _finite(end_s),
                    "text": texts[shot] if texts else "",
                    "thumb": thumbs[shot],
                    "colour": colours[shot],
                    "present": [n for n, p in zip(names, present_lm[shot], strict=True) if p],
                }
            )
        video, why = self.video_state(title)
        return {
            **self.summary(title),
            "shots_detail": shots,
            "text_note": text_note,
            "video": video is not None,
            "video_note": why,
        }

    def colours(self, title: int) -> list[str]:
        """A colour per shot for the strip drawn where there are no thumbnails: the first
        three principal components of the title's fused input vectors as RGB, so shots
        that look alike to the model share a colour. Subspace iteration (a few products
        with the title's rows) instead of an SVD, whose cost grows with the columns."""
        first, stop = self.store.title_rows(title)
        if stop == first:
            return []
        modalities = [(m.start, m.stop) for m in self.store.modalities]
        x_nf = fusion.fuse(self.store.read_rows(first, stop), modalities)
        x_nf -= x_nf.mean(0)
        basis_fk = np.random.default_rng(0).standard_normal((x_nf.shape[1], 3), np.float32)
        for _ in range(8):
            basis_fk = np.linalg.qr(x_nf.T @ (x_nf @ basis_fk))[0]
        u_nk = x_nf @ basis_fk
        spread_k = np.abs(u_nk).max(0)
        rgb_n3 = 0.5 + 0.45 * np.divide(u_nk, spread_k, out=np.zeros_like(u_nk), where=spread_k > 0)
        return ["#" + "".join(f"{int(255 * v):02x}" for v in row) for row in rgb_n3]

    # -- files the catalog names -------------------------------------------------------------
    def thumb_file(self, title: int, shot: int) -> Path | None:
        """The shot's thumbnail: a regular file inside ``SRC/thumbs/<title_id>/``, reached
        without a symlink or ``..``; anything else is None (a 404)."""
        if self.src is None or not 0 <= title < self.store.num_titles:
            return None
        if not 0 <= shot < self.store.title_length(title):
            return None
        for name in (source.thumb_name(shot), f"{shot}.jpg"):  # as source.find_thumb looks
            path = named_file(self.src / source.THUMBS, self.store.title_ids[title], name)
            if path is not None:
                return path
        return None

    def thumb_shots(self, title: int) -> list[bool]:
        """Which of the title's shots have a thumbnail ``thumb_file`` would serve; one
        listing of the folder instead of a look-up per shot."""
        length = self.store.title_length(title)
        if self.src is None:
            return [False] * length
        root = self.src / source.THUMBS
        folder = root / self.store.title_ids[title]
        if folder.parent != root or os.path.realpath(folder) != str(folder):
            return [False] * length
        try:
            with os.scandir(folder) as entries:
                names = {e.name for e in entries if e.is_file(follow_symlinks=False)}
        except OSError:
            return [False] * length
        return [source.thumb_name(i) in names or f"{i}.jpg" in names for i in range(length)]

    def video_state(self, title: int) -> tuple[Path | None, str]:
        """(the title's source video, "") while it is where and as ``extract.json`` says;
        else (None, why not)."""
        if self.extract is None:
            return None, "no extract.json: the source videos are unknown"
        record = self.extract.get("videos", {}).get(self.store.title_ids[title])
        if not isinstance(record, dict) or not isinstance(record.get("path"), str):
            return None, "extract.json has no video for this title"
        path = Path(record["path"])
        try:
            info = os.stat(path)
        except OSError:
            return None, f"{path} is gone"
        if not stat.S_ISREG(info.st_mode):
            return None, f"{path} is not a file"
        if info.st_size != record.get("size") or info.st_mtime_ns != record.get("mtime_ns"):
            return None, f"{path} changed since it was extracted"
        return path, ""

    def report_plot(self) -> Path | None:
        if self.report is None:
            return None
        path = self.report["folder"] / "report.png"
        return path if _regular_file(path) else None

    # -- neighbours --------------------------------------------------------------------------
    def searcher(self, method: str) -> search_lib.Searcher:
        """One ``Searcher`` per method, built on first use (reads the vectors once). From
        ``search.INDEX_MIN_ROWS`` shots up it uses the faiss index ``mediafm search`` cached
        in ``EMB/search_index/``, or builds one in memory: the browser writes nothing."""
        if method not in search_lib.METHODS:
            raise SearchError(f"method {method!r}: expected one of {search_lib.METHODS}")
        if method == "context" and self.emb is None:
            raise SearchError("in-context neighbours need --emb (an embedding store)")
        with self._lock:
            if method not in self._searchers:
                self._searchers[method] = search_lib.Searcher(
                    self.store, self.emb, method=method, index_cache="read"
                )
            return self._searchers[method]

    def neighbours(
        self, title: int, shot: int, k: int = 10, method: str = "context", exclude_title=False
    ) -> dict[str, Any]:
        if k > MAX_K:  # a page holds MAX_K cards; k < 1 or beyond the catalog: search's rule
            raise SearchError(f"k={k}: at most {MAX_K}")
        searcher = self.searcher(method)
        query = searcher.resolve(self.title_index(title), shot)
        hits, note = searcher.neighbours(title, shot, k=k, exclude_title=exclude_title)
        return {
            "query": query.as_dict(),
            "method": method,
            "engine": searcher.index.name,
            "note": note,
            "hits": [self._hit(h.as_dict()) for h in hits],
        }

    def _hit(self, hit: dict[str, Any]) -> dict[str, Any]:
        texts, _ = self.texts(hit["title"])
        hit["text"] = texts[hit["shot"]] if texts else ""
        hit["thumb"] = self.thumb_file(hit["title"], hit["shot"]) is not None
        hit["score"] = round(hit["score"], 4)
        return hit

    # -- say it ------------------------------------------------------------------------------
    def spoken_status(self) -> str:
        """Why the Say-it box cannot work here, or "" when it can (shown on the page)."""
        try:
            self._text_encoder_spec()
        except SearchError as err:
            return str(err)
        return ""

    def _text_encoder_spec(self) -> tuple[str, dict[str, Any] | None]:
        """(encoder name, what extract.json recorded of it) for the store's text column."""
        names = [m.name for m in self.store.modalities]
        if TEXT_MODALITY not in names:
            raise SearchError("this catalog has no text modality")
        if self.extract is None:
            return DEFAULT_TEXT_ENCODER, None
        name = self.extract.get("settings", {}).get("text_encoder")
        recorded = [e for e in self.extract.get("encoders", []) if e.get("kind") == "text"]
        if not isinstance(name, str) or not recorded:
            raise SearchError("extract.json records no text encoder")
        return name, recorded[0]

    def say(self, phrase: str, k: int = 10) -> dict[str, Any]:
        if not phrase.strip():
            raise SearchError("type what is said")
        if k > MAX_K:
            raise SearchError(f"k={k}: at most {MAX_K}")
        search_lib.capped_k(k, k)  # k < 1 before the encoder loads
        with self._lock:
            if self._spoken is None:
                name, recorded = self._text_encoder_spec()
                self._spoken = SpokenIndex(self.store, name, recorded)
        spoken = self._spoken
        k, cap_note = search_lib.capped_k(k, len(spoken.rows_n), "shots with text")
        hits = spoken.search(phrase, k) if k else []
        out = []
        for rank, (row, score) in enumerate(hits, 1):
            title = int(np.searchsorted(self.store.offsets, row, side="right") - 1)
            shot = row - int(self.store.offsets[title])
            hit = {
                "rank": rank,
                "title_id": self.store.title_ids[title],
                "title": title,
                "shot": shot,
                "row": row,
                "start_s": _finite(self.times_s2[row, 0]),
                "end_s": _finite(self.times_s2[row, 1]),
                "score": score,
            }
            out.append(self._hit(hit))
        note = "; ".join(n for n in (spoken.note, cap_note) if n)
        return {"phrase": phrase, "encoder": spoken.name, "note": note, "hits": out}


class SpokenIndex:
    """Shots with text, searchable by a phrase: the phrase goes through the text encoder
    that made the store's text column, and is matched by cosine (``search.exact_search``)
    against the shots whose text is present."""

    def __init__(self, store: ShotStore, name: str, recorded: dict[str, Any] | None) -> None:
        from mediafm_jax.extract import encoders

        try:
            cls = encoders.resolve("text", name)
        except Exception as err:  # noqa: BLE001 - an unimportable encoder is a note, not a crash
            raise SearchError(f"text encoder {name!r} cannot be loaded here: {err}") from None
        column = next(m for m in store.modalities if m.name == TEXT_MODALITY)
        if cls.dim != column.dim:
            raise SearchError(
                f"text encoder {name!r} gives {cls.dim}-d vectors, the store's text column "
                f"is {column.dim}-d"
            )
        self.note = "" if recorded else f"no extract.json: assumed the default {name}"
        if recorded and recorded.get("sha256"):
            _, digest = cls.weights_digest()
            if digest != recorded["sha256"]:
                raise SearchError(
                    f"text encoder {name!r}: installed weights differ from the ones extract "
                    "recorded (sha256); phrases would not match the stored vectors"
                )
        self.name = name
        self.encoder = cls(threads=max(1, (os.cpu_count() or 1) // 2))
        m = [x.name for x in store.modalities].index(TEXT_MODALITY)
        self.rows_n = np.flatnonzero(store.present[:, m]).astype(np.int64)
        vectors = np.zeros((len(self.rows_n), column.dim), np.float32)
        for start in range(0, store.num_shots, search_lib.CHUNK_ROWS):
            stop = min(store.num_shots, start + search_lib.CHUNK_ROWS)
            a, b = np.searchsorted(self.rows_n, [start, stop])
            if a < b:
                block = store.read_rows(start, stop)[:, column.start : column.stop]
                vectors[a:b] = block[self.rows_n[a:b] - start]
        self.vectors_nd = search_lib.unit_rows(vectors)

    def search(self, phrase: str, k: int) -> list[tuple[int, float]]:
        """(store row, cosine) of the ``k`` shots whose text is nearest the phrase."""
        query_d = search_lib.unit_rows(self.encoder.embed([phrase])[0])
        ids, scores = search_lib.exact_search(self.vectors_nd, query_d[None], k)
        return [
            (int(self.rows_n[i]), round(float(s), 4))
            for i, s in zip(ids[0], scores[0], strict=True)
        ]
