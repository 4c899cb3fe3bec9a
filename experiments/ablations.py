"""Issue 14's ablations on the demo catalog: one row per switch, same seed, same steps.

    python experiments/ablations.py --work runs/ablations --rows baseline,global_both \
        [--steps 600] [--out experiments/ablations] [--choose-readout ROW] [--trend ROW]

The catalog is `mediafm demo`'s (synth: 120 titles, 128-d modalities, seed 0; demo preset);
``--catalog scenes`` (issue 23) takes synth's scenes family instead (same sizes; tasks
``scene_boundary`` and ``recurrence``), e.g. ``--catalog scenes --work runs/ablations_scenes
--out experiments/ablations/scenes --steps 300``.
Each training row trains on the train titles only (re-using a finished run in
``WORK/runs/ROW``); every row is probed on the validation titles (``probe.run_probes(...,
on="val")``: no test title is read), which is where switches and the readout are chosen,
and once on the test titles, with the title-bootstrap interval and the paired difference
from ``concat``, ``title_mean`` and ``novelty`` (the label-free baselines that come with
every report). Results go to ``OUT/ROW.json``; ``OUT/README.md`` is the table, rebuilt from every
JSON there (``--table-only`` rebuilds it without running anything), followed by
``OUT/NOTES.md`` where there is one. ``--versus ROW:REFERENCE`` pairs two evaluated rows
(two runs, or two readouts) on the same resampled test titles (``OUT/versus.json``, a
section of the table). ``--choose-readout
ROW`` picks that training row's readout on val among ``readouts.DEFAULT_CANDIDATES``
(with ``--catalog scenes``: every readout of ``readouts.READOUTS``)
(``probe.choose_readout``, as ``mediafm probe --choose-readout``) and records it in
``WORK/runs/ROW/readout.json``, so ``mediafm embed``/``probe`` use it by default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# name -> (config overrides of the training run, readout, the run it trains or re-uses)
ROWS: dict[str, tuple[list[str], str, str]] = {
    "baseline": ([], "last", "baseline"),
    "readout_mean": ([], "mean", "baseline"),
    "readout_last_input": ([], "last+input", "baseline"),
    "readout_last_title": ([], "last+title", "baseline"),
    "readout_last_input_title": ([], "last+input+title", "baseline"),
    "span4": (["objective.span_mean_shots=4"], "last", "span4"),
    "global_title_mean": (
        ["model.global_input=title_mean"],
        "last+input+title",
        "global_title_mean",
    ),
    "global_both": (["model.global_input=both"], "last", "global_both"),
    "contrastive": (["objective.contrastive_weight=0.1"], "last+input+title", "contrastive"),
    # issue 23: parameter-free readouts that see structure (readouts.py), on the baseline run
    "readout_last_change": ([], "last+change", "baseline"),
    "readout_last_input_change": ([], "last+input+change", "baseline"),
    "readout_last_recur": ([], "last+recur", "baseline"),
    "readout_last_change_recur": ([], "last+change+recur", "baseline"),
    "readout_last_input_change_recur": ([], "last+input+change+recur", "baseline"),
    # issue 23, third pass: the structure parts without the state (the probe drowns four
    # +recur numbers among hundreds of content columns)
    "readout_change": ([], "change", "baseline"),
    "readout_distance": ([], "distance", "baseline"),
    "readout_recur": ([], "recur", "baseline"),
    "readout_change_recur": ([], "change+recur", "baseline"),
    "readout_distance_recur": ([], "distance+recur", "baseline"),
    # issue 23: BaSSL's pseudo-boundary prediction beside masked shot modeling
    "boundary": (["objective.boundary_weight=1.0"], "last", "boundary"),
    "boundary_change_recur": (["objective.boundary_weight=1.0"], "last+change+recur", "boundary"),
    "boundary_distance_recur": (["objective.boundary_weight=1.0"], "distance+recur", "boundary"),
    "contrastive_change_recur": (
        ["objective.contrastive_weight=0.1"],
        "last+change+recur",
        "contrastive",
    ),
    # issue 23, third pass: pseudo-boundaries only in the batch's half of spans whose best
    # split is strongest (the others: "no boundary")
    "boundary_keep": (
        ["objective.boundary_weight=1.0", "objective.boundary_keep=0.5"],
        "last",
        "boundary_keep",
    ),
    "boundary_keep_distance_recur": (
        ["objective.boundary_weight=1.0", "objective.boundary_keep=0.5"],
        "distance+recur",
        "boundary_keep",
    ),
    # issue 23, fourth pass: BaSSL's shot-to-scene matching, a term on the states' distances
    "scene_match": (["objective.scene_match_weight=1.0"], "last", "scene_match"),
    "scene_match_01": (["objective.scene_match_weight=0.1"], "last", "scene_match_01"),
    # Muon + AdamW (the preset's optimizer; seed 0 is "baseline") vs AdamW, three seeds
    "seed1": (["train.seed=1"], "last", "seed1"),
    "seed2": (["train.seed=2"], "last", "seed2"),
    "adamw": (["optim.kind=adamw"], "last", "adamw"),
    "adamw_seed1": (["optim.kind=adamw", "train.seed=1"], "last", "adamw_seed1"),
    "adamw_seed2": (["optim.kind=adamw", "train.seed=2"], "last", "adamw_seed2"),
}
# ... and each of those six runs read with distance+recur, the scenes catalog's best readout
for _run in ("baseline", "seed1", "seed2", "adamw", "adamw_seed1", "adamw_seed2"):
    ROWS[f"{_run}_distance_recur"] = (ROWS[_run][0], "distance+recur", _run)
# ... and shot-to-scene matching at 0.1 over three seeds, each read with last and
# distance+recur (0.1 moved scene boundaries toward novelty on seed 0; 1.0 did not)
for _seed in (1, 2):
    ROWS[f"scene_match_01_seed{_seed}"] = (
        [*ROWS["scene_match_01"][0], f"train.seed={_seed}"],
        "last",
        f"scene_match_01_seed{_seed}",
    )
# issue 23, fifth pass: shot-to-scene matching that cuts only the batch's half of spans
# whose split is strongest (objective.boundary_keep; every other span is one pseudo-scene)
_KEEP = {"scene_match_01_keep05": "0.1", "scene_match_1_keep05": "1.0"}  # row: SSM weight
for _name, _weight in _KEEP.items():
    _over = [f"objective.scene_match_weight={_weight}", "objective.boundary_keep=0.5"]
    ROWS[_name] = (_over, "last", _name)
    for _seed in (1, 2):
        ROWS[f"{_name}_seed{_seed}"] = (
            [*_over, f"train.seed={_seed}"],
            "last",
            f"{_name}_seed{_seed}",
        )
_SSM_RUNS = ("scene_match", "scene_match_01", "scene_match_01_seed1", "scene_match_01_seed2")
_KEEP_RUNS = tuple(f"{r}{s}" for r in _KEEP for s in ("", "_seed1", "_seed2"))
for _run in (*_SSM_RUNS, *_KEEP_RUNS):
    ROWS[f"{_run}_distance_recur"] = (ROWS[_run][0], "distance+recur", _run)
WHAT = {
    "baseline": "all switches off (today's defaults)",
    "readout_mean": "readout: mean of every layer's output",
    "readout_last_input": "readout: last layer beside the fused input",
    "readout_last_title": "readout: last layer beside its title's mean last layer",
    "readout_last_input_title": "readout: last+input beside its title's mean last+input",
    "span4": "span masking, mean run 4 shots (same 20% budget)",
    "global_title_mean": "[GLOBAL] = the title's mean fused shot (readout last+input+title)",
    "global_both": "[GLOBAL] = title embedding + title mean",
    "contrastive": "+ 0.1 x InfoNCE among the batch's targets (readout last+input+title)",
    "readout_last_change": "readout: last beside after-minus-before means and state novelty",
    "readout_last_input_change": "readout: last+input beside its change (k = 1, 4, 16)",
    "readout_last_recur": "readout: last beside its top similarities 24+ shots away",
    "readout_last_change_recur": "readout: last + change + recurrence",
    "readout_last_input_change_recur": "readout: last+input + change + recurrence",
    "readout_change": "readout: change of last alone (no state)",
    "readout_distance": "readout: the state distances of change alone (6 numbers)",
    "readout_recur": "readout: recurrence of last alone (4 numbers)",
    "readout_change_recur": "readout: change + recurrence of last, no state",
    "readout_distance_recur": "readout: distances + recurrence of last (10 numbers)",
    "boundary_distance_recur": "boundary run, readout: distances + recurrence of last",
    "boundary": "+ 1.0 x pseudo-boundary BCE (BaSSL; spans of 16 shots)",
    "boundary_change_recur": "boundary run, readout: last + change + recurrence",
    "contrastive_change_recur": "contrastive run, readout: last + change + recurrence",
    "boundary_keep": "+ pseudo-boundary BCE, positives in the half of spans split best",
    "boundary_keep_distance_recur": "boundary_keep run, readout: distances + recurrence",
    "scene_match": "+ 1.0 x shot-to-pseudo-scene InfoNCE on the states (BaSSL's SSM)",
    "scene_match_01": "+ 0.1 x shot-to-pseudo-scene InfoNCE on the states",
    "scene_match_01_seed1": "scene_match_01, train.seed=1",
    "scene_match_01_seed2": "scene_match_01, train.seed=2",
    "scene_match_01_keep05": "+ 0.1 x SSM, only the half of spans split best is cut in two",
    "scene_match_1_keep05": "+ 1.0 x SSM, only the half of spans split best is cut in two",
    "seed1": "baseline (Muon + AdamW), train.seed=1",
    "seed2": "baseline (Muon + AdamW), train.seed=2",
    "adamw": "optim.kind=adamw (AdamW alone, lr 3e-3), seed 0",
    "adamw_seed1": "optim.kind=adamw, train.seed=1",
    "adamw_seed2": "optim.kind=adamw, train.seed=2",
}
WHAT.update({f"{r}_seed{s}": f"{r}, train.seed={s}" for r in _KEEP for s in (1, 2)})
WHAT.update(
    {
        f"{r}_distance_recur": f"{r} run, readout distance+recur"
        for r in ROWS
        if r + "_distance_recur" in ROWS
    }
)


def scored_tasks(results: dict) -> list[str]:
    """The tasks of a probe report that were scored (not skipped), in the report's order."""
    return [t for t, r in results.items() if r.get("results")]


