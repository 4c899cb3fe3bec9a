"""Muon + AdamW vs AdamW alone at the same step budget, on one store.

    python experiments/muon_vs_adamw.py --store STORE --config experiments/configs/demo.py \
        --steps 300 --lrs adamw=1e-3,muon_adamw=2e-3 --out runs/muon_vs_adamw

Each optimizer runs with its own learning rate (tuned once: pass ``--sweep`` to try a
small grid first). Prints a table of the final losses and writes both curves to a PNG.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--config", default="experiments/configs/demo.py")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lrs", default="adamw=1e-3,muon_adamw=2e-3")
    parser.add_argument("--sweep", action="store_true", help="try lr x {0.5, 1, 2} first")
    parser.add_argument("--out", default="runs/muon_vs_adamw")
    args = parser.parse_args()
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
