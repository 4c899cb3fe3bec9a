"""Issue 23: is the scenes catalog's ``recurrence`` task solvable, and by what?

    python experiments/recurrence_oracle.py [--titles 120] [--emb RUN_EMB --store STORE]
        [--out experiments/ablations/scenes/ORACLE.md]

Builds the catalog of ``experiments/ablations.py --catalog scenes`` (synth scenes family,
120 titles, 128-d modalities, seed 0) in memory twice: as written, and with ``noise=0``
(the view noise only scales its draws, so every title, scene, thread and clip is the same;
checked). Scores the recurrence clips with the report's own ranking probe (ridge,
10 folds grouped by title, Kendall's tau within each title) on:

- oracles: the true scene count of the clip's thread (the target itself: checks the
  metric), the true share of the title's shots in the thread;
- ``readouts.recurrence`` (the ``+recur`` part) on the clean rows and on the noisy input;
- the report's baselines ``concat``, ``title_mean``, ``novelty``;
- with ``--emb``: a run's in-context rows (``last``), ``recurrence`` on them, and the
  readouts ``last+recur`` and ``last+change+recur``.

Prints the table and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mediafm_jax import readouts
from mediafm_jax.data import synthetic
from mediafm_jax.fusion import fuse
from mediafm_jax.probe import _pool as pool  # the report's clip pooling
from mediafm_jax.probe import baselines
from mediafm_jax.probe.linear import ranking_probe
from mediafm_jax.probe.tasks import Clips, Task

MODALITIES = ("video", "audio", "text")


def build(titles: int, noise: float):
    """[(fused rows [n, F], story, recurrence clips)] of the ablation's scenes catalog."""
    config = synthetic.SynthConfig(
        titles=titles,
        video_dim=128,
        audio_dim=128,
        text_dim=128,
        title_dim=128,
        structure="scenes",
        noise=noise,
    )
    catalog = synthetic._Catalog(config, np.random.default_rng(config.seed))
    out = []
    for index in range(titles):
        rng = np.random.default_rng([config.seed, index])
        arrays, story = synthetic._make_scene_title(catalog, config, rng)
        clips = synthetic._scene_clips(f"title_{index:05d}", story, rng, "train")
        # as the store holds them: fp16, then fused as the model and the baselines see them
        x = np.concatenate([arrays[m].astype(np.float16).astype(np.float32) for m in MODALITIES], 1)
        columns = [(128 * i, 128 * (i + 1)) for i in range(len(MODALITIES))]
        out.append((fuse(x, columns), story, [c for c in clips if c["task"] == "recurrence"]))
    return out


def recurrence_clips(titles) -> Clips:
    rows = [(i, c) for i, (_, _, clips) in enumerate(titles) for c in clips]
    return Clips(
        Task("recurrence", "ranking", "kendall_tau"),
        np.array([i for i, _ in rows]),
        np.array([c["shot_start"] for _, c in rows]),
        np.array([c["shot_end"] for _, c in rows]),
        np.array(["train"] * len(rows)),
        np.array([c["target"] for _, c in rows], float),
    )


def thread_share(story: dict) -> np.ndarray:
    """[n, 1]: the share of the title's shots in each shot's thread."""
    thread_n = story["thread_of_scene"][story["scene_of_shot"]]
    return (np.bincount(thread_n)[thread_n] / len(thread_n))[:, None]


def in_context_rows(emb: str, store: str, titles) -> dict[int, np.ndarray]:
    from mediafm_jax.data.embeddings import EmbeddingStore
    from mediafm_jax.data.store import ShotStore

    shots = ShotStore(store)
    rows = EmbeddingStore(emb).shot_rows(shots)
    out = {}
    for i, (fused, _, _) in enumerate(titles):
        start, stop = shots.title_rows(shots.title_index(f"title_{i:05d}"))
        if stop - start != len(fused):
            raise SystemExit(f"{store}: title_{i:05d} is not this catalog's")
        out[i] = rows[start:stop].astype(np.float32)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--titles", type=int, default=120)
    parser.add_argument("--emb", default=None, help="a run's `last` embeddings of the catalog")
    parser.add_argument("--store", default=None, help="the catalog's shot store (with --emb)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    noisy, clean = build(args.titles, 0.7), build(args.titles, 0.0)
    for (_, a, ca), (_, b, cb) in zip(noisy, clean, strict=True):
        assert ca == cb and (a["thread_of_scene"] == b["thread_of_scene"]).all()
    clips = recurrence_clips(noisy)
    noisy_rows = {i: t[0] for i, t in enumerate(noisy)}
    clean_rows = {i: t[0] for i, t in enumerate(clean)}
    recur = lambda rows: {i: readouts.recurrence(r) for i, r in rows.items()}
    methods = {
        "oracle: the thread's true scene count (the target)": clips.target[:, None],
        "oracle: the thread's true share of the title's shots": pool(
            {i: thread_share(t[1]) for i, t in enumerate(noisy)}, clips
        ),
        "`recurrence` of the clean (noise-free) rows": pool(recur(clean_rows), clips),
        "`recurrence` of the noisy input rows (`concat`)": pool(recur(noisy_rows), clips),
        "concat": pool(noisy_rows, clips),
        "title_mean": baselines.title_mean(noisy_rows, clips),
        "novelty": baselines.novelty(noisy_rows, clips),
    }
    if args.emb:
        last = in_context_rows(args.emb, args.store, noisy)
        methods["`last` (in-context rows)"] = pool(last, clips)
        methods["`recurrence` of `last` alone"] = pool(recur(last), clips)
        for layers in ("last+recur", "last+change+recur"):
            parts = {i: readouts.with_parts(r, layers) for i, r in last.items()}
            methods[f"readout `{layers}`"] = pool(parts, clips)
    lines = [
        f"| method | features | recurrence (Kendall tau, {len(clips)} clips, "
        f"{args.titles} titles) |",
        "|---|---:|---:|",
    ]
    for name, features in methods.items():
        tau = ranking_probe(features, clips).score
        lines.append(f"| {name} | {features.shape[1]} | {tau:+.3f} |")
        print(lines[-1], flush=True)
    if args.out:
        args.out.write_text(
            "# Is `recurrence` solvable? (`experiments/recurrence_oracle.py`)\n\n"
            "The report's ranking probe (ridge, 10 folds grouped by title, tau within "
            "titles) on every title of the scenes ablation catalog.\n\n" + "\n".join(lines) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