CATALOGS = ("demo", "scenes")  # --catalog: synth's story family, or its scenes family


def prepare(work: Path, catalog: str = "demo") -> tuple[Path, str]:
    """The catalog and its store (with the title summary), made once."""
    from mediafm_jax.data import ingest, synthetic
    from mediafm_jax.data.store import ShotStore

    source, store = work / "source", work / "store"
    if not (source / "clips.jsonl").exists():
        structure = "scenes" if catalog == "scenes" else "story"
        synthetic.write_catalog(
            source,
            synthetic.SynthConfig(
                titles=120,
                video_dim=128,
                audio_dim=128,
                text_dim=128,
                title_dim=128,
                structure=structure,
            ),
        )
    if not (store / "manifest.json").exists() or not ShotStore(str(store)).has_title_mean:
        ingest.ingest(source, str(store), overwrite=store.exists())
    return source, str(store)


def train_row(run: Path, overrides: list[str], store: str, steps: int) -> float:
    """Trains (or finds finished) the run; returns the seconds spent training now."""
    from mediafm_jax import config as config_lib
    from mediafm_jax import presets, train
    from mediafm_jax.checkpoint import Checkpointer

    if run.exists():
        checkpointer = Checkpointer(run, async_save=False)
        done = checkpointer.latest_step()
        checkpointer.close()
        if done == steps:
            print(f"{run}: finished at step {steps}, re-used", flush=True)
            return 0.0
    # Checkpoints every 150 steps (kept) for the steps-vs-score trend; saving draws nothing.
    fixed = [f"train.steps={steps}", "checkpoint.every_steps=150", "checkpoint.keep=8"]
    config = config_lib.apply_overrides(presets.demo(), [*overrides, *fixed])
    started = time.perf_counter()
    train.train(config, store, run)
    return time.perf_counter() - started


