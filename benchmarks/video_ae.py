"""How well and how fast does a video autoencoder reconstruct held-out Stage clips?

    python benchmarks/video_ae.py --model runs/video-ae-tiny/model [--clips 8] [--out benchmarks/video_ae/video_ae.json]
    python benchmarks/video_ae.py --model DIR --memory     # peak memory against clip length only
    python benchmarks/video_ae.py --model OLD,NEW --no-memory   # two models side by side

Prints three tables: quality (PSNR, SSIM, how much of the speakers' mouth movement the
reconstruction keeps, within the frames that share a latent and between latents, and the Stage
probes on reconstructions relative to the originals), speed (encode and decode frames/s in
float32 and bfloat16 autocast, and the time to decode a 4-second clip), and peak resident memory
against clip length, whole-clip vs chunked, each length measured in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from openseedance.checkpoint import load_component
from openseedance.conditioning import frames_to_tensor, tensor_to_frames
from openseedance.stage.probes import BETWEEN, PROBES, WITHIN, mouth_moves, movement_kept, probe
from openseedance.stage.render import RenderConfig, render
from openseedance.stage.scene import sample_scene
from openseedance.video_vae import VideoAutoencoder

HELD_OUT_SEED = 700_000  # training scenes start at 10_000_000


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM of two (3, T, H, W) videos in [-1, 1], 7x7 Gaussian window, per frame and channel."""
    x, y = (a.float().add(1).div(2).permute(1, 0, 2, 3).reshape(-1, 1, *a.shape[2:]) for a in (a, b))
    g = torch.exp(-((torch.arange(7.0) - 3) ** 2) / (2 * 1.5**2))
    w = (g[:, None] * g[None, :] / g.sum() ** 2).view(1, 1, 7, 7)
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mu_x**2
    syy = F.conv2d(y * y, w) - mu_y**2
    sxy = F.conv2d(x * y, w) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


