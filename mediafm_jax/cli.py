"""The ``mediafm`` command line (DESIGN.md §3.4): parse, call, report.

Expected failures (bad input, bad config, incomplete store) print one line naming what is
wrong and where, and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mediafm_jax.errors import (
    EXIT_DIVERGED,
    EXIT_USER_ERROR,
    NonFiniteLossError,
    UsageError,
    UserError,
)


def _cmd_synth(args: argparse.Namespace) -> None:
    from mediafm_jax.data import synthetic

    try:
        dims = [int(d) for d in args.dims.split(",")] if args.dims else [768, 768, 768, 768]
    except ValueError:
        dims = []
    if len(dims) != 4 or min(dims) < 1:
        raise UsageError(f"--dims {args.dims}: takes VIDEO,AUDIO,TEXT,TITLE, e.g. 128,128,128,128")
    if args.titles < 1:
        raise UsageError(f"--titles {args.titles}: expected a count >= 1")
    config = synthetic.SynthConfig(
        titles=args.titles,
        seed=args.seed,
        video_dim=dims[0],
        audio_dim=dims[1],
        text_dim=dims[2],
        title_dim=dims[3],
    )
    out = synthetic.write_catalog(args.out, config)
    print(f"wrote {config.titles} titles to {out}")


def _cmd_ingest(args: argparse.Namespace) -> None:
    from mediafm_jax.data import ingest

    summary = ingest.ingest(args.src, args.store, overwrite=args.overwrite)
    mb = summary.bytes_written / 1e6
    print(
        f"ingested {summary.titles} titles, {summary.shots} shots into {summary.store} "
        f"({mb:.0f} MB in {summary.seconds:.1f}s, {mb / max(summary.seconds, 1e-9):.0f} MB/s)"
    )


def _cmd_info(args: argparse.Namespace) -> None:
    from collections import Counter

    import numpy as np

    from mediafm_jax.data import store as store_lib

    shots = store_lib.ShotStore(args.store)
    lengths = np.diff(shots.offsets)
    print(f"store      {args.store}")
    print(f"titles     {shots.num_titles}")
    print(
        f"shots      {shots.num_shots} (per title: min {lengths.min()}, "
        f"median {int(np.median(lengths))}, max {lengths.max()})"
    )
    for index, modality in enumerate(shots.modalities):
        coverage = shots.present[:, index].mean()
        print(
            f"modality   {modality.name:<6} dim {modality.dim:<5} present in {coverage:6.1%} of shots"
        )
    print(f"title dim  {shots.title_dim}")
    splits = Counter(s or "(none)" for s in shots.splits)
    print("splits     " + ", ".join(f"{k}: {v}" for k, v in sorted(splits.items())))
    size = store_lib.disk_bytes(args.store)
    print(f"on disk    {size / 1e6:.1f} MB" if size is not None else "on disk    (object store)")


def _add_distributed_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coordinator", help="host:port of process 0 (multi-process runs)")
    p.add_argument("--num-processes", type=int)
    p.add_argument("--process-id", type=int)


def _start_distributed(args: argparse.Namespace) -> None:
    from mediafm_jax import sharding

    sharding.maybe_initialize_distributed(args.coordinator, args.num_processes, args.process_id)


def _cmd_train(args: argparse.Namespace) -> None:
    from mediafm_jax import config as config_lib

    _start_distributed(args)
    from mediafm_jax import train

    config = config_lib.apply_overrides(config_lib.load_config_file(args.config), args.set)
    train.train_and_evaluate(
        config,
        args.store,
        args.workdir,
        stop_at=args.stop_at,
        allow_config_change=args.allow_config_change,
    )


def _cmd_embed(args: argparse.Namespace) -> None:
    _start_distributed(args)
    import os

    from mediafm_jax import embed
    from mediafm_jax.data import store as store_lib

    if store_lib.is_local(args.out) and os.path.exists(args.out) and not args.overwrite:
        raise UsageError(f"{args.out}: already exists (pass --overwrite to replace it)")
    store = store_lib.ShotStore(args.store)
    embedder = embed.Embedder(args.workdir, step=args.step, layers=args.layers)
    result = embed.embed_store(embedder, store, args.out)
    if result is not None:  # process 0, the one that wrote
        print(
            f"wrote {store.num_shots} shot and {store.num_titles} [CLS] embeddings "
            f"(dim {embedder.hidden_size}, step {embedder.step}) to {result.root}"
        )


def _cmd_probe(args: argparse.Namespace) -> None:
    _start_distributed(args)
    import jax

    from mediafm_jax import embed, probe
    from mediafm_jax.data.store import ShotStore

    embedder = embed.Embedder(args.workdir, step=args.step, layers=args.layers)
    emb = embed.EmbeddingStore(args.emb) if args.emb else None
    results = probe.run_probes(
        embedder,
        ShotStore(args.store),
        args.tasks,
        args.clips,
        args.out,
        emb=emb,
        bootstrap=args.bootstrap,
    )
    if jax.process_index() == 0:
        print(probe.markdown_table(results))
        print(f"report: {args.out}/report.json, {args.out}/report.md, {args.out}/report.png")


def _cmd_plan(args: argparse.Namespace) -> None:
    from mediafm_jax import config as config_lib
    from mediafm_jax import plan

    config = config_lib.apply_overrides(config_lib.load_config_file(args.config), args.set)
    chip = plan.CHIPS[args.kind]
    try:
        result = plan.make_plan(
            config,
            args.devices,
            chip,
            fused=args.fused,
            title=args.title_dim,
            catalog_shots=args.catalog_shots,
            mfu=args.mfu,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(plan.format_plan(result, chip, args.devices, args.mfu))


def _cmd_demo(args: argparse.Namespace) -> int:
    from mediafm_jax import demo

    try:
        demo.run_demo(args.out, titles=args.titles, steps=args.steps)
    except demo.DemoStopped as stop:
        print(f"mediafm demo: {stop}", file=sys.stderr)
        return stop.exit_code
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mediafm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic catalog in the ingest-source layout")
    p.add_argument("out")
    p.add_argument("--titles", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dims", help="VIDEO,AUDIO,TEXT,TITLE dims (default 768,768,768,768)")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("ingest", help="validate a source folder and write a shot store")
    p.add_argument("src")
    p.add_argument("store")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("info", help="summarize a shot store")
    p.add_argument("store")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("train", help="train (or resume) a run")
    p.add_argument("--config", required=True, help="experiments/configs/X.py[:arg]")
    p.add_argument("--store", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--stop-at", type=int, help="checkpoint and stop after this step (time-boxed jobs)"
    )
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume with other settings than the run's (recorded in config_history.jsonl)",
    )
    _add_distributed_flags(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("embed", help="write in-context shot embeddings of a whole store")
    p.add_argument("--workdir", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    p.add_argument("--layers", choices=("last", "mean"), default="last")
    p.add_argument("--overwrite", action="store_true")
    _add_distributed_flags(p)
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser("probe", help="linear probes of clip embeddings; writes a report")
    p.add_argument("--workdir", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--tasks", required=True, help="probes.json")
    p.add_argument("--clips", required=True, help="clips.jsonl")
    p.add_argument("--out", required=True)
    p.add_argument("--emb", help="an embedding store from `mediafm embed` to reuse")
    p.add_argument(
        "--bootstrap",
        type=int,
        default=500,
        help="test-title resamples for 95%% intervals (0: none; default %(default)s)",
    )
    p.add_argument("--step", type=int)
    p.add_argument("--layers", choices=("last", "mean"), default="last")
    _add_distributed_flags(p)
    p.set_defaults(func=_cmd_probe)

    p = sub.add_parser("plan", help="parameters, FLOPs, memory and input bandwidth on a target")
    p.add_argument("--config", required=True)
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--kind", choices=("v5p", "v5e", "h100", "h200"), default="h100")
    p.add_argument("--fused", type=int, default=2304, help="fused shot dim of the catalog")
    p.add_argument("--title-dim", type=int, default=768)
    p.add_argument("--catalog-shots", type=int, default=10_000_000)
    p.add_argument("--mfu", type=float, default=0.45)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("demo", help="synth -> ingest -> train -> embed -> probe, on this CPU")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--titles", type=int, default=120)
    p.add_argument("--steps", type=int, default=None, help="override the demo preset's steps")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except UserError as err:
        print(f"mediafm {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except NonFiniteLossError as err:
        print(f"mediafm {args.command}: error: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