def evaluate(run: Path, readout: str, source: Path, store_path: str, work: Path, name: str):
    """(val results, test results) of one run and readout."""
    from mediafm_jax import embed, probe
    from mediafm_jax.data.store import ShotStore

    store = ShotStore(store_path)
    embedder = embed.Embedder(run, layers=readout)
    emb = embed.embed_store(embedder, store, str(work / "emb" / name), overwrite=True)
    results = {}
    for on, draws in (("val", 0), ("test", 500)):
        results[on] = probe.run_probes(
            # the clip-alone column (costly) once, for the baseline's test report
            embedder if (name == "baseline" and on == "test") else None,
            store,
            source / "probes.json",
            source / "clips.jsonl",
            work / "reports" / f"{name}_{on}",
            emb=emb,
            bootstrap=draws,
            overwrite=True,
            on=on,
        )
    return results["val"], results["test"]


def trend(run: Path, readout: str, source: Path, store_path: str, work: Path, only=None) -> dict:
    """Validation scores of ``mediafm_context`` at every kept checkpoint of ``run`` (or at
    the steps ``only``)."""
    from mediafm_jax import embed, probe
    from mediafm_jax.checkpoint import Checkpointer
    from mediafm_jax.data.store import ShotStore

    store = ShotStore(store_path)
    checkpointer = Checkpointer(run, async_save=False)
    steps = checkpointer.all_steps()
    checkpointer.close()
    out = {}
    for step in [s for s in steps if only is None or s in only]:
        embedder = embed.Embedder(run, step=step, layers=readout)
        emb = embed.embed_store(embedder, store, str(work / "emb" / "trend"), overwrite=True)
        # only the val clips' titles are read; the probe fits on train, scores val
        val = probe.run_probes(
            None,
            store,
            source / "probes.json",
            source / "clips.jsonl",
            work / "reports" / "trend",
            emb=emb,
            bootstrap=0,
            overwrite=True,
            on="val",
        )
        out[int(step)] = {t: val[t]["results"]["mediafm_context"] for t in scored_tasks(val)}
        out[int(step)]["mean"] = val_mean(val)
        print(f"{run.name} step {step}: val {out[int(step)]}", flush=True)
    return out