@torch.no_grad()
def quality(model: VideoAutoencoder, clips: int) -> dict:
    config = RenderConfig(64, 64, 12.0, 16000)
    rows = {"psnr": [], "ssim": []}
    truth_scores: dict[str, list[float]] = {p: [] for p in PROBES}
    recon_scores: dict[str, list[float]] = {p: [] for p in PROBES}
    moves = []
    for i in range(clips):
        scene = sample_scene(HELD_OUT_SEED + i, duration=4.0)
        r = render(scene, config)
        frames = r.clip.video[: 1 + 4 * ((len(r.clip.video) - 1) // 4)]
        x = frames_to_tensor(frames)[None]
        y = model.decode(model.encode(x))[0]
        out = tensor_to_frames(y)
        rows["psnr"].append(psnr(out, frames))
        rows["ssim"].append(ssim(y, x[0]))
        moves.append(mouth_moves(scene, r.truth, frames, out, model.config.temporal_factor))
        clip = r.clip.__class__(video=out, audio=r.clip.audio, fps=r.clip.fps, sample_rate=r.clip.sample_rate)
        true_clip = r.clip.__class__(video=frames, audio=r.clip.audio, fps=r.clip.fps, sample_rate=r.clip.sample_rate)
        for scores, c in ((truth_scores, true_clip), (recon_scores, clip)):
            for name, v in probe(c, scene).scores.items():
                if v is not None:
                    scores[name].append(v)
    result = {k: float(np.mean(v)) for k, v in rows.items()}
    result["min_psnr"] = float(np.min(rows["psnr"]))
    moves = np.concatenate(moves)
    result["mouth_moves_kept"] = {
        "within_latent": movement_kept(moves, WITHIN),
        "between_latents": movement_kept(moves, BETWEEN),
        "frames": int((moves[:, 0] == WITHIN).sum()),
    }
    result["probes"] = {
        p: {"truth": float(np.mean(truth_scores[p])), "recon": float(np.mean(recon_scores[p]))}
        for p in PROBES
        if truth_scores[p]
    }
    return result


@torch.no_grad()
def speed(model: VideoAutoencoder) -> dict:
    x = frames_to_tensor(render(sample_scene(HELD_OUT_SEED, duration=49 / 12)).clip.video)[None]  # 4 s + 1 frame
    out = {}
    for name, bf16 in (("float32", False), ("bfloat16", True)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            z = model.encode(x)  # warm up
            model.decode(z)
            t0 = time.perf_counter()
            z = model.encode(x)
            t1 = time.perf_counter()
            model.decode(z)
            t2 = time.perf_counter()
        out[name] = {"encode_fps": 49 / (t1 - t0), "decode_fps": 49 / (t2 - t1), "decode_4s_seconds": t2 - t1}
    return out


def _peak_child(model: str, frames: int, chunked: bool) -> float:
    """Peak RSS (MiB, torch included) of a fresh process that encodes and decodes one clip."""
    code = (
        "import resource, torch, sys\n"
        "from openseedance.checkpoint import load_component\n"
        "from openseedance.video_vae import VideoAutoencoder\n"
        f"m = load_component(VideoAutoencoder, {model!r})\n"
        f"x = torch.zeros(1, 3, {frames}, 64, 64)\n"
        "with torch.no_grad():\n"
        f"    z = m.encode(x, chunk_frames={16 if chunked else None})\n"
        f"    y = m.decode(z, chunk_latents={4 if chunked else None})\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(res.stdout.strip())


def memory(model: str) -> dict:
    out = {}
    for seconds in (4, 8, 16, 32):
        frames = 1 + 4 * (seconds * 12 // 4)
        out[seconds] = {"whole_mib": _peak_child(model, frames, False), "chunked_mib": _peak_child(model, frames, True)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a saved video autoencoder folder, or several, comma-separated")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--memory", action="store_true", help="only the memory table")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/video_ae/video_ae.json"))
    args = parser.parse_args()
    folders = args.model.split(",")
    result: dict = {"models": folders, "machine": f"{platform.machine()}, {torch.get_num_threads()} threads"}
    if not args.memory:
        quals, speeds = {}, {}
        for folder in folders:
            torch.manual_seed(0)
            model = load_component(VideoAutoencoder, folder)
            quals[folder], speeds[folder] = quality(model, args.clips), speed(model)
        result["quality"], result["speed"] = quals, speeds
        print(f"quality on {args.clips} held-out Stage clips (64x64, 12 fps, 49 frames)")
        print("| model | PSNR dB | min PSNR dB | SSIM |\n|---|---|---|---|")
        for folder, q in quals.items():
            print(f"| {folder} | {q['psnr']:.2f} | {q['min_psnr']:.2f} | {q['ssim']:.4f} |")
        print("mouth movement kept (slope of the reconstruction's mouth openness on the original's)\n"
              "| model | within a latent's frames | between latents | frames |\n|---|---|---|---|")  # fmt: skip
        for folder, q in quals.items():
            mk = q["mouth_moves_kept"]
            print(f"| {folder} | {mk['within_latent']:.3f} | {mk['between_latents']:.3f} | {mk['frames']} |")
        print("| model | probe | original | reconstruction | ratio |\n|---|---|---|---|---|")
        for folder, q in quals.items():
            for p, s in q["probes"].items():
                print(f"| {folder} | {p} | {100 * s['truth']:.1f}% | {100 * s['recon']:.1f}% | "
                      f"{s['recon'] / s['truth']:.3f} |")  # fmt: skip
        print("| model | precision | encode frames/s | decode frames/s | decode 4 s clip |\n|---|---|---|---|---|")
        for folder, sp in speeds.items():
            for name, v in sp.items():
                print(f"| {folder} | {name} | {v['encode_fps']:.0f} | {v['decode_fps']:.0f} | "
                      f"{v['decode_4s_seconds']:.3f} s |")  # fmt: skip
    if not args.no_memory:
        m = memory(folders[0])
        result["memory"] = m
        print(f"memory of {folders[0]}")
        print("| clip seconds | whole-clip peak MiB | chunked peak MiB |\n|---|---|---|")
        for sec, v in m.items():
            print(f"| {sec} | {v['whole_mib']:.0f} | {v['chunked_mib']:.0f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
