"""The thin video decoder against today's, side by side in one process: decode time and PSNR.

    python benchmarks/thin_decoder.py --thin runs/thin/model        # against the bundled decoder
    python benchmarks/thin_decoder.py --full DIR --thin DIR [--clips 16] [--repeats 9]

Both decoders read the same latents: the thin one must have been trained on the full one's frozen
encoder (`train video-ae --preset tiny-thin --init FULL --decoder-only`), which this checks. Prints
three tables and writes them as JSON:

- decode time of a 4-second clip (49 frames at 12 fps, 64x64, 13 latent frames, decoded as the
  engine does: `chunk_latents=16`) in float32 and under bfloat16 autocast, the median of
  `--repeats` runs after a warm-up, the two decoders alternating so that whatever else the
  machine does weighs on both alike;
- PSNR against the original frames on held-out Stage clips (seeds 700000+, training scenes start
  at 10,000,000; the clips of `benchmarks/video_ae.py`), each clip encoded once and decoded by
  both, and the same by position in the clip;
- the audio decoder's share of the time to decode a generated clip (video under the precision the
  engine picks on this machine, audio in float32, as `BundledEngine._decode` runs them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from openseedance import precision
from openseedance.audio_vae import AudioAutoencoder
from openseedance.checkpoint import load_component
from openseedance.conditioning import frames_to_tensor, tensor_to_frames
from openseedance.engines.bundled import BUNDLED
from openseedance.stage.render import RenderConfig, render
from openseedance.stage.scene import sample_scene
from openseedance.video_vae import VideoAutoencoder

HELD_OUT_SEED = 700_000  # training scenes start at 10_000_000
FRAMES = 49  # 4 s at 12 fps, plus the first frame: the clip timed
QUALITY_FRAMES = 45  # the held-out 4 s clips (48 frames) cut to 1 + 4k, as benchmarks/video_ae.py does
FRAME_RANGES = ((0, 9), (9, 25), (25, QUALITY_FRAMES))  # the first 9: as long as a training window


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return fields.get("Model name", platform.machine()).strip()


def check_same_latents(full: VideoAutoencoder, thin: VideoAutoencoder) -> None:
    if full.config.encoder_layout() != thin.config.encoder_layout():
        raise SystemExit("the thin decoder's autoencoder has another encoder layout: not the same latents")
    a, b = full.state_dict(), thin.state_dict()
    differ = [k for k in a if not k.startswith("decoder.") and not torch.equal(a[k], b[k])]
    if differ:
        raise SystemExit(f"the thin decoder's encoder differs from the full one's ({differ[0]}): not the same latents")


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


@torch.no_grad()
def speed(models: dict[str, VideoAutoencoder], audio_ae: AudioAutoencoder, repeats: int) -> dict:
    config = RenderConfig(64, 64, 12.0, audio_ae.config.sample_rate)
    r = render(sample_scene(HELD_OUT_SEED, duration=FRAMES / 12), config)
    z = models["full"].encode(frames_to_tensor(r.clip.video[:FRAMES])[None])  # (1, 8, 13, 16, 16)
    samples = 4 * audio_ae.config.sample_rate
    za = audio_ae.encode(torch.from_numpy(r.clip.audio[:samples]).float()[None])
    out: dict = {"latents": list(z.shape), "video": {}}
    for name, bf16 in (("float32", False), ("bfloat16", True)):
        times: dict[str, list[float]] = {k: [] for k in models}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for model in models.values():
                model.decode(z, chunk_latents=16)  # warm up
            for _ in range(repeats):  # alternate, so both see the same machine
                for key, model in models.items():
                    times[key] += timed(lambda m=model: m.decode(z, chunk_latents=16), 1)
        row = {k: {"median_s": statistics.median(v), "runs_s": v} for k, v in times.items()}
        out["video"][name] = {**row, "thin_over_full": row["thin"]["median_s"] / row["full"]["median_s"]}
    audio_ae.decode(za, length=samples)  # warm up
    audio = timed(lambda: audio_ae.decode(za, length=samples), repeats)
    out["audio_float32"] = {"median_s": statistics.median(audio), "runs_s": audio}
    engine_precision = precision.choose(torch.device("cpu"), None)
    video_precision = "bfloat16" if engine_precision.bf16 else "float32"
    a = out["audio_float32"]["median_s"]
    out["engine"] = {"video_precision": video_precision, "why": engine_precision.why}
    for key in models:
        v = out["video"][video_precision][key]["median_s"]
        out["engine"][key] = {"video_s": v, "audio_s": a, "audio_share": a / (a + v)}
    return out


@torch.no_grad()
def quality(models: dict[str, VideoAutoencoder], clips: int) -> dict:
    rows: dict[str, dict[str, list[float]]] = {k: {"float32": [], "bfloat16": []} for k in models}
    by_frame: dict[str, list[np.ndarray]] = {k: [] for k in models}  # float32 squared error per frame
    for i in range(clips):
        r = render(sample_scene(HELD_OUT_SEED + i, duration=4.0), RenderConfig(64, 64, 12.0, 16000))
        frames = r.clip.video[:QUALITY_FRAMES]
        z = models["full"].encode(frames_to_tensor(frames)[None])  # one encoder: the thin one's is the same
        for key, model in models.items():
            for name, bf16 in (("float32", False), ("bfloat16", True)):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    y = model.decode(z, chunk_latents=16)
                out = tensor_to_frames(y[0].float())
                rows[key][name].append(psnr(out, frames))
                if not bf16:
                    by_frame[key].append(((out.astype(np.float64) - frames) ** 2).mean(axis=(1, 2, 3)))
    out = {k: {p: {"psnr": float(np.mean(v)), "min_psnr": float(np.min(v)), "per_clip": v} for p, v in r.items()}
           for k, r in rows.items()}  # fmt: skip
    for p in ("float32", "bfloat16"):
        out[f"thin_minus_full_{p}"] = out["thin"][p]["psnr"] - out["full"][p]["psnr"]
    # where in the clip the two differ: mean per-frame PSNR over the clips, by range of frames
    frame_psnr = {k: 10 * np.log10(255.0**2 / np.maximum(np.stack(v), 1e-10)) for k, v in by_frame.items()}
    out["by_frames"] = {f"{a}-{b - 1}": {k: float(v[:, a:b].mean()) for k, v in frame_psnr.items()}
                        for a, b in FRAME_RANGES}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", type=Path, required=True,
                        help="the full decoder's video autoencoder folder (the bundled one until 2026-12-08: "
                             "git archive 8b8b8a7 src/openseedance/weights/tiny/video_ae | tar -x -C /tmp/full)")
    parser.add_argument("--thin", type=Path, required=True, help="the thin decoder's video autoencoder folder")
    parser.add_argument("--audio", type=Path, default=BUNDLED / "audio_ae", help="the audio autoencoder folder")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/thin_decoder/thin_decoder.json"))
    args = parser.parse_args()
    models = {"full": load_component(VideoAutoencoder, args.full).eval(),
              "thin": load_component(VideoAutoencoder, args.thin).eval()}  # fmt: skip
    check_same_latents(models["full"], models["thin"])
    audio_ae = load_component(AudioAutoencoder, args.audio).eval()
    machine = (f"{cpu_name()}, {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
               f"torch {torch.__version__}")  # fmt: skip
    result: dict = {"date": datetime.date.today().isoformat(), "machine": machine,
                    "full": str(args.full), "thin": str(args.thin), "clips": args.clips, "repeats": args.repeats,
                    "parameters": {k: sum(p.numel() for p in m.decoder.parameters()) for k, m in models.items()},
                    "decoder_layout": {k: m.config.decoder_layout for k, m in models.items()}}  # fmt: skip
    result["speed"] = speed(models, audio_ae, args.repeats)
    result["quality"] = quality(models, args.clips)
    sp, q = result["speed"], result["quality"]

    print(f"{result['date']}, {machine}")
    print(f"decode a 4 s clip ({FRAMES} frames, 64x64, latents {sp['latents']}), median of {args.repeats}")
    print("| decoder | widths | parameters | float32 | bfloat16 autocast |\n|---|---|---|---|---|")
    for k in models:
        widths = ", ".join(map(str, result["decoder_layout"][k][0]))
        print(f"| {k} | ({widths}) | {result['parameters'][k] / 1e6:.2f} M | "
              f"{sp['video']['float32'][k]['median_s']:.3f} s | "
              f"{sp['video']['bfloat16'][k]['median_s']:.3f} s |")  # fmt: skip
    print(f"| thin / full | | | {sp['video']['float32']['thin_over_full']:.2f} | "
          f"{sp['video']['bfloat16']['thin_over_full']:.2f} |")  # fmt: skip
    print(f"\nPSNR on {args.clips} held-out Stage clips (64x64, 12 fps, {QUALITY_FRAMES} frames) against the originals")
    print("| decoder | PSNR dB (float32) | min dB | PSNR dB (bfloat16) | min dB |\n|---|---|---|---|---|")
    for k in models:
        f, b = q[k]["float32"], q[k]["bfloat16"]
        print(f"| {k} | {f['psnr']:.2f} | {f['min_psnr']:.2f} | {b['psnr']:.2f} | {b['min_psnr']:.2f} |")
    print(f"| thin - full | {q['thin_minus_full_float32']:+.3f} | | {q['thin_minus_full_bfloat16']:+.3f} | |")
    print("\nmean per-frame PSNR dB (float32) by position in the clip")
    print("| frames | full | thin | thin - full |\n|---|---|---|---|")
    for span, v in q["by_frames"].items():
        print(f"| {span} | {v['full']:.2f} | {v['thin']:.2f} | {v['thin'] - v['full']:+.2f} |")
    e = sp["engine"]
    print(f"\ndecoding a generated 4 s clip as the engine does (video in {e['video_precision']}, audio in float32)")
    print("| video decoder | video s | audio s | audio share |\n|---|---|---|---|")
    for k in models:
        print(f"| {k} | {e[k]['video_s']:.3f} | {e[k]['audio_s']:.3f} | {100 * e[k]['audio_share']:.0f}% |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
