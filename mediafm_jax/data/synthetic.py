"""A synthetic catalog with narrative structure, written in the ingest-source layout.

Every shot is drawn from a latent story state, and each modality is a noisy view of it:

- a catalog has 11 genres, 100 tones and 20 ad categories, each a direction in a latent
  space; a title has 1-3 genres, a cast of story elements (characters, places; element 0
  is the lead) whose vectors lean on its genres and on an ad category each;
- a title is cut into scenes; a scene features 1-3 elements and carries 1-3 tones that
  the title's genres favour; a tension arc (a few bumps and a late climax) runs through;
- a shot = its scene's elements + tones + tension along an arc direction + noise; video,
  audio and text weight these parts differently and add their own noise; about 40% of
  shots have no text (zeros).

The five probe tasks then ask questions of different reach: ``tone`` is readable from the
clip's own shots; ``genre`` from any part of the title; ``ad_relevancy`` (the categories
of the elements in the scenes before an ad break, asked of the near-empty transition shots
at the break), ``popularity`` (tension at the clip, ranked within the title) and
``retrieval`` (lead on screen at a tension peak) need the surrounding shots.

``structure="scenes"`` (``mediafm synth --structure scenes``) writes another family, for
context that has to see *where* scenes change and *which* story threads come back:

- a title has 4-8 threads (storylines), each with its own place (seen mostly by video),
  music (audio) and talk (text); its scenes follow threads of uneven popularity, never
  the same one twice in a row, so threads return later in the title;
- at a scene change each of place, music and talk may carry over from the scene before
  (a continuing location, a music cue across the cut), so a change shows in some
  modalities and not others; at least one always changes;
- a single shot is mostly noise (a scene shows only in the mean of several shots), so
  a shot alone says little and a window of shots a lot, as ``novelty`` finds in film.

Its probe tasks: ``scene_boundary`` (a one-shot clip: is it the last shot of its scene;
the first shot of the next scene is among the negatives) and ``recurrence`` (a clip
inside a scene, ranked within the title by how many scenes its thread has).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator
from tqdm import tqdm

from mediafm_jax import outputs
from mediafm_jax.config import Count, NonNegative, Ratio, section
from mediafm_jax.data import source

NUM_GENRES = 11
NUM_TONES = 100
NUM_AD_CATEGORIES = 20
LATENT = 64


@section
class SynthConfig:
    """Checked where it is built, like the training config (``config.section``)."""

    titles: Count = 200
    seed: NonNegative = 0
    video_dim: Count = 768
    audio_dim: Count = 768
    text_dim: Count = 768
    title_dim: Count = 768
    min_shots: Count = 100
    max_shots: Count = 1600
    text_missing: Ratio = 0.4
    # per-dim std of each modality's view noise (x 1.2 / 1.5 / 1.0)
    noise: Annotated[float, Field(ge=0.0)] = 0.7
    structure: Literal["story", "scenes"] = "story"  # "scenes": scene changes, recurring threads

    @field_validator("max_shots")
    @classmethod
    def _at_least_min(cls, most: int, info: ValidationInfo) -> int:
        least = info.data.get("min_shots")
        if least is not None and most < least:
            raise ValueError(f"below min_shots={least}")
        return most


STRUCTURES = ("story", "scenes")


PROBE_TASKS = [
    {
        "name": "ad_relevancy",
        "kind": "multilabel",
        "metric": "micro_ap",
        "num_classes": NUM_AD_CATEGORIES,
    },
    {"name": "popularity", "kind": "ranking", "metric": "kendall_tau", "folds": 10},
    {"name": "tone", "kind": "multilabel", "metric": "micro_ap", "num_classes": NUM_TONES},
    {"name": "genre", "kind": "multilabel", "metric": "macro_ap", "num_classes": NUM_GENRES},
    {"name": "retrieval", "kind": "binary", "metric": "ap"},
]
SCENE_PROBE_TASKS = [
    {"name": "scene_boundary", "kind": "binary", "metric": "ap"},
    {"name": "recurrence", "kind": "ranking", "metric": "kendall_tau", "folds": 10},
]
THREAD_NORM = 2.5  # a thread part's length in latent space (shot noise: ~noise x 8)
SCENE_VARIATION = 1.0  # a scene's own departure from its thread's parts
CARRY_OVER = 0.35  # chance that a part (place, music, talk) continues across a cut
# How much each modality sees of a scene's (place, music, talk).
SCENE_VIEWS = {"video": (1.0, 0.2, 0.3), "audio": (0.2, 1.0, 0.3), "text": (0.2, 0.2, 1.0)}


def probe_tasks(config: SynthConfig) -> list[dict]:
    """The probe tasks a catalog of this config is labelled for."""
    return SCENE_PROBE_TASKS if config.structure == "scenes" else PROBE_TASKS


class _Catalog:
    """Catalog-wide latent directions and modality projections."""

    def __init__(self, config: SynthConfig, rng: np.random.Generator):
        unit = lambda *shape: rng.standard_normal(shape) / np.sqrt(shape[-1])
        self.genre = unit(NUM_GENRES, LATENT) * 2.0
        self.tone = unit(NUM_TONES, LATENT) * 1.5
        self.ad_category = unit(NUM_AD_CATEGORIES, LATENT) * 2.0
        self.arc = unit(LATENT) * 1.2
        # Each genre favours a dozen tones.
        self.genre_tones = np.stack(
            [rng.choice(NUM_TONES, 12, replace=False) for _ in range(NUM_GENRES)]
        )
        # Modality views: (elements, tones, arc) weights and noise, then a random projection.
        self.views = {
            "video": ((1.0, 0.6, 1.0), config.noise * 1.2, config.video_dim),
            "audio": ((0.4, 1.2, 1.0), config.noise * 1.5, config.audio_dim),
            "text": ((1.2, 0.8, 0.4), config.noise * 1.0, config.text_dim),
        }
        self.projection = {
            name: rng.standard_normal((LATENT, dim)) / np.sqrt(LATENT)
            for name, (_, _, dim) in self.views.items()
        }
        self.title_projection = rng.standard_normal((LATENT, config.title_dim)) / np.sqrt(LATENT)


def _tension_arc(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)
    centers = np.concatenate([rng.uniform(0.1, 0.7, rng.integers(2, 5)), [rng.uniform(0.75, 0.92)]])
    heights = np.concatenate([rng.uniform(0.3, 0.7, len(centers) - 1), [1.0]])
    widths = rng.uniform(0.03, 0.08, len(centers))
    arc = (
        heights[:, None] * np.exp(-0.5 * ((t[None] - centers[:, None]) / widths[:, None]) ** 2)
    ).sum(0)
    return arc / arc.max()


def _scenes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Scene boundaries [0, b1, ..., n]; scenes of 4-40 shots."""
    bounds = [0]
    while bounds[-1] < n:
        bounds.append(min(n, bounds[-1] + int(rng.integers(4, 41))))
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < 4:
        bounds.pop(-2)
    return np.asarray(bounds)


