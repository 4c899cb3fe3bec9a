"""`mediafm demo`: synth -> ingest -> train -> embed -> probe on a synthetic catalog.

Sized to finish in minutes on a 2-core laptop CPU (demo preset; 128-d modalities).
`mediafm demo --video` instead runs the raw-video front end on real media from wheels:
mux a clip (bikes.mp4's cuts + a spoken sentence) -> extract -> ingest -> contact sheet.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from mediafm_jax import outputs
from mediafm_jax.errors import ConfigError, ExtractError, UsageError, validation_message

# what the demos write beside their nested outputs (source, store, run, ... carry their own
# markers): the marker lists it, so a user's file in the demo folder stops a rerun
DEMO_LAYOUT = ("videos/bikes_beckett.mp4", "videos/bikes.mp4", "contact_sheet.png")


def _fresh_out(out: Path) -> None:
    """Recreates ``out`` if it is missing, empty or an earlier demo of ours; refuses otherwise."""
    outputs.check_output(out, "demo", overwrite=True)
    folder = Path(os.path.realpath(out))  # through a link: the folder, never the link
    if folder.exists():  # an earlier demo of ours (checked above): replaced
        shutil.rmtree(folder)
    outputs.claim_folder(folder, "demo", owns=DEMO_LAYOUT)


def run_video_demo(out: str | Path) -> Path:
    """Real media in, shots out: the extract -> ingest path and a contact sheet (PNG)."""
    from mediafm_jax.data import ingest
    from mediafm_jax.extract import extract, media

    out = Path(out)
    _fresh_out(out)
    started = time.perf_counter()
    print("[1/4] mux: bikes.mp4 (5 real cuts) twice + beckett.wav spoken from 3 s", flush=True)
    videos = out / "videos"
    media.mux_clip(videos / "bikes_beckett.mp4", speech_at_s=3.0, loops=2)
    shutil.copy(media.bikes(), videos / "bikes.mp4")
    print("[2/4] extract: shots, video/audio/text embeddings, thumbnails", flush=True)
    summary = extract([videos], out / "source")
    if summary.failed:
        raise ExtractError(f"demo videos failed to extract: {summary.failed}")
    print("[3/4] ingest", flush=True)
    result = ingest.ingest(out / "source", str(out / "store"))
    print(f"{result.titles} titles, {result.shots} shots")
    print("[4/4] contact sheet", flush=True)
    from mediafm_jax.sheet import title_sheet

    sheet = title_sheet(out / "source", "bikes_beckett", out / "contact_sheet.png")
    print(f"\ndone in {time.perf_counter() - started:.0f}s; contact sheet: {sheet}")
    print(f"look at it in a browser: mediafm browse --store {out / 'store'}")
    return sheet


class DemoStopped(Exception):
    """SIGTERM or SIGINT stopped the demo; ``exit_code`` is 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM/SIGINT raise DemoStopped wherever the demo is (training installs its own
    SIGTERM handler while it runs: it saves, returns, and the demo stops after it)."""

    def handler(signum: int, _frame) -> None:
        raise DemoStopped(signal.Signals(signum).name, signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_demo(out: str | Path, titles: int = 120, steps: int | None = None) -> dict:
    """Runs the five stages; a signal stops it as a whole (DemoStopped), never half-way
    into the next stage with a half-trained model."""
    stage_name = ["start"]
    try:
        with _stop_on_signals():
            return _run_demo(out, titles, steps, stage_name)
    except DemoStopped as stop:
        raise DemoStopped(
            f"stopped by {stop} during {stage_name[0]}; rerun `mediafm demo --out {out}` "
            "to start over",
            stop.exit_code - 128,
        ) from None


def _run_demo(out: str | Path, titles: int, steps: int | None, stage_name: list[str]) -> dict:
    import pydantic

    from mediafm_jax import config as config_lib
    from mediafm_jax import embed, presets, probe, train
    from mediafm_jax.data import ingest, synthetic
    from mediafm_jax.data.store import ShotStore

    try:  # before anything is written
        synth_config = synthetic.SynthConfig(
            titles=titles, video_dim=128, audio_dim=128, text_dim=128, title_dim=128
        )
    except pydantic.ValidationError as err:
        raise UsageError(validation_message(err, "demo")) from None
    config = presets.demo()
    if steps is not None:  # before anything is written (--steps -1 ran synth and ingest first)
        try:
            config = config_lib.apply_overrides(config, [f"train.steps={steps}"])
        except ConfigError as err:
            raise UsageError(f"--steps {steps}: {str(err).removeprefix('--set: ')}") from None
    out = Path(out)
    _fresh_out(out)
    started = time.perf_counter()

    def stage(number: int, text: str) -> None:
        stage_name[0] = text.split(":")[0]
        print(f"\n[{number}/5] {text}  (t = {time.perf_counter() - started:.0f}s)", flush=True)

    stage(1, f"synth: {titles} synthetic titles with narrative structure")
    synthetic.write_catalog(out / "source", synth_config)

    stage(2, "ingest: validate and write the TensorStore shot store")
    summary = ingest.ingest(out / "source", str(out / "store"))
    print(f"{summary.titles} titles, {summary.shots} shots")

    stage(3, f"train: demo preset, {config.train.steps} steps of masked shot modeling")
    trained = train.train(config, str(out / "store"), out / "run")
    if trained["stopped"] is not None:
        raise DemoStopped("SIGTERM", signal.SIGTERM)

    stage(4, "embed: the readout chosen on validation titles, then every shot in context")
    store = ShotStore(str(out / "store"))
    tasks, clips = out / "source" / "probes.json", out / "source" / "clips.jsonl"
    try:
        layers, _ = probe.choose_readout(out / "run", store, tasks, clips)
    except probe.ProbeInputError as reason:  # e.g. too few titles for a validation split
        layers = "last"
        print(f"readout: last, none could be chosen on validation titles ({reason})")
    embedder = embed.Embedder(out / "run", layers=layers)
    emb = embed.embed_store(embedder, store, str(out / "embeddings"))

    stage(5, "probe: linear probes, contextual vs uncontextualized")
    results = probe.run_probes(
        embedder,
        store,
        tasks,
        clips,
        out / "report",
        emb=emb,
    )
    elapsed = time.perf_counter() - started
    print("\n" + probe.markdown_table(results))
    print(f"\ndone in {elapsed / 60:.1f} min; report: {out / 'report' / 'report.md'}")
    print(
        f"plot: {out / 'report' / 'report.png'}; loss curve: {out / 'run' / 'plots' / 'loss.png'}"
    )
    return results
