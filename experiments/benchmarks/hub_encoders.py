"""The original's encoders at full size: CLIP ViT-B/32 frames and wav2vec2-base audio, x real time.

    python experiments/benchmarks/hub_encoders.py [--shots 64] [--json FILE]
    python experiments/benchmarks/hub_encoders.py --smoke    # tiny configs, seconds on a CPU

Random initialisation has the real cost (same shapes, same FLOPs), so no download is
needed: each model is built from its published config, saved to a temporary folder and
loaded by the production class (``clip:<folder>``, ``wav2vec2:<folder>``), on CUDA in fp16
when torch sees a GPU, else on this CPU. Rows: frames/s of the video stage and seconds
of audio per second of the audio stage, and each as a multiple of real time for a catalog
cut like the benchmark clips (one shot per ``--shot-s`` seconds, ``--frames-per-shot``
frames each, 640x360 frames scaled to a 224 px short side). ``gpu_check.py`` runs this in
its own process before JAX takes the card.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def build(folder: Path, smoke: bool) -> dict[str, str]:
    import torch
    import transformers

    torch.manual_seed(0)
    if smoke:
        small = dict(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4
        )
        clip = transformers.CLIPVisionConfig(
            image_size=224, patch_size=32, projection_dim=16, **small
        )
        wav = transformers.Wav2Vec2Config(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=20,
            conv_dim=(16,) * 7,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
        )
    else:  # openai/clip-vit-base-patch32's vision tower and facebook/wav2vec2-base
        clip = transformers.CLIPVisionConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=32,
            projection_dim=512,
        )
        wav = transformers.Wav2Vec2Config()
    specs = {}
    for name, model in (
        ("clip", transformers.CLIPVisionModelWithProjection(clip)),
        ("wav2vec2", transformers.Wav2Vec2Model(wav)),
    ):
        model.save_pretrained(folder / name)
        specs[name] = f"{name}:{folder / name}"
    return specs


def measure(specs: dict[str, str], shots: int, frames_per_shot: int, shot_s: float) -> dict:
    from mediafm_jax.extract import encoders

    threads = os.cpu_count() or 1
    rng = np.random.default_rng(0)
    rows: dict[str, dict] = {}
    video = encoders.resolve("video", specs["clip"])(threads)
    frames = [
        rng.integers(0, 256, (frames_per_shot, 224, 398, 3), dtype=np.uint8) for _ in range(shots)
    ]
    video.embed(frames[:2])  # warm-up (CUDA kernels, allocator)
    started = time.perf_counter()
    for i in range(0, shots, 16):  # the pipeline hands over ~16 shots of 3 frames at a time
        video.embed(frames[i : i + 16])
    seconds = time.perf_counter() - started
    frames_per_s = shots * frames_per_shot / seconds
    rows["video"] = {
        "device": str(video.device),
        "frames_per_s": frames_per_s,
        "x_real_time": frames_per_s / (frames_per_shot / shot_s),
    }
    audio = encoders.resolve("audio", specs["wav2vec2"])(threads)
    clips = [rng.standard_normal(int(shot_s * 16_000)).astype(np.float32) for _ in range(shots)]
    audio.embed(clips[:2])
    started = time.perf_counter()
    audio.embed(clips)
    seconds = time.perf_counter() - started
    rows["audio"] = {
        "device": str(audio.device),
        "audio_s_per_s": shots * shot_s / seconds,
        "x_real_time": shots * shot_s / seconds,
    }
    both = 1 / (1 / rows["video"]["x_real_time"] + 1 / rows["audio"]["x_real_time"])
    rows["video+audio"] = {"x_real_time": both}
    return rows


def print_rows(rows: dict) -> None:
    print("| stage | device | rate | x real time |")
    print("|---|---|---:|---:|")
    video, audio = rows["video"], rows["audio"]
    print(
        f"| video (CLIP) | {video['device']} | {video['frames_per_s']:.1f} frames/s | "
        f"{video['x_real_time']:.2f} |"
    )
    print(
        f"| audio (wav2vec2) | {audio['device']} | {audio['audio_s_per_s']:.1f} audio s/s | "
        f"{audio['x_real_time']:.2f} |"
    )
    print(f"| both | | | {rows['video+audio']['x_real_time']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=64)
    parser.add_argument("--frames-per-shot", type=int, default=3)
    parser.add_argument("--shot-s", type=float, default=1.67, help="bikes.mp4: 6 shots in 10 s")
    parser.add_argument("--smoke", action="store_true", help="tiny configs (the script runs)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        specs = build(Path(tmp), args.smoke)
        rows = measure(specs, args.shots, args.frames_per_shot, args.shot_s)
    load = os.getloadavg()
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, load {load[0]:.2f}; "
        f"{'tiny (smoke)' if args.smoke else 'CLIP ViT-B/32 + wav2vec2-base'}, random init, "
        f"{args.shots} shots of {args.shot_s} s, {args.frames_per_shot} frames each\n"
    )
    print_rows(rows)
    rows["load_avg"] = load[0]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
