"""Muon + AdamW vs AdamW alone at the same step budget, on one store.

    python experiments/muon_vs_adamw.py --store STORE --config experiments/configs/demo.py \
        --steps 300 --lrs adamw=1e-3,muon_adamw=2e-3 --out runs/muon_vs_adamw

Each optimizer runs with its own learning rate (tuned once: pass ``--sweep`` to try a
small grid first). Prints a table of the final losses and writes both curves to a PNG.

    python experiments/muon_vs_adamw.py --paired experiments/ablations/optimizer \
        --work runs/ablations_scenes

``--paired`` (issue 23) reads the three-seed rows of ``experiments/ablations.py``
(``baseline``/``seed1``/``seed2``: the preset's Muon + AdamW; ``adamw``/``adamw_seed1``/
``adamw_seed2``: AdamW alone) and tabulates, per seed, both optimizers' final training
loss and probe scores and their difference, with the mean difference over seeds and its
95% t-interval (seed pairs share the catalog, the data order and the initialization;
only the optimizer differs). Writes ``PAIRED.md`` beside the rows.

    python experiments/muon_vs_adamw.py --paired experiments/ablations/scenes \
        --rows-from experiments/ablations/optimizer --labels "SSM 0.1,baseline" \
        --pairs scene_match_01:baseline,scene_match_01_seed1:seed1,scene_match_01_seed2:seed2

The same seed-paired table for any two sets of rows (``--pairs ROW:REFERENCE`` per seed,
rows found in ``--paired`` or else in ``--rows-from``), written to ``PAIRED_<ROW>.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from scipy import stats

from mediafm_jax import config as config_lib
from mediafm_jax import train


def run(base, kind: str, lr: float, steps: int, store: str, workdir: Path) -> list[dict]:
    shutil.rmtree(workdir, ignore_errors=True)
    cfg = config_lib.apply_overrides(
        base,
        [
            f"optim.kind={kind}",
            f"optim.learning_rate={lr}",
            f"train.steps={steps}",
            f"checkpoint.every_steps={steps}",
            "train.log_every=10",
        ],
    )
    train.train(cfg, store, workdir)
    return [json.loads(line) for line in (workdir / "metrics.jsonl").open()]


PAIRS = (("baseline", "adamw"), ("seed1", "adamw_seed1"), ("seed2", "adamw_seed2"))


def final_loss(path: Path) -> float:
    """Mean training loss of a run's last three records (150 steps at log_every 50)."""
    records = [json.loads(line) for line in path.open()]
    return float(np.mean([r["loss"] for r in records[-3:]]))