def versus(work: Path, source: Path, store_path: str, row: str, reference: str) -> dict:
    """``mediafm_context`` of ``row`` minus that of ``reference`` on the test titles, per
    task, with the 95% interval over the same resampled titles (``probe.intervals``'s
    draws): two runs compared as a method is compared with ``concat``. Reads the rows'
    embeddings (``WORK/emb/ROW``, written by evaluating the row)."""
    from mediafm_jax import probe
    from mediafm_jax.data.embeddings import EmbeddingStore
    from mediafm_jax.data.store import ShotStore
    from mediafm_jax.probe.linear import run_probe
    from mediafm_jax.probe.metrics import interval, title_bootstrap
    from mediafm_jax.probe.tasks import load_clips, load_tasks

    store = ShotStore(store_path)
    tasks = load_tasks(source / "probes.json")
    clips_by_task = load_clips(source / "clips.jsonl", tasks, store)
    out = {}
    for task in tasks:
        clips = clips_by_task[task.name]
        scored = []
        for name in (row, reference):
            emb = EmbeddingStore(work / "emb" / name)
            rows = probe.context_rows(None, store, np.unique(clips.title), emb)
            scored.append(run_probe(probe._pool(rows, clips), clips))
        draws = np.array(
            [
                [r.score_rows(rows, group) for r in scored]
                for rows, group in title_bootstrap(scored[0].title, 500, 0)
            ]
        )
        out[task.name] = {
            "delta": scored[0].score - scored[1].score,
            "ci95": interval(draws[:, 0] - draws[:, 1]),
        }
    return out


def val_mean(val: dict, method: str = "mediafm_context") -> float:
    """Mean validation score over the tasks: what a switch and a readout are chosen by."""
    return float(np.mean([val[t]["results"][method] for t in scored_tasks(val)]))


