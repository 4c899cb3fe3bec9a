"""The ``mediafm`` command line: parse, call, report.

Expected failures (bad input, bad config, incomplete store) print one line naming what is
wrong and where, and exit with code 2. (Contract: docs/DESIGN.md §3.4.)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from mediafm_jax.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USER_ERROR,
    NonFiniteLossError,
    Terminated,
    UsageError,
    UserError,
    sigterm_raises,
    validation_message,
)
from mediafm_jax.readouts import DEFAULT_CANDIDATES, READOUTS


def _cmd_synth(args: argparse.Namespace) -> None:
    import pydantic

    from mediafm_jax.data import synthetic

    try:
        dims = [int(d) for d in args.dims.split(",")] if args.dims else [768, 768, 768, 768]
    except ValueError:
        dims = []
    if len(dims) != 4:
        raise UsageError(f"--dims {args.dims}: takes VIDEO,AUDIO,TEXT,TITLE, e.g. 128,128,128,128")
    try:
        config = synthetic.SynthConfig(
            titles=args.titles,
            seed=args.seed,
            video_dim=dims[0],
            audio_dim=dims[1],
            text_dim=dims[2],
            title_dim=dims[3],
            structure=args.structure,
        )
    except pydantic.ValidationError as err:
        raise UsageError(validation_message(err, "synth")) from None
    out = synthetic.write_catalog(args.out, config, overwrite=args.overwrite)
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

    from mediafm_jax import outputs
    from mediafm_jax.data import embeddings
    from mediafm_jax.data import store as store_lib

    path = _info_path(args)
    kind = outputs.kind_of(path)  # the marker: a manifest may be damaged
    if kind not in (None, "store", "embeddings"):
        raise UsageError(
            f"{path}: is a {kind} folder; info reads a shot store (ingest) or an embedding "
            "store (embed)"
        )
    is_emb = kind == "embeddings"
    manifest = store_lib.read_manifest(path, embeddings.REMEDY if is_emb else "re-ingest")
    if manifest is not None and manifest.get("kind") == embeddings.KIND:
        _info_embeddings(path, args.verify)
        return
    shots = store_lib.ShotStore(path)
    lengths = np.diff(shots.offsets)
    print(f"store      {path}")
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
    size = store_lib.disk_bytes(path)
    print(f"on disk    {size / 1e6:.1f} MB" if size is not None else "on disk    (object store)")
    if args.verify:
        _verify_store(shots)


def _info_path(args: argparse.Namespace) -> str:
    """The folder ``info`` reads: the positional, or ``--store`` / ``--emb`` as every other
    command spells it (``--emb`` must then be an embedding store, ``--store`` a shot store)."""
    from mediafm_jax import outputs

    given = [
        (f, v) for f, v in (("", args.path), ("--store", args.store), ("--emb", args.emb)) if v
    ]
    if len(given) != 1:
        raise UsageError("give one folder: STORE or EMB (or --store STORE, or --emb EMB)")
    flag, path = given[0]
    kind = outputs.kind_of(path)
    if flag == "--store" and kind == "embeddings":
        raise UsageError(f"--store {path}: is an embedding store (--emb, or no flag)")
    if flag == "--emb" and kind != "embeddings":
        what = "a shot store" if kind == "store" else "not an embedding store"
        raise UsageError(f"--emb {path}: is {what} (--store, or no flag)")
    return path


def _info_embeddings(path: str, verify: bool) -> None:
    from mediafm_jax.data import store as store_lib
    from mediafm_jax.data.embeddings import EmbeddingStore

    emb = EmbeddingStore(path)
    made = emb.manifest
    print(f"store      {path} (embeddings)")
    print(f"made by    run {made.get('run')}, step {made.get('step')}, readout {emb.layers}")
    print(f"from       {made.get('shot_store')}")
    print(f"titles     {len(emb.title_ids)}")
    print(f"shots      {emb.num_shots}, dim {made.get('shot_dim')}")
    size = store_lib.disk_bytes(path)
    print(f"on disk    {size / 1e6:.1f} MB" if size is not None else "on disk    (object store)")
    if verify:
        _verify_store(emb)


def _verify_store(shots) -> None:
    import time

    started = time.perf_counter()
    files, size = shots.verify()
    seconds = time.perf_counter() - started
    print(f"verified   {files} files, {size / 1e6:.1f} MB in {seconds:.1f}s: intact")


def _add_distributed_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coordinator", help="host:port of process 0 (multi-process runs)")
    p.add_argument("--num-processes", type=int)
    p.add_argument("--process-id", type=int)


def _start_distributed(args: argparse.Namespace) -> None:
    from mediafm_jax import sharding

    sharding.maybe_initialize_distributed(args.coordinator, args.num_processes, args.process_id)


def _cmd_train(args: argparse.Namespace) -> int:
    from mediafm_jax import config as config_lib

    _start_distributed(args)
    from mediafm_jax import train

    config = config_lib.apply_overrides(config_lib.load_config_file(args.config), args.set)
    if args.verify_store:
        from mediafm_jax.data.store import ShotStore

        _verify_store(ShotStore(args.store))
    result = train.train(
        config,
        args.store,
        args.workdir,
        stop_at=args.stop_at,
        allow_config_change=args.allow_config_change,
    )
    # preempted: saved and said so; not done, so not 0 (a script must not go on to embed)
    return EXIT_TERMINATED if result.get("preempted") else 0


def _cmd_embed(args: argparse.Namespace) -> None:
    _start_distributed(args)
    from mediafm_jax import embed, outputs
    from mediafm_jax.data import store as store_lib

    inputs = [args.store, args.workdir]
    outputs.check_output(args.out, "embeddings", overwrite=args.overwrite, inputs=inputs)
    store = store_lib.ShotStore(args.store)
    embedder = embed.Embedder(args.workdir, step=args.step, layers=args.layers)
    result = embed.embed_store(embedder, store, args.out, overwrite=args.overwrite)
    if result is not None:  # process 0, the one that wrote
        print(
            f"wrote {store.num_shots} shot and {store.num_titles} [CLS] embeddings "
            f"(dim {embedder.shot_dim}, readout {embedder.layers}, step {embedder.step}) "
            f"to {result.root}"
        )


def _readout_candidates(text: str) -> tuple[str, ...]:
    """``--choose-readout``'s value: ``default`` (the five of ``readouts.DEFAULT_CANDIDATES``),
    ``all`` (every readout) or a comma-separated list."""
    if text in ("default", "all"):
        return DEFAULT_CANDIDATES if text == "default" else READOUTS
    names = tuple(name.strip() for name in text.split(","))
    unknown = [name for name in names if name not in READOUTS]
    if unknown:
        raise UsageError(
            f"--choose-readout {text}: unknown readout {', '.join(map(repr, unknown))}; "
            f"expected default, all or a comma-separated list of {', '.join(READOUTS)}"
        )
    return names


def _cmd_probe(args: argparse.Namespace) -> None:
    _start_distributed(args)
    import jax

    from mediafm_jax import embed, outputs, probe
    from mediafm_jax.data.embeddings import EmbeddingStore
    from mediafm_jax.data.store import ShotStore

    if args.choose_readout and args.layers:
        raise UsageError("--choose-readout picks the readout; drop --layers")
    candidates = _readout_candidates(args.choose_readout) if args.choose_readout else ()
    store = ShotStore(args.store)
    layers = args.layers
    if args.bootstrap < 0:  # was a ValueError deep in the bootstrap, after the probes
        raise UsageError(f"--bootstrap {args.bootstrap}: expected a count >= 0 (0: no intervals)")
    # --out is checked before the model loads, minutes of choosing and the run's record
    inputs = [args.store, args.tasks, args.clips, args.workdir] + ([args.emb] if args.emb else [])
    outputs.check_output(args.out, "report", overwrite=args.overwrite, inputs=inputs)
    if args.choose_readout:
        # every process computes the same choice: none waits for process 0's record
        layers, _ = probe.choose_readout(
            args.workdir, store, args.tasks, args.clips, candidates, step=args.step
        )
    embedder = embed.Embedder(args.workdir, step=args.step, layers=layers)
    emb = EmbeddingStore(args.emb) if args.emb else None
    results = probe.run_probes(
        embedder,
        store,
        args.tasks,
        args.clips,
        args.out,
        emb=emb,
        bootstrap=args.bootstrap,
        overwrite=args.overwrite,
    )
    if jax.process_index() == 0:
        print(probe.markdown_table(results))
        print(f"report: {args.out}/report.json, {args.out}/report.md, {args.out}/report.png")


def _parse_clip(text: str) -> tuple[int, int]:
    start, sep, end = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(start), int(end)
    except ValueError:
        raise UsageError(f"--clip {text}: expected START:END shot indices, e.g. 10:14") from None


def _cmd_search(args: argparse.Namespace) -> None:
    import json

    from mediafm_jax import search, sheet
    from mediafm_jax.data import source
    from mediafm_jax.data.store import ShotStore

    search.capped_k(args.k, args.k)  # k < 1 is one line before any work
    if (args.shot is None) == (args.clip is None):
        raise UsageError("give --shot I or --clip START:END (one of them)")
    clip = _parse_clip(args.clip) if args.clip is not None else None
    store = ShotStore(args.store)
    src = args.src or store.manifest.get("source")
    if args.src and not os.path.isdir(args.src):
        what = "is not a folder" if os.path.exists(args.src) else "folder does not exist"
        raise UsageError(f"--src {args.src}: {what}")
    inputs = (args.store, args.emb, os.path.join(src, source.THUMBS) if src else None)
    if args.sheet:  # refuse a bad sheet path before any work
        sheet.check_sheet_path(args.sheet, args.overwrite, inputs)
    query = search.resolve_query(store, store.shot_times(), args.title, args.shot, clip)
    searcher = search.Searcher(
        store, args.emb, method=args.method, backend=args.backend, index_cache=True
    )
    hits, note = searcher.neighbours(
        args.title, args.shot, k=args.k, clip=clip, exclude_title=args.exclude_title
    )
    if note:
        print(f"search: {note}", file=sys.stderr)
    table = search.format_hits(query, hits, args.method, searcher.index.name, store.num_shots)
    if args.json:
        record = {
            "query": query.as_dict(),
            "method": args.method,
            "engine": searcher.index.name,
            "hits": [h.as_dict() for h in hits],
        }
        print(json.dumps(record))
    else:
        print(table)
    if args.sheet:
        if src is None or not os.path.isdir(src):
            where = f"source {src} is gone" if src else "no --src and the store names no source"
            print(f"search: {where}: no thumbnails, drawing a timeline", file=sys.stderr)
            src = None
        kind, count = sheet.write_sheet(
            args.sheet,
            query,
            hits,
            store,
            src,
            header=table.splitlines()[0],
            overwrite=args.overwrite,
            inputs=inputs,
        )
        note = (
            f"{count} panels"
            if kind == "thumbnails"
            else f"timeline of {count} titles (no thumbnails found)"
        )
        print(f"sheet: {os.path.abspath(args.sheet)} ({note})", file=sys.stderr)


def _cmd_browse(args: argparse.Namespace) -> int:
    from mediafm_jax.browse import BrowseServer, Catalog
    from mediafm_jax.browse.app import is_loopback

    catalog = Catalog(args.store, args.emb, args.src, args.report)
    server = BrowseServer(catalog, args.host, args.port)
    for note in catalog.notes:
        print(f"browse: {note}", file=sys.stderr)
    if not is_loopback(args.host):
        print(
            f"browse: listening on {args.host}: anyone who can reach this machine can see "
            "the catalog",
            file=sys.stderr,
        )
    print(f"browse: {server.url}  (Ctrl-C to stop)", flush=True)
    server.run()
    return 0


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


def _cmd_extract(args: argparse.Namespace) -> int:
    import dataclasses

    from mediafm_jax import extract

    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(extract.Settings)
        if hasattr(args, f.name)
    }
    settings = extract.Settings.parse("settings", **given)
    summary = extract.extract(args.inputs, args.out, settings, dry_run=args.dry_run)
    return 2 if summary.failed else 0


class _ExtractHelp(argparse.HelpFormatter):
    """Shows each extract setting's default, read from ``extract.Settings`` only when help
    is printed (the settings' home; importing it costs every other command time)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        import dataclasses

        from mediafm_jax.extract.settings import Settings

        defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
        if defaults.get(action.dest) not in (None, True):
            return f"{action.help} (default {defaults[action.dest]})"
        return action.help


def _cmd_demo(args: argparse.Namespace) -> int:
    from mediafm_jax import demo

    if args.video:
        demo.run_video_demo(args.out or "demo_video_out")
        return 0
    try:
        demo.run_demo(args.out or "demo_out", titles=args.titles, steps=args.steps)
    except demo.DemoStopped as stop:
        print(f"mediafm demo: {stop}", file=sys.stderr)
        return stop.exit_code
    return 0


def build_parser() -> argparse.ArgumentParser:
    from mediafm_jax.data.synthetic import STRUCTURES

    parser = argparse.ArgumentParser(prog="mediafm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic catalog in the ingest-source layout")
    p.add_argument("out")
    p.add_argument("--titles", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dims", help="VIDEO,AUDIO,TEXT,TITLE dims (default 768,768,768,768)")
    p.add_argument(
        "--structure",
        choices=STRUCTURES,
        default="story",
        help="story: the demo's five tasks; scenes: scene changes and recurring threads, "
        "with the scene_boundary and recurrence tasks",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier synthetic catalog")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("ingest", help="validate a source folder and write a shot store")
    p.add_argument("src")
    p.add_argument("store")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("info", help="summarize a shot store or an embedding store")
    p.add_argument(
        "path", nargs="?", metavar="STORE|EMB", help="a shot store (ingest) or embeddings (embed)"
    )
    p.add_argument("--store", help="the same, spelled as in other commands (a shot store)")
    p.add_argument("--emb", help="the same, spelled as in other commands (an embedding store)")
    p.add_argument("--verify", action="store_true", help="hash every byte against the manifest")
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
    p.add_argument("--verify-store", action="store_true", help="hash every store byte first")
    _add_distributed_flags(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("embed", help="write in-context shot embeddings of a whole store")
    p.add_argument("--workdir", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    p.add_argument(
        "--layers",
        choices=READOUTS,
        default=None,
        help="readout (default: the run's readout.json, chosen on validation titles; else last)",
    )
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
    p.add_argument(
        "--layers",
        choices=READOUTS,
        default=None,
        help="readout (default: the run's readout.json, chosen on validation titles; else last)",
    )
    p.add_argument(
        "--choose-readout",
        nargs="?",
        const="default",
        metavar="CANDIDATES",
        help="first pick the readout on validation titles and record it in the run "
        "(RUN/readout.json; embed and search then use it too), among CANDIDATES: "
        "default (the first five readouts), all (the structure readouts too) or R1,R2,...",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report at --out")
    _add_distributed_flags(p)
    p.set_defaults(func=_cmd_probe)

    p = sub.add_parser("search", help="nearest shots to a shot or clip, by cosine")
    p.add_argument("--emb", required=True, help="embedding store from `mediafm embed`")
    p.add_argument("--store", required=True, help="the shot store it was embedded from")
    p.add_argument("--title", required=True, help="title id of the query")
    p.add_argument("--shot", type=int, help="query shot index within the title")
    p.add_argument("--clip", help="query clip START:END (shots, END exclusive): mean of its shots")
    p.add_argument("--k", type=int, default=10, help="neighbours (default %(default)s)")
    p.add_argument(
        "--method",
        choices=("context", "concat"),
        default="context",
        help="context: in-context embeddings; concat: fused input vectors (baseline)",
    )
    p.add_argument("--exclude-title", action="store_true", help="skip the query's own title")
    p.add_argument(
        "--backend",
        choices=("auto", "exact", "faiss"),
        default="auto",
        help="auto: exact below 200k shots, else a faiss IVF index when installed",
    )
    p.add_argument("--sheet", help="write a contact sheet (PNG) of the query and neighbours")
    p.add_argument("--src", help="ingest source with thumbs/ (default: the store's source)")
    p.add_argument("--overwrite", action="store_true", help="let --sheet replace any file")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("browse", help="a local web page over a catalog (read-only)")
    p.add_argument("--store", required=True, help="the shot store")
    p.add_argument("--emb", help="embedding store (`mediafm embed`) for in-context neighbours")
    p.add_argument("--src", help="ingest source with thumbs/, text/ (default: the store's source)")
    p.add_argument("--report", help="a probe report folder (`mediafm probe --out`)")
    p.add_argument("--port", type=int, default=8000, help="default %(default)s; 0: any free port")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default %(default)s: this machine only)",
    )
    p.set_defaults(func=_cmd_browse)

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

    p = sub.add_parser(
        "extract",
        help="video files/folders -> shots with video, audio and text embeddings (an ingest source)",
        description="Writes OUT_SRC/titles.jsonl, shots/<title>.npz, thumbs/<title>/, text/<title>.json "
        "and extract.json. Exit code 2 when any video failed (the others are still written).",
        formatter_class=_ExtractHelp,
        argument_default=argparse.SUPPRESS,  # unset settings take extract.Settings' defaults
    )
    p.add_argument("inputs", nargs="+", metavar="VIDEOS", help="video files or folders of them")
    p.add_argument("out", metavar="OUT_SRC")
    p.add_argument(
        "--workers", type=int, help="parallel processes; with --ray, the actor pool's size"
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run the videos as a Ray Data job on this cluster (no ADDRESS: $RAY_ADDRESS, "
        "else a new one here); OUT_SRC and the videos on a filesystem every node sees",
    )
    p.add_argument(
        "--shots",
        help="shot detector: adaptive (PySceneDetect), transnetv2 (~10 frames/s on a CPU) "
        "or module:Class",
    )
    p.add_argument("--min-shot-s", type=float, help="shortest shot between cuts, seconds")
    p.add_argument("--frames-per-shot", type=int, help="frames averaged per shot")
    p.add_argument("--video-encoder", help="registered name or module:Class")
    p.add_argument("--audio-encoder", help="registered name or module:Class")
    p.add_argument("--text-encoder", help="registered name or module:Class")
    p.add_argument(
        "--no-speech",
        dest="speech",
        action="store_false",
        help="no speech to text without subtitles",
    )
    p.add_argument("--silence-dbfs", type=float, help="a shot quieter than this has no audio")
    p.add_argument("--thumb-width", type=int, help="thumbnail width, pixels")
    p.add_argument(
        "--subtitle-encoding",
        help="read sidecar subtitles in this encoding (default: BOM, UTF-8, else detected)",
    )
    p.add_argument(
        "--dry-run", action="store_true", default=False, help="list what would be done, do nothing"
    )
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("demo", help="synth -> ingest -> train -> embed -> probe, on this CPU")
    p.add_argument("--out", help="default demo_out (demo_video_out with --video)")
    p.add_argument(
        "--video", action="store_true", help="real media: mux a clip -> extract -> ingest -> sheet"
    )
    p.add_argument("--titles", type=int, default=120)
    p.add_argument("--steps", type=int, default=None, help="override the demo preset's steps")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with sigterm_raises():
            code = args.func(args)
    except UserError as err:
        print(f"mediafm {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except NonFiniteLossError as err:
        print(f"mediafm {args.command}: error: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    except Terminated:  # SIGTERM: no traceback, and not Ctrl-C's code
        print(f"mediafm {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:  # Ctrl-C: no traceback
        print(f"mediafm {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `mediafm info STORE | head`: the reader left early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return EXIT_BROKEN_PIPE
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
