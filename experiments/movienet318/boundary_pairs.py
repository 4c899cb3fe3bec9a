"""Why is scene_boundary hard? The same probe on a shot alone vs on the pair around the cut.

    python experiments/movienet318/boundary_pairs.py --store OUT/store --emb OUT/emb \
        --src OUT/src [--bootstrap 500]

`mediafm probe` asks one question of each shot's embedding: "does a scene end after
you?" For the raw text embedding (``concat``) that is nearly unanswerable: a scene change
is a relation between this shot and the next. This diagnostic fits the same logistic
probe on [shot i, shot i+1, |difference|] features, for the in-context embeddings and
for the raw MiniLM vectors, and also splits the single-shot AP by whether shot i has
dialogue. It reads what `run.sh` wrote; nothing is trained.
"""

from __future__ import annotations

import argparse

import numpy as np

from mediafm_jax.data.embeddings import EmbeddingStore
from mediafm_jax.data.store import ShotStore
from mediafm_jax.probe import context_rows, input_rows, intervals
from mediafm_jax.probe.linear import run_probe
from mediafm_jax.probe.tasks import load_clips, load_tasks


def first_shots(rows_by_title: dict[int, np.ndarray], title, start) -> np.ndarray:
    return np.stack([rows_by_title[t][s] for t, s in zip(title, start, strict=True)])


def pair_features(rows_by_title: dict[int, np.ndarray], title, start) -> np.ndarray:
    """[shot i, shot i+1, |shot i - shot i+1|] (the last shot pairs with itself)."""
    here, after = [], []
    for t, s in zip(title.tolist(), start.tolist(), strict=True):
        rows = rows_by_title[t]
        here.append(rows[s])
        after.append(rows[min(s + 1, len(rows) - 1)])
    here, after = np.stack(here), np.stack(after)
    return np.concatenate([here, after, np.abs(here - after)], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--emb", required=True)
    parser.add_argument("--src", required=True)
    parser.add_argument("--bootstrap", type=int, default=500)
    args = parser.parse_args()
    store = ShotStore(args.store)
    tasks = [t for t in load_tasks(f"{args.src}/probes.json") if t.name == "scene_boundary"]
    clips = load_clips(f"{args.src}/clips.jsonl", tasks, store)["scene_boundary"]
    titles = np.unique(clips.title)
    context = context_rows(None, store, titles, EmbeddingStore(args.emb))
    raw = input_rows(store, titles)["concat"]
    single = {
        "mediafm_context": first_shots(context, clips.title, clips.start),
        "concat": first_shots(raw, clips.title, clips.start),
    }
    pairs = {
        "mediafm_context, pair": pair_features(context, clips.title, clips.start),
        "concat, pair": pair_features(raw, clips.title, clips.start),
    }
    scored = {name: run_probe(x, clips) for name, x in {**single, **pairs}.items()}
    bounds = intervals(scored, args.bootstrap)["ci95"]
    test = clips.split == "test"
    print(f"scene_boundary on {test.sum():,} test shots, chance AP {clips.target[test].mean():.3f}")
    print(f"{'features':<24}{'AP':>7}{'95% interval':>18}")
    for name, result in scored.items():
        low, high = bounds[name]
        print(f"{name:<24}{result.score:>7.3f}{f'{low:.3f}-{high:.3f}':>18}")

    has_text = single["concat"][test].any(-1)
    print("\nsingle-shot AP by whether the shot has dialogue (same fitted probes):")
    for name in single:
        result = scored[name]
        rows = np.arange(len(result.title))
        for label, keep in (("with text", has_text), ("no text", ~has_text)):
            sub = rows[keep]
            share = clips.target[test][keep].mean()
            ap = result.score_rows(sub, np.zeros(len(sub), int))
            print(f"  {name:<16}{label:<11}{ap:7.3f}  (chance {share:.3f}, {keep.sum():,} shots)")


if __name__ == "__main__":
    main()