def _make_title(index: int, catalog: _Catalog, config: SynthConfig, rng: np.random.Generator):
    n = int(np.exp(rng.uniform(np.log(config.min_shots), np.log(config.max_shots))))
    genres = np.sort(rng.choice(NUM_GENRES, rng.integers(1, 4), replace=False))
    title_vec = catalog.genre[genres].mean(0)
    num_elements = int(rng.integers(6, 13))
    element_category = rng.integers(0, NUM_AD_CATEGORIES, num_elements)
    elements = (
        0.8 * catalog.ad_category[element_category]
        + 0.6 * title_vec
        + rng.standard_normal((num_elements, LATENT)) / np.sqrt(LATENT) * 1.2
    )
    bounds = _scenes(n, rng)
    num_scenes = len(bounds) - 1
    favoured = catalog.genre_tones[genres].ravel()
    lead_weights = np.r_[3.0, np.ones(num_elements - 1)]
    scene_elements, scene_tones = [], []
    for _ in range(num_scenes):
        k = int(rng.integers(1, 4))
        scene_elements.append(
            rng.choice(num_elements, k, replace=False, p=lead_weights / lead_weights.sum())
        )
        tones = rng.choice(favoured, int(rng.integers(1, 4)), replace=False)
        scene_tones.append(np.unique(tones))
    tension = _tension_arc(n, rng)
    scene_of_shot = np.repeat(np.arange(num_scenes), np.diff(bounds))
    parts = np.zeros((3, n, LATENT))
    for s in range(num_scenes):
        rows = slice(bounds[s], bounds[s + 1])
        parts[0, rows] = elements[scene_elements[s]].mean(0)
        parts[1, rows] = catalog.tone[scene_tones[s]].sum(0)
    parts[2] = tension[:, None] * catalog.arc[None]
    # Ad breaks: the last two shots of some scenes are near-empty transitions.
    candidates = np.arange(2, num_scenes)
    num_breaks = min(len(candidates), max(1, n // 250))
    breaks = (
        np.sort(rng.choice(candidates, num_breaks, replace=False))
        if len(candidates)
        else np.array([], int)
    )
    transition = np.zeros(n, bool)
    for s in breaks:
        transition[bounds[s] - 2 : bounds[s]] = True
    arrays = {}
    for name, (weights, noise, _) in catalog.views.items():
        latent = np.einsum("p,pnl->nl", np.asarray(weights), parts)
        latent[transition] *= 0.15
        latent += rng.standard_normal((n, LATENT)) * noise  # per latent dim
        arrays[name] = latent @ catalog.projection[name]
    missing_rate = np.clip(rng.beta(2, 3, num_scenes) * config.text_missing / 0.4, 0, 1)
    no_text = rng.random(n) < missing_rate[scene_of_shot]
    arrays["text"][no_text] = 0.0
    _add_times_and_title(arrays, catalog, title_vec, n, rng)
    story = {
        "n": n,
        "genres": genres,
        "bounds": bounds,
        "scene_elements": scene_elements,
        "scene_tones": scene_tones,
        "element_category": element_category,
        "tension": tension,
        "breaks": breaks,
        "scene_of_shot": scene_of_shot,
    }
    return arrays, story


def _thread_sequence(num_scenes: int, num_threads: int, rng: np.random.Generator) -> np.ndarray:
    """Each scene's thread: Zipf-like popularity, never the same thread twice in a row."""
    popularity = rng.permutation(1.0 / np.arange(1, num_threads + 1))
    threads = np.zeros(num_scenes, int)
    for s in range(num_scenes):
        p = popularity.copy()
        if s:
            p[threads[s - 1]] = 0.0
        threads[s] = rng.choice(num_threads, p=p / p.sum())
    return threads


def _make_scene_title(catalog: _Catalog, config: SynthConfig, rng: np.random.Generator):
    """A title of scenes that follow recurring threads (``structure="scenes"``)."""
    n = int(np.exp(rng.uniform(np.log(config.min_shots), np.log(config.max_shots))))
    genres = np.sort(rng.choice(NUM_GENRES, rng.integers(1, 4), replace=False))
    title_vec = catalog.genre[genres].mean(0)
    num_threads = int(rng.integers(4, 9))
    # [3 parts (place, music, talk), thread, latent]
    thread_parts = rng.standard_normal((3, num_threads, LATENT)) / np.sqrt(LATENT) * THREAD_NORM
    thread_parts += 0.3 * title_vec
    bounds = _scenes(n, rng)
    num_scenes = len(bounds) - 1
    thread_of_scene = _thread_sequence(num_scenes, num_threads, rng)
    scene_parts = (
        thread_parts[:, thread_of_scene]
        + rng.standard_normal((3, num_scenes, LATENT)) / np.sqrt(LATENT) * SCENE_VARIATION
    )
    # changed[c, p]: part p changes at the cut before scene c + 1.
    changed = rng.random((max(num_scenes - 1, 0), 3)) >= CARRY_OVER
    silent = np.flatnonzero(~changed.any(1))
    changed[silent, rng.integers(0, 3, len(silent))] = True
    for c, p in zip(*np.nonzero(~changed), strict=True):
        scene_parts[p, c + 1] = scene_parts[p, c]
    scene_of_shot = np.repeat(np.arange(num_scenes), np.diff(bounds))
    arrays = {}
    for name, weights in SCENE_VIEWS.items():
        _, noise, _ = catalog.views[name]
        latent = np.einsum("p,psl->sl", np.asarray(weights), scene_parts)[scene_of_shot]
        latent = latent + rng.standard_normal((n, LATENT)) * noise
        arrays[name] = latent @ catalog.projection[name]
    missing_rate = np.clip(rng.beta(2, 3, num_scenes) * config.text_missing / 0.4, 0, 1)
    arrays["text"][rng.random(n) < missing_rate[scene_of_shot]] = 0.0
    _add_times_and_title(arrays, catalog, title_vec, n, rng)
    story = {
        "n": n,
        "genres": genres,
        "bounds": bounds,
        "thread_of_scene": thread_of_scene,
        "changed": changed,
        "scene_of_shot": scene_of_shot,
    }
    return arrays, story


def _add_times_and_title(
    arrays: dict, catalog: _Catalog, title_vec: np.ndarray, n: int, rng: np.random.Generator
) -> None:
    """Shot start/end times (gamma lengths) and the noisy title embedding of one title."""
    shot_lengths = rng.gamma(2.0, 2.0, n) + 0.5
    end = np.cumsum(shot_lengths)
    arrays["start_s"] = end - shot_lengths
    arrays["end_s"] = end
    noisy_title = title_vec + rng.standard_normal(LATENT) / np.sqrt(LATENT) * 1.5
    arrays["title_embedding"] = noisy_title @ catalog.title_projection


def _clip_adder(clips: list[dict], title_id: str, split: str):
    """``add(task, start, end, **label)``: appends one clips.jsonl row of this title."""

    def add(task: str, start: int, end: int, **label) -> None:
        clips.append(
            {
                "task": task,
                "title_id": title_id,
                "shot_start": int(start),
                "shot_end": int(end),
                "split": split,
                **label,
            }
        )

    return add


def _scene_clips(title_id: str, story: dict, rng: np.random.Generator, split: str) -> list[dict]:
    """``scene_boundary`` and ``recurrence`` clips of a ``structure="scenes"`` title."""
    bounds, threads = story["bounds"], story["thread_of_scene"]
    clips: list[dict] = []
    add = _clip_adder(clips, title_id, split)

    # scene_boundary: at up to 10 cuts, the last shot before (positive) and the first
    # shot after (negative), and two shots drawn from the rest (negatives).
    cuts = bounds[1:-1]
    last_shots = set((cuts - 1).tolist())
    others = np.setdiff1d(np.arange(story["n"] - 1), cuts - 1)
    for cut in rng.choice(cuts, min(len(cuts), 10), replace=False) if len(cuts) else []:
        add("scene_boundary", cut - 1, cut, label=1)
        add("scene_boundary", cut, cut + 1, label=int(int(cut) in last_shots))
        for shot in rng.choice(others, min(len(others), 2), replace=False):
            add("scene_boundary", shot, shot + 1, label=0)
    # recurrence: a 3-8-shot clip inside up to 8 scenes; target = its thread's scene count.
    counts = np.bincount(threads)
    num_scenes = len(bounds) - 1
    for s in rng.choice(num_scenes, min(num_scenes, 8), replace=False):
        length = min(int(rng.integers(3, 9)), bounds[s + 1] - bounds[s])
        start = int(rng.integers(bounds[s], bounds[s + 1] - length + 1))
        add("recurrence", start, start + length, target=float(counts[threads[s]]))
    return clips


def _clips(title_id: str, story: dict, rng: np.random.Generator, split: str) -> list[dict]:
    n, bounds, tension = story["n"], story["bounds"], story["tension"]
    clips: list[dict] = []
    add = _clip_adder(clips, title_id, split)

    num_scenes = len(bounds) - 1
    # tone: a clip of 3-8 shots inside one scene; labels = that scene's tones.
    for s in rng.choice(num_scenes, min(num_scenes, 6), replace=False):
        length = min(int(rng.integers(3, 9)), bounds[s + 1] - bounds[s])
        start = int(rng.integers(bounds[s], bounds[s + 1] - length + 1))
        add("tone", start, start + length, labels=sorted(int(t) for t in story["scene_tones"][s]))
    # genre: clips of 4-8 shots anywhere; labels = the title's genres.
    for _ in range(4):
        length = int(rng.integers(4, 9))
        start = int(rng.integers(0, n - length + 1))
        add("genre", start, start + length, labels=[int(g) for g in story["genres"]])
    # ad_relevancy: the two transition shots at a break; labels = ad categories of the
    # elements featured in the two scenes before the break.
    for s in story["breaks"]:
        featured = np.concatenate([story["scene_elements"][p] for p in (s - 2, s - 1)])
        labels = sorted({int(story["element_category"][e]) for e in featured})
        add("ad_relevancy", bounds[s] - 2, bounds[s], labels=labels)
    # popularity: 12 clips of 4-8 shots; target = tension at the clip (plus a little noise).
    for _ in range(12):
        length = int(rng.integers(4, 9))
        start = int(rng.integers(0, n - length + 1))
        target = float(tension[start : start + length].mean() + rng.normal(0, 0.05))
        add("popularity", start, start + length, target=target)
    # retrieval: positives are 4-8-shot clips with the lead on screen at a tension peak.
    lead_on = np.array([0 in story["scene_elements"][s] for s in story["scene_of_shot"]])
    peak = tension >= np.quantile(tension, 0.85)
    centers = np.flatnonzero(lead_on & peak)
    if len(centers) == 0:
        centers = np.flatnonzero(peak)
    quiet = np.flatnonzero(tension <= np.quantile(tension, 0.6))
    num_pos = int(rng.integers(6, 11))
    for label, pool, count in ((1, centers, num_pos), (0, quiet, 3 * num_pos)):
        for center in rng.choice(pool, count, replace=True):
            length = int(rng.integers(4, 9))
            start = int(np.clip(center - length // 2, 0, n - length))
            add("retrieval", start, start + length, label=label)
    return clips


def write_catalog(
    out: str | Path,
    config: SynthConfig | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Writes titles.jsonl, shots/*.npz, probes.json and clips.jsonl under ``out``.

    The catalog is built beside ``out`` and swapped in whole; an existing ``out`` must be
    an earlier catalog of ours and ``overwrite`` set.
    """
    with outputs.atomic_output(out, "source", overwrite=overwrite) as target:
        _write_catalog(Path(target), config or SynthConfig(), progress)
    return Path(out)


def _write_catalog(out: Path, config: SynthConfig, progress: bool) -> None:
    rng = np.random.default_rng(config.seed)
    catalog = _Catalog(config, rng)
    splits = rng.choice(["train", "val", "test"], config.titles, p=[0.7, 0.15, 0.15])
    titles, clips = [], []
    for index in tqdm(
        range(config.titles), desc="synth", unit="title", disable=None if progress else True
    ):
        title_id = f"title_{index:05d}"
        title_rng = np.random.default_rng([config.seed, index])
        scenes = config.structure == "scenes"
        make_title = _make_scene_title if scenes else functools.partial(_make_title, index)
        arrays, story = make_title(catalog, config, title_rng)
        fp16 = {
            k: v.astype(np.float16) if k in ("video", "audio", "text") else v.astype(np.float32)
            for k, v in arrays.items()
        }
        source.write_shots(out, title_id, fp16)
        titles.append(
            {
                "title_id": title_id,
                "split": str(splits[index]),
                "num_shots": story["n"],
                "genres": [int(g) for g in story["genres"]],
            }
        )
        make_clips = _scene_clips if scenes else _clips
        clips.extend(make_clips(title_id, story, title_rng, str(splits[index])))
    source.write_titles(out, titles)
    source.write_probes(out, {"tasks": probe_tasks(config)}, clips)
    source.write_json(out / "synth.json", dataclasses.asdict(config))
