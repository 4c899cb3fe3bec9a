"""Linear probes of frozen clip embeddings: the ablation report of docs/DESIGN.md §1.

Methods, each a clip feature from mean-pooling the clip's shots ``[start, end)``:
``mediafm_context`` (in-context embeddings), ``mediafm_isolated`` (the encoder run on
the clip alone, with [GLOBAL]), ``concat`` (fused input embeddings: the uncontextualized
baseline), one per modality (that modality's unit-normed input alone; none when the
store has a single modality, as it would repeat ``concat``), and two label-free,
hand-made context baselines from ``baselines.py``: ``title_mean`` (the clip's mean beside
its whole title's mean) and ``novelty`` (before/after distances at the clip's cuts).

Each score comes with a 95% interval from resampling the test *titles* (clips of one film
are not independent), and each method's paired difference from ``concat`` with its own
interval: the same draws for every method, so "beats concat" is read off one interval.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from mediafm_jax import outputs, readouts, run
from mediafm_jax.data.embeddings import EmbeddingStore
from mediafm_jax.data.store import ShotStore
from mediafm_jax.embed import Embedder
from mediafm_jax.fusion import fuse, unit
from mediafm_jax.probe import baselines
from mediafm_jax.probe.linear import ProbeResult, ProbeSkipped, run_probe
from mediafm_jax.probe.metrics import interval, title_bootstrap
from mediafm_jax.probe.report import markdown_table, write_report
from mediafm_jax.probe.tasks import Clips, ProbeInputError, load_clips, load_tasks
from mediafm_jax.readouts import DEFAULT_CANDIDATES

__all__ = ["run_probes", "choose_readout", "ProbeInputError", "markdown_table"]
BASELINE = "concat"
HAND_MADE = ("title_mean", "novelty")  # the label-free context baselines (baselines.py)


def intervals(scored: dict[str, ProbeResult], draws: int, seed: int = 0) -> dict:
    """95% title-bootstrap intervals per method, and paired differences: every method
    minus ``concat``, and the model's methods minus ``title_mean`` and minus ``novelty``
    (the label-free context they have to beat)."""
    first = next(iter(scored.values()))
    per_draw = [
        [r.score_rows(rows, group) for r in scored.values()]
        for rows, group in title_bootstrap(first.title, draws, seed)
    ]
    values = dict(zip(scored, np.array(per_draw).T, strict=True))
    out: dict = {"ci95": {name: interval(v) for name, v in values.items()}}
    model = [m for m in scored if m.startswith("mediafm_")]
    for reference, of in ((BASELINE, scored), *((hand_made, model) for hand_made in HAND_MADE)):
        if reference in scored and any(name != reference for name in of):
            out["vs_" + reference] = {
                name: {
                    "delta": scored[name].score - scored[reference].score,
                    "ci95": interval(values[name] - values[reference]),
                }
                for name in of
                if name != reference
            }
    return out


def _pool(rows_by_title: dict[int, np.ndarray], clips: Clips) -> np.ndarray:
    return np.stack(
        [
            rows_by_title[t][s:e].mean(0)
            for t, s, e in zip(clips.title, clips.start, clips.end, strict=True)
        ]
    )


def input_rows(
    store: ShotStore, titles: np.ndarray, per_modality_norm: bool = False
) -> dict[str, dict[int, np.ndarray]]:
    """Unit-normed input rows per title: ``concat`` (the fused input the model sees, with
    the run's ``per_modality_norm``) and one entry per modality.

    Read once for all tasks, as the context rows are, so tasks sharing titles do not read
    and normalize them again.
    """
    raw = {int(t): store.read_rows(*store.title_rows(int(t))).astype(np.float32) for t in titles}
    columns = [(m.start, m.stop) for m in store.modalities]
    rows = {"concat": {t: fuse(x, columns, per_modality_norm) for t, x in raw.items()}}
    if len(store.modalities) == 1:  # the one modality's rows are concat's: no second column
        return rows
    for m in store.modalities:
        rows[m.name] = {t: unit(x[:, m.start : m.stop]) for t, x in raw.items()}
    return rows


def context_rows(
    embedder: Embedder | None, store: ShotStore, titles: np.ndarray, emb: EmbeddingStore | None
) -> dict[int, np.ndarray]:
    """In-context shot embeddings per title, read from ``emb`` or computed."""
    if emb is not None:
        shots = emb.shot_rows(store)  # aligned, undamaged and finite, or an error
        return {int(t): shots[slice(*store.title_rows(int(t)))] for t in titles}
    assert embedder is not None
    return {
        t: rows
        for t, rows, _ in embedder.embed_titles(
            store, [int(t) for t in titles], progress=jax.process_index() == 0
        )
    }


def validation_clips(clips: Clips, seed: int = 0) -> Clips:
    """The clips of train and val titles only, val in the role of test.

    For choosing settings (switches, readout) without looking at test titles: the probe
    fits on train titles (its regularization chosen on a held-out quarter of them) and
    scores val; ranking tasks cross-validate over train + val titles. A task labelled on
    val and test titles only (MovieNet's scene boundaries: its test probe fits on val)
    fits on half its val titles, drawn with ``seed``, and scores the other half, so the
    choice sees it too rather than skipping it.
    """
    keep = clips.split != "test"
    title = clips.title[keep]
    split = np.where(clips.split[keep] == "val", "test", clips.split[keep])
    if not (split == "train").any():
        titles = np.unique(title)
        fit = np.random.default_rng(seed).choice(titles, len(titles) // 2, replace=False)
        split = np.where(np.isin(title, fit), "train", split)
    return dataclasses.replace(
        clips,
        title=title,
        start=clips.start[keep],
        end=clips.end[keep],
        split=split,
        target=clips.target[keep],
    )


def _pool_parts(
    base_rows: dict[int, np.ndarray], layers: str, clips_by_task: dict[str, Clips]
) -> dict[str, np.ndarray]:
    """``_pool`` of every task's clips under ``layers``, from the rows of its encoder
    readout (``readouts.encoder_readout``), one title at a time: a wide readout of every
    title at once would hold gigabytes."""
    pooled: dict[str, list] = {name: [None] * len(c) for name, c in clips_by_task.items()}
    for t, rows in base_rows.items():
        title_rows = readouts.with_parts(rows, layers)
        for name, c in clips_by_task.items():
            for i in np.flatnonzero(c.title == t):
                pooled[name][i] = title_rows[c.start[i] : c.end[i]].mean(0)
    return {name: np.stack(rows) for name, rows in pooled.items() if rows}


def choose_readout(
    run_dir: str | Path,
    store: ShotStore,
    tasks_path: str | Path,
    clips_path: str | Path,
    candidates: tuple[str, ...] = DEFAULT_CANDIDATES,
    step: int | None = None,
) -> tuple[str, dict[str, float]]:
    """Picks the readout with the best mean ``mediafm_context`` score on validation titles
    (probes fit on train titles, scored on val; no test title is read) and records it in
    ``RUN/readout.json``, so embed, probe and search use it by default.

    The encoder runs once per encoder readout (``last``, ``last+input``, ``mean``), not
    once per candidate: every other readout is parameter-free parts of one of them.
    Returns (the chosen readout, the val mean of every candidate).
    """
    candidates = tuple(dict.fromkeys(candidates))  # each once, in the order given
    if not candidates:
        raise ValueError("choose_readout: no candidate readouts")
    tasks = load_tasks(tasks_path)
    clips_by_task = {
        n: validation_clips(c) for n, c in load_clips(clips_path, tasks, store).items()
    }
    titles = np.unique(np.concatenate([c.title for c in clips_by_task.values()]))
    main = jax.process_index() == 0
    scores: dict[str, float] = {}
    per_task: dict[str, dict[str, float]] = {}
    by_encoder: dict[str, list[str]] = {}
    for layers in candidates:
        by_encoder.setdefault(readouts.encoder_readout(layers), []).append(layers)
    for encoder_layers, group in by_encoder.items():
        embedder = Embedder(run_dir, step=step, layers=encoder_layers)
        base_rows = context_rows(embedder, store, titles, None)
        for layers in group:
            features = _pool_parts(base_rows, layers, clips_by_task)
            per_task[layers] = {}
            for task in tasks:
                if task.name not in features:  # no clip on train or val titles
                    continue
                try:
                    per_task[layers][task.name] = run_probe(
                        features[task.name], clips_by_task[task.name]
                    ).score
                except ProbeSkipped:  # e.g. a task with no clip on train titles
                    continue
            if not per_task[layers]:
                raise ProbeInputError(
                    f"{clips_path}: no task has clips on both train and val titles to choose by"
                )
            scores[layers] = float(np.mean(list(per_task[layers].values())))
            if main:
                tasks_text = ", ".join(f"{k} {v:.3f}" for k, v in per_task[layers].items())
                print(f"readout {layers}: val mean {scores[layers]:.3f} ({tasks_text})", flush=True)
        del base_rows
    scores = {layers: scores[layers] for layers in candidates}  # in the order asked
    best = max(scores, key=scores.get)
    if main:
        run.record_readout(
            run_dir,
            best,
            {
                "split": "val",
                "by": "mean mediafm_context score over tasks",
                "scores": scores,
                "tasks": per_task,
                "step": embedder.step,
            },
        )
        print(f"readout {best} chosen on validation titles, recorded in {run_dir}", flush=True)
    return best, scores


def run_probes(
    embedder: Embedder | None,
    store: ShotStore,
    tasks_path: str | Path,
    clips_path: str | Path,
    out: str | Path,
    emb: EmbeddingStore | None = None,
    bootstrap: int = 500,
    overwrite: bool = False,
    on: str = "test",
) -> dict:
    """Probes every task with every method; writes and returns the report.

    ``bootstrap``: title resamples for the intervals (0: scores only). ``out`` is checked
    before any work and replaced whole at the end (a report of ours, with ``overwrite``).
    With several processes every one computes the embeddings (one program over all
    devices; the results come back replicated) and the probes; process 0 alone prints
    and writes. ``on="val"`` scores validation titles and never reads a test title
    (``validation_clips``).
    """
    if on not in ("test", "val"):
        raise ValueError(f"on={on!r}: expected 'test' or 'val'")
    main = jax.process_index() == 0
    inputs = [store.root, tasks_path, clips_path]
    inputs += [emb.root] if emb is not None else []
    inputs += [embedder.run_dir] if embedder is not None else []
    outputs.check_output(out, "report", overwrite=overwrite, inputs=inputs)
    written = emb.manifest.get("layers") if emb is not None else None
    if emb is not None and embedder is not None and written != embedder.layers:
        raise ProbeInputError(
            f"{emb.root}: written with readout {written}, not {embedder.layers}; "
            f"rerun `mediafm embed` or pass --layers {written}"
        )
    tasks = load_tasks(tasks_path)
    clips_by_task = load_clips(clips_path, tasks, store)
    if on == "val":
        clips_by_task = {name: validation_clips(c) for name, c in clips_by_task.items()}
    all_titles = np.unique(np.concatenate([c.title for c in clips_by_task.values()]))
    context = context_rows(embedder, store, all_titles, emb) if (embedder or emb) else None
    if embedder is not None:
        per_modality_norm = embedder.config.model.per_modality_norm
    else:
        per_modality_norm = emb.per_modality_norm() if emb is not None else False
    modality_rows = input_rows(store, all_titles, per_modality_norm)
    results = {}
    for task in tqdm(tasks, desc="probe", unit="task", disable=None if main else True):
        clips = clips_by_task[task.name]
        features = {}
        if context is not None:
            features["mediafm_context"] = _pool(context, clips)
        if embedder is not None:
            spans = list(
                zip(clips.title.tolist(), clips.start.tolist(), clips.end.tolist(), strict=True)
            )
            features["mediafm_isolated"] = embedder.embed_clips(store, spans)
        features.update({name: _pool(rows, clips) for name, rows in modality_rows.items()})
        features["title_mean"] = baselines.title_mean(modality_rows[BASELINE], clips)
        features["novelty"] = baselines.novelty(modality_rows[BASELINE], clips)
        try:
            scored = {name: run_probe(x, clips) for name, x in features.items()}
        except ProbeSkipped as reason:
            if main:
                print(f"probe: skipped task {task.name!r}: {reason}", flush=True)
            results[task.name] = {"metric": task.metric, "skipped": str(reason), "results": {}}
            continue
        first = next(iter(scored.values()))
        results[task.name] = {
            "metric": task.metric,
            "n_train": first.n_train,
            "n_test": first.n_test,
            "results": {name: r.score for name, r in scored.items()},
        }
        if bootstrap:
            results[task.name].update(intervals(scored, bootstrap))
    if main:
        with outputs.atomic_output(out, "report", overwrite=overwrite, inputs=inputs) as target:
            write_report(results, target)
    return results
