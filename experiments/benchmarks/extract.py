"""`mediafm extract` speed as a multiple of real time, per stage, with 1 and 2 workers,
locally and on Ray, and the original's encoders (CLIP ViT-B/32 + wav2vec2-base) on this CPU.

    python experiments/benchmarks/extract.py [--videos 2] [--loops 12] [--out DIR] \
        [--no-ray] [--no-hub]

Builds ``--videos`` 640x360 H.264/AAC clips from wheel media (bikes.mp4 scaled and looped
``--loops`` times, 10 s each, with beckett.wav's 10 s of speech every 20 s, so half of
the running time has speech), then extracts them with the default settings, once with 1
worker process and once with 2, each into a fresh folder. Prints, per stage (decode,
shots, video, audio, speech, text), the seconds per second of video summed over all
videos and the resulting multiple of real time, plus the end-to-end multiple (video
seconds / wall seconds, model loading included) and the one-off model loading time.
Target: >= 10x real time end to end with 2 workers for the defaults.

``--ray`` rows (on by default when Ray is installed): the same 2-worker run as a Ray Data
job on a Ray started here (127.0.0.1, its own temp folder, token auth), timed from the
command's start (actor start-up and model loading included) against the local 2-worker
wall time of the same run; target: overhead <= 15%. ``--hub`` rows: the full-size CLIP
ViT-B/32 and wav2vec2-base towers (random initialisation: the real cost) through the
production encoder classes on this CPU (``hub_encoders.py``), as x real time per stage.

Also: how well the mean of k evenly spaced frames stands for the mean of all of a shot's
frames (cosine, on bikes.mp4's 6 shots), against the frame count it costs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import tempfile
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


def run(videos: list[Path], out: Path, workers: int, ray: str | None = None) -> dict:
    if out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    summary = extract(videos, out, Settings(workers=workers, ray=ray), log=lambda *_: None)
    wall = time.perf_counter() - started
    if summary.failed:
        raise SystemExit(f"extraction failed: {summary.failed}")
    records = json.loads((out / "extract.json").read_text())["videos"].values()
    seconds = sum(r["duration_s"] for r in records)
    stages = {s: sum(r["stage_s"][s] for r in records) for s in STAGES}
    return {
        "workers": workers,
        "engine": "local" if ray is None else "ray",
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
    parser.add_argument("--no-frames", action="store_true", help="skip the frames study")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray rows")
    parser.add_argument("--no-hub", action="store_true", help="skip CLIP + wav2vec2")
    parser.add_argument(
        "--omp-ab",
        type=int,
        metavar="ROUNDS",
        help="only: 2 local workers, OMP_NUM_THREADS "
        "as before (all cores) vs 1 (the default now), alternated ROUNDS times",
    )
    args = parser.parse_args()
    if args.omp_ab:
        omp_ab(build_videos(args.out / "videos", args.videos, args.loops), args.out, args.omp_ab)
        return
    if not args.no_frames:
        frames_study()
    if args.frames_only:
        return
    videos = build_videos(args.out / "videos", args.videos, args.loops)
    results = [run(videos, args.out / f"src_w{w}", w) for w in (1, 2)]
    if not args.no_ray:
        with local_ray(args.out / "ray"):
            results.append(run(videos, args.out / "src_ray_w2", 2, ray=""))
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
    print("\n| engine | workers | wall s | model load s | x real time (wall, loads included) |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['engine']} | {r['workers']} | {r['wall_s']:.1f} | {r['load_s']:.1f} | "
            f"{r['video_s'] / r['wall_s']:.1f} |"
        )
    if len(results) == 3:
        overhead = results[2]["wall_s"] / results[1]["wall_s"] - 1
        print(f"\nRay vs local at 2 workers: {overhead:+.1%} wall time (target <= +15%)")
    if not args.no_hub:
        print("\nThe original's encoders at full size on this CPU (random init):\n")
        import hub_encoders

        with tempfile.TemporaryDirectory() as tmp:
            rows = hub_encoders.measure(hub_encoders.build(Path(tmp), smoke=False), 32, 3, 1.67)
        hub_encoders.print_rows(rows)
        results.append({"hub_encoders": rows})
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    (args.out / "results.json").write_text(json.dumps(results, indent=1))


def omp_ab(videos: list[Path], out: Path, rounds: int) -> None:
    """Local 2-worker wall time with each worker's OpenMP pools at every core (what they
    had before the runner set ``OMP_NUM_THREADS=1``) and at one, alternated in one run so
    that the machine's load falls on both alike; prints the ratio, not a speed."""
    walls: dict[str, list[float]] = {"all cores": [], "1": []}
    for _ in range(rounds):
        for label in walls:
            if label == "1":
                os.environ.pop("OMP_NUM_THREADS", None)  # the runner's default
            else:
                os.environ["OMP_NUM_THREADS"] = str(os.cpu_count())
            walls[label].append(run(videos, out / "src_omp", 2)["wall_s"])
            print(f"OMP_NUM_THREADS {label}: {walls[label][-1]:.1f} s", flush=True)
    os.environ.pop("OMP_NUM_THREADS", None)
    before, now = (float(np.median(walls[k])) for k in ("all cores", "1"))
    print("\n| OMP_NUM_THREADS per worker | median wall s | runs |")
    print("|---|---:|---:|")
    for label, wall in (("all cores (before)", before), ("1 (now)", now)):
        print(f"| {label} | {wall:.1f} | {rounds} |")
    print(f"\n1 thread / all cores: {now / before:.2f}x the wall time")
    print(f"load average at the end: {os.getloadavg()} on {os.cpu_count()} cores")


@contextlib.contextmanager
def local_ray(temp: Path):
    """A Ray on this machine for the Ray rows: 127.0.0.1, its own temp folder and token,
    one CPU slot more than the pool; stopped here."""
    import secrets

    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback, not the interface
    import ray

    temp.mkdir(parents=True, exist_ok=True)
    ray.init(
        num_cpus=(os.cpu_count() or 1) + 1,
        include_dashboard=False,
        _temp_dir=str(temp.resolve()),
        logging_level="WARNING",
    )
    try:
        yield
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
