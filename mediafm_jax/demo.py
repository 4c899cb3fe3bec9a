"""`mediafm demo`: synth -> ingest -> train -> embed -> probe on a synthetic catalog.

Sized to finish in minutes on a 2-core laptop CPU (demo preset; 128-d modalities).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from mediafm_jax import outputs


def run_demo(out: str | Path, titles: int = 120, steps: int | None = None) -> dict:
    from mediafm_jax import config as config_lib
    from mediafm_jax import embed, presets, probe, train
    from mediafm_jax.data import ingest, synthetic
    from mediafm_jax.data.store import ShotStore

    out = Path(out)
    outputs.check_output(out, "demo", overwrite=True)
    if out.exists():  # an earlier demo of ours (checked above): replaced
        shutil.rmtree(out)
    outputs.claim_folder(out, "demo")
    started = time.perf_counter()

    def stage(number: int, text: str) -> None:
        print(f"\n[{number}/5] {text}  (t = {time.perf_counter() - started:.0f}s)", flush=True)

    stage(1, f"synth: {titles} synthetic titles with narrative structure")
    synth_config = synthetic.SynthConfig(
        titles=titles, video_dim=128, audio_dim=128, text_dim=128, title_dim=128
    )
    synthetic.write_catalog(out / "source", synth_config)

    stage(2, "ingest: validate and write the TensorStore shot store")
    summary = ingest.ingest(out / "source", str(out / "store"))
    print(f"{summary.titles} titles, {summary.shots} shots")

    config = presets.demo()
    if steps is not None:
        config = config_lib.apply_overrides(config, [f"train.steps={steps}"])
    stage(3, f"train: demo preset, {config.train.steps} steps of masked shot modeling")
    train.train_and_evaluate(config, str(out / "store"), out / "run")

    stage(4, "embed: in-context embeddings of every shot")
    store = ShotStore(str(out / "store"))
    embedder = embed.Embedder(out / "run")
    emb = embed.embed_store(embedder, store, str(out / "embeddings"))

    stage(5, "probe: linear probes, contextual vs uncontextualized")
    results = probe.run_probes(
        embedder,
        store,
        out / "source" / "probes.json",
        out / "source" / "clips.jsonl",
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