def table(out: Path) -> str:
    """The ablation table from every ``OUT/*.json``."""
    rows = {
        p.stem: json.loads(p.read_text())
        for p in sorted(out.glob("*.json"))
        if p.name != "versus.json"  # --versus pairs, a section of their own
    }
    order = [r for r in ROWS if r in rows] + [r for r in rows if r not in ROWS]
    tasks = scored_tasks(rows[order[0]]["test"]) if order else []
    head = "| row | switch | val mean | " + " | ".join(tasks) + " |"
    lines = [head, "|---|---|---:|" + "---:|" * len(tasks)]
    for name in order:
        row = rows[name]
        cells = []
        for task in tasks:
            t = row["test"][task]
            score = t["results"]["mediafm_context"]
            d = t["vs_concat"]["mediafm_context"]
            cells.append(
                f"{score:.3f} ({d['delta']:+.3f}; {d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f})"
            )
        lines.append(
            f"| {name} | {WHAT.get(name, row.get('what', ''))} | {val_mean(row['val']):.3f} | "
            + " | ".join(cells)
            + " |"
        )
    if order:
        test = rows[order[0]]["test"]
        for method in ("concat", "title_mean", "novelty", "mediafm_isolated"):
            if method not in test[tasks[0]]["results"]:
                continue
            cells = []
            for task in tasks:
                score = test[task]["results"][method]
                if method == "concat":
                    cells.append(f"{score:.3f}")
                    continue
                d = test[task]["vs_concat"][method]
                cells.append(
                    f"{score:.3f} ({d['delta']:+.3f}; {d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f})"
                )
            note = "label-free baseline" if method in ("title_mean", "novelty") else ""
            if method == "mediafm_isolated":
                note = f"clip alone ({order[0]})"
            lines.append(f"| {method} | {note} | | " + " | ".join(cells) + " |")
    for reference in ("title_mean", "novelty"):
        paired = [n for n in order if "vs_" + reference in rows[n]["test"][tasks[0]]]
        if not paired:
            continue
        lines += [
            "",
            f"Against hand-made context: `mediafm_context` minus `{reference}` on test titles, "
            "paired (95% interval over the same resampled titles).",
            "",
            "| row | " + " | ".join(tasks) + " |",
            "|---|" + "---:|" * len(tasks),
        ]
        for name in paired:
            cells = []
            for task in tasks:
                d = rows[name]["test"][task]["vs_" + reference]["mediafm_context"]
                cells.append(f"{d['delta']:+.3f} ({d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    runs = out / "versus.json"  # --versus ROW:REFERENCE
    if runs.exists() and order:
        lines += [
            "",
            "Against another run: `mediafm_context` of a row minus that of another row on test "
            "titles, paired (95% interval over the same resampled titles; `--versus`).",
            "",
            "| row minus reference | " + " | ".join(tasks) + " |",
            "|---|" + "---:|" * len(tasks),
        ]
        for pair, by_task in json.loads(runs.read_text()).items():
            cells = [
                f"{d['delta']:+.3f} ({d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f})"
                for d in (by_task[task] for task in tasks)
            ]
            lines.append(f"| {pair} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/ablations"))
    parser.add_argument("--out", type=Path, default=Path("experiments/ablations"))
    parser.add_argument("--rows", default="", help=f"comma-separated, of {list(ROWS)}")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument(
        "--catalog",
        choices=CATALOGS,
        default="demo",
        help="demo: the demo catalog; scenes: synth --structure scenes (use its own --work "
        "and --out)",
    )
    parser.add_argument("--choose-readout", metavar="ROW", default=None)
    parser.add_argument(
        "--trend", metavar="ROW", default=None, help="val scores at every checkpoint of ROW's run"
    )
    parser.add_argument("--trend-steps", default=None, help="comma-separated steps (default: all)")
    parser.add_argument(
        "--versus",
        default="",
        metavar="ROW:REFERENCE,...",
        help="paired test difference of two evaluated rows (OUT/versus.json)",
    )
    args = parser.parse_args(argv)
    pairs = [pair.split(":") for pair in args.versus.split(",") if pair]
    for pair in pairs:
        if len(pair) != 2 or not all(pair):
            print(
                f"--versus {args.versus}: expected ROW:REFERENCE[,ROW:REFERENCE]", file=sys.stderr
            )
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        source, store = prepare(args.work, args.catalog)
        for name in [r for r in args.rows.split(",") if r]:
            if name not in ROWS:
                print(f"unknown row {name!r}; rows: {list(ROWS)}", file=sys.stderr)
                return 2
            overrides, readout, run_name = ROWS[name]
            run = args.work / "runs" / run_name
            load_before = os.getloadavg()[0]
            seconds = train_row(run, overrides, store, args.steps)
            val, test = evaluate(run, readout, source, store, args.work, name)
            record = {
                "row": name,
                "catalog": args.catalog,
                "what": WHAT[name],
                "overrides": overrides,
                "readout": readout,
                "steps": args.steps,
                "train_seconds_this_call": round(seconds, 1),
                # the machine's 1-minute load average before training and after probing
                "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "val_mean_context": val_mean(val),
                "val": val,
                "test": test,
            }
            (args.out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
            print(f"{name}: val mean {val_mean(val):.3f}", flush=True)
    if args.choose_readout:
        choose_readout(args)
    if args.trend:
        source, store = prepare(args.work, args.catalog)
        overrides, readout, run_name = ROWS[args.trend]
        only = [int(x) for x in args.trend_steps.split(",")] if args.trend_steps else None
        scores = trend(args.work / "runs" / run_name, readout, source, store, args.work, only)
        (args.out / "trend").mkdir(exist_ok=True)
        path = args.out / "trend" / f"{args.trend}.json"
        if path.exists():  # steps measured in an earlier call stay
            scores = {**json.loads(path.read_text()), **{str(k): v for k, v in scores.items()}}
        path.write_text(json.dumps(scores, indent=1) + "\n")
    if pairs:
        unevaluated = [r for r in sum(pairs, []) if not (args.work / "emb" / r).exists()]
        if unevaluated:
            print(
                f"--versus: {args.work / 'emb' / unevaluated[0]}: no embeddings; evaluate "
                f"the row first (--rows {unevaluated[0]})",
                file=sys.stderr,
            )
            return 2
        source, store = prepare(args.work, args.catalog)
        path = args.out / "versus.json"
        done = json.loads(path.read_text()) if path.exists() else {}
        for row, reference in pairs:
            done[f"{row} minus {reference}"] = versus(args.work, source, store, row, reference)
        path.write_text(json.dumps(done, indent=1) + "\n")
    text = table(args.out)
    # OUT/NOTES.md (written by hand: how the rows were run, the load, what they say)
    # follows the table, which is rebuilt on every call
    notes = args.out / "NOTES.md"
    notes = "\n" + notes.read_text() if notes.exists() else ""
    title, tasks = "Demo-catalog ablations (issue 14)", "the five tasks"
    if args.catalog == "scenes":
        title = "Scene-catalog ablations (issue 23: `mediafm synth --structure scenes`)"
        tasks = "the tasks"
    (args.out / "README.md").write_text(
        f"# {title}\n\n"
        "Written by `experiments/ablations.py`. Each cell: `mediafm_context` test score "
        "(its difference from `concat`; 95% paired interval over resampled test titles). "
        f"`val mean`: mean `mediafm_context` score over {tasks} on validation titles, "
        "what switches are chosen by.\n\n" + text + "\n" + notes
    )
    print(text)
    return 0


def choose_readout(args: argparse.Namespace) -> None:
    """Records in ROW's run the readout with the best val mean (``probe.choose_readout``)."""
    from mediafm_jax import probe
    from mediafm_jax.data.store import ShotStore
    from mediafm_jax.readouts import DEFAULT_CANDIDATES, READOUTS

    source, store = prepare(args.work, args.catalog)
    _, _, run_name = ROWS[args.choose_readout]
    probe.choose_readout(
        args.work / "runs" / run_name,
        ShotStore(store),
        source / "probes.json",
        source / "clips.jsonl",
        # the structure readouts are candidates where the catalog has structure to see
        READOUTS if args.catalog == "scenes" else DEFAULT_CANDIDATES,
    )


if __name__ == "__main__":
    raise SystemExit(main())