def paired(
    rows_dir: Path,
    work: Path,
    readout: str = "",
    pairs=PAIRS,
    labels: tuple[str, str] = ("Muon", "AdamW"),
    rows_from: tuple[Path, ...] = (),
) -> str:
    """The seed-paired table of Muon + AdamW against AdamW (see the module docstring), or
    of any ``pairs`` (row, reference) per seed, named ``labels``; ``readout``: the rows'
    name suffix (``_distance_recur``: the same runs, that readout). A row is read from
    ``rows_dir``, else from the first of ``rows_from`` that has it."""
    found = {
        name: next(
            (
                d / f"{name}{readout}.json"
                for d in (rows_dir, *rows_from)
                if (d / f"{name}{readout}.json").exists()
            ),
            None,
        )
        for pair in pairs
        for name in pair
    }
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise SystemExit(
            f"{rows_dir / (missing[0] + readout)}.json: no such row ({len(missing)} missing); "
            f"run experiments/ablations.py --catalog scenes --out {rows_dir} --rows ... first"
        )
    columns: dict[str, list[tuple[float, float]]] = {}
    for muon, adamw in pairs:
        pair = [json.loads(found[name].read_text()) for name in (muon, adamw)]
        runs = [work / "runs" / name for name in (muon, adamw)]
        columns.setdefault("final loss (lower is better)", []).append(
            tuple(final_loss(run / "metrics.jsonl") for run in runs)
        )
        columns.setdefault("val mean", []).append(tuple(r["val_mean_context"] for r in pair))
        for task in pair[0]["test"]:
            if pair[0]["test"][task].get("results"):
                columns.setdefault(f"test {task}", []).append(
                    tuple(r["test"][task]["results"]["mediafm_context"] for r in pair)
                )
    a, b = labels
    lines = [
        "| measure | "
        + " | ".join(f"seed {i}: {a} / {b}" for i in range(len(pairs)))
        + f" | {a} minus {b}, mean over seeds (95% t-interval) |",
        "|---|" + "---:|" * (len(pairs) + 1),
    ]
    t = stats.t.ppf(0.975, len(pairs) - 1)
    for measure, values in columns.items():
        delta = np.array([m - a for m, a in values])
        half = t * delta.std(ddof=1) / np.sqrt(len(delta))
        cells = [f"{m:.3f} / {a:.3f}" for m, a in values]
        lines.append(
            f"| {measure} | " + " | ".join(cells) + f" | {delta.mean():+.3f} "
            f"({delta.mean() - half:+.3f} to {delta.mean() + half:+.3f}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store")
    parser.add_argument("--paired", type=Path, default=None, help="ablation rows folder")
    parser.add_argument("--work", type=Path, default=Path("runs/ablations_scenes"))
    parser.add_argument("--pairs", default="", help="ROW:REFERENCE per seed (default: Muon's)")
    parser.add_argument("--labels", default="Muon,AdamW", help="the two sides' names")
    parser.add_argument("--rows-from", type=Path, action="append", default=[])
    parser.add_argument("--config", default="experiments/configs/demo.py")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lrs", default="adamw=1e-3,muon_adamw=2e-3")
    parser.add_argument("--sweep", action="store_true", help="try lr x {0.5, 1, 2} first")
    parser.add_argument("--out", default="runs/muon_vs_adamw")
    args = parser.parse_args()
    if args.paired:
        pairs = [tuple(p.split(":")) for p in args.pairs.split(",") if p] or list(PAIRS)
        labels = tuple(args.labels.split(","))
        if any(len(p) != 2 or not all(p) for p in pairs) or len(labels) != 2:
            parser.error("--pairs: ROW:REFERENCE,...; --labels: two names, comma-separated")
        text = ""
        for suffix, readout in (("", "last"), ("_distance_recur", "distance+recur")):
            if (args.paired / f"{pairs[0][0]}{suffix}.json").exists():
                table = paired(args.paired, args.work, suffix, pairs, labels, args.rows_from)
                text += f"\nReadout `{readout}`:\n\n" + table + "\n"
        print(text)
        if not args.pairs:
            (args.paired / "PAIRED.md").write_text(
                "# Muon + AdamW vs AdamW over three seeds (`experiments/muon_vs_adamw.py "
                "--paired`)\n\nScenes catalog, demo preset, 300 steps; AdamW alone at the "
                "preset's AdamW learning rate. Rows: `experiments/ablations.py`.\n" + text
            )
            return
        (args.paired / f"PAIRED_{pairs[0][0]}.md").write_text(
            f"# {labels[0]} vs {labels[1]} over {len(pairs)} seeds (`experiments/"
            f"muon_vs_adamw.py --paired --pairs {args.pairs}`)\n\nScenes catalog, demo "
            "preset, 300 steps. Rows: `experiments/ablations.py`.\n" + text
        )
        return
    if not args.store:
        parser.error("--store is required (or --paired)")
    base = config_lib.load_config_file(args.config)
    out = Path(args.out)
    lrs = {k: float(v) for k, v in (item.split("=") for item in args.lrs.split(","))}
    final = lambda records: sum(r["loss"] for r in records[-3:]) / len(records[-3:])
    if args.sweep:
        for kind, lr in list(lrs.items()):
            scores = {
                f: final(run(base, kind, lr * f, args.steps, args.store, out / "sweep"))
                for f in (0.5, 1, 2)
            }
            print(kind, {lr * f: round(s, 4) for f, s in scores.items()})
            lrs[kind] = lr * min(scores, key=scores.get)
    curves = {
        kind: run(base, kind, lr, args.steps, args.store, out / kind) for kind, lr in lrs.items()
    }
    muon_lr = base.optim.muon_learning_rate or lrs.get("muon_adamw")
    print(f"\n{'optimizer':<12} {'lr':>8} {'muon lr':>8} {'final loss (mean of last 3 logs)':>34}")
    for kind, records in curves.items():
        muon = f"{muon_lr:.1e}" if kind == "muon_adamw" else "-"
        print(f"{kind:<12} {lrs[kind]:>8.1e} {muon:>8} {final(records):>34.4f}")
    train.plot_loss_curve(
        {f"{kind} (lr {lrs[kind]:.0e})": out / kind / "metrics.jsonl" for kind in curves},
        out / "muon_vs_adamw.png",
        title="Muon + AdamW vs AdamW",
    )
    (out / "summary.json").write_text(
        json.dumps({k: {"lr": lrs[k], "final_loss": final(v)} for k, v in curves.items()})
    )
    print(f"plot: {out / 'muon_vs_adamw.png'}")


if __name__ == "__main__":
    main()
