"""The LTX-2 engine on an LTX-2 folder (default: the tiny random one the tests build): its overhead
over a bare diffusers call, how close a given last frame gets, and the continuity at the seams of
an extension and at the cuts of a multi-shot clip.

    python benchmarks/ltx2_engine.py                      # the tiny random folder, built in a temp dir
    python benchmarks/ltx2_engine.py --folder DIR --size 768x512 --fps 24 --duration 2 --steps 30

1. Overhead: `LTX2Pipeline.__call__` (text -> video + audio, output_type "np") against this engine's
   `generate` (the same components, size, frames, steps and seed; its own loop) and against the
   whole wrapper (`Pipeline.__call__`: + given parts, marks, manifest data), interleaved, median and
   fastest of `--repeats` runs each, and the median CPU time the process spent (steadier than the
   wall time where other work shares the cores; one torch thread by default). Both sides load the
   same folder once, pad the prompt to the same number of tokens and use the same guidance (text,
   spatio-temporal at the same block, modality; no rescale), so they run the same model
   evaluations; the time is one clip's.
2. Last frame: the engine's raw output (before the wrapper shows the given frame verbatim) against
   the given last frame, mean absolute error in 8-bit levels, for last frame only and first + last;
   beside it the video VAE's own round trip of that frame (the floor the latents allow).
3. Seams: forward extension of a 1 s clip to 2 s and a 2-shot clip (per-shot text attention, and
   chained shot by shot); the mean absolute change
   between the two frames across the seam / cut against the median change between neighbouring
   frames elsewhere in the clip, and for the sound the jump in 10 ms loudness (RMS x 1000) against
   the median elsewhere.

On random weights the pictures are noise: what this measures is the machinery (time, latents held,
pasting), not quality.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from openseedance import conditioning as cond
from openseedance.engines import RunOptions
from openseedance.media import Clip
from openseedance.pipeline import Pipeline
from openseedance.request import GenerationRequest


def frame_jumps(video: np.ndarray) -> np.ndarray:
    return np.abs(np.diff(video.astype(np.float64), axis=0)).mean(axis=(1, 2, 3))


def loudness_jumps(audio: np.ndarray, rate: int) -> np.ndarray:
    block = rate // 100
    blocks = audio[0, : len(audio[0]) // block * block].reshape(-1, block)
    return np.abs(np.diff(np.sqrt((blocks**2).mean(1)))) * 1000


def seam(clip: Clip, seconds: float) -> dict[str, float]:
    """Jumps across the seam at `seconds` against the median elsewhere."""
    frames, blocks = frame_jumps(clip.video), loudness_jumps(clip.audio, clip.sample_rate)
    f, b = round(seconds * clip.fps) - 1, round(seconds * 100) - 1
    return {"video_jump": float(frames[f]), "video_median": float(np.median(np.delete(frames, f))),
            "audio_jump": float(blocks[b]), "audio_median": float(np.median(np.delete(blocks, b)))}  # fmt: skip


def overhead(folder: Path, pipe: Pipeline, request: GenerationRequest, steps: int, repeats: int) -> dict:
    from diffusers import LTX2Pipeline

    bare = LTX2Pipeline.from_pretrained(folder, local_files_only=True)
    bare.set_progress_bar_config(disable=True)
    frames = cond.coded_frames(request.duration, request.fps, pipe.capabilities.frames_per_latent)
    options = RunOptions(steps=steps, mark=False)
    guidance = pipe.engine.sampler(options).guidance
    st = pipe.engine.settings
    text_tokens = min(pipe.engine.settings.max_text_tokens, bare.tokenizer.model_max_length)  # what the engine uses

    def diffusers_call() -> None:
        bare(request.prompt, num_frames=frames, height=request.height, width=request.width, frame_rate=request.fps,
             num_inference_steps=steps, guidance_scale=guidance["video"], audio_guidance_scale=guidance["audio"],
             stg_scale=st.stg_guidance, audio_stg_scale=st.audio_stg_guidance, modality_scale=st.modality_guidance,
             audio_modality_scale=st.audio_modality_guidance, spatio_temporal_guidance_blocks=pipe.engine.stg_blocks,
             guidance_rescale=0.0, audio_guidance_rescale=0.0,
             max_sequence_length=text_tokens, generator=torch.Generator().manual_seed(request.seed),
             output_type="np")  # fmt: skip

    runs: dict[str, list[float]] = {"diffusers LTX2Pipeline.__call__": [], "engine.generate": [],
                                    "Pipeline (wrapper, marks)": []}  # fmt: skip
    calls = [diffusers_call, lambda: pipe.engine.generate(request, options),
             lambda: pipe(request, RunOptions(steps=steps))]  # fmt: skip
    for fn in calls:  # warm-up
        fn()
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in zip(runs, calls, strict=True):
            clock, used = time.perf_counter(), time.process_time()
            fn()
            runs[name].append(time.perf_counter() - clock)
            cpu[name].append(time.process_time() - used)
    return {name: {"median": statistics.median(t), "min": min(t), "cpu_median": statistics.median(cpu[name])}
            for name, t in runs.items()}  # fmt: skip


def last_frame(pipe: Pipeline, request: GenerationRequest, image: np.ndarray) -> dict[str, float]:
    engine = pipe.engine
    coded = pipe.capabilities.frames_per_latent + 1  # the last latent frame codes a group of frames
    trip = engine.encode_video(np.repeat(image[None], coded, 0))
    vae = engine.pipe.vae
    with torch.inference_mode():
        z = engine.pipe._denormalize_latents(trip, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        back = cond.tensor_to_frames(vae.decode(z.to(vae.dtype), None, return_dict=False)[0][0].float())
    out = {"vae_round_trip": float(np.abs(back[-1].astype(float) - image).mean())}
    for name, extra in (("last_only", {}), ("first_and_last", {"first_frame": image[::-1].copy()})):
        raw = engine.generate(GenerationRequest(**{**vars_of(request), "last_frame": image, **extra})).clip
        out[name] = float(np.abs(raw.video[-1].astype(float) - image).mean())
    return out


def vars_of(request: GenerationRequest) -> dict:
    return {k: getattr(request, k) for k in ("prompt", "duration", "width", "height", "fps", "sample_rate", "seed")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=None, help="an LTX-2 folder (default: the tiny random one)")
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix("") / "ltx2_engine.json")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            from openseedance.engines.ltx2_tiny import save_untrained

            folder = save_untrained(Path(tmp) / "tiny-ltx2")
        pipe = Pipeline.from_pretrained(folder)
        width, height = (int(v) for v in args.size.split("x"))
        rate = pipe.capabilities.sample_rate
        request = GenerationRequest("a red ball bounces and a bell rings", duration=args.duration, width=width,
                                    height=height, fps=args.fps, sample_rate=rate, seed=1)  # fmt: skip
        times = overhead(folder, pipe, request, args.steps, args.repeats)
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        closeness = last_frame(pipe, request, image)
        n = round(args.fps)
        source = Clip(video=rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8),
                      audio=(0.3 * np.sin(np.arange(rate) / rate * 2 * np.pi * 220))[None].astype(np.float32),
                      fps=args.fps, sample_rate=rate)  # fmt: skip
        extended = pipe(GenerationRequest(request.prompt, duration=2.0, width=width, height=height, fps=args.fps,
                                          sample_rate=rate, source=source, extend="forward")).clip  # fmt: skip
        two_shots = GenerationRequest("a room [shot 1] a red ball [shot 2] a blue cube", duration=2.0, width=width,
                                      height=height, fps=args.fps, sample_rate=rate)  # fmt: skip
        seams = {"extension at 1 s": seam(extended, 1.0)}
        for mode in ("attention", "chained"):
            pipe.engine.settings = dataclasses.replace(pipe.engine.settings, shots=mode)
            seams[f"shot cut at 1 s ({mode})"] = seam(pipe(two_shots).clip, 1.0)
    bare = times["diffusers LTX2Pipeline.__call__"]["cpu_median"]
    overhead_pct = 100 * (times["engine.generate"]["cpu_median"] / bare - 1)
    print(f"## overhead ({args.size}, {args.duration:g} s at {args.fps:g} fps, {args.steps} steps, "
          f"{args.repeats} runs each, {torch.get_num_threads()} thread(s))\n\n"
          "| call | median CPU s | median wall s | fastest wall s |\n|---|---|---|---|")  # fmt: skip
    for name, t in times.items():
        print(f"| {name} | {t['cpu_median']:.3f} | {t['median']:.3f} | {t['min']:.3f} |")
    print(f"\nengine over bare diffusers (CPU time): {overhead_pct:+.1f}%\n")
    print("## last frame: mean absolute error against the given frame (8-bit levels)\n\n| case | MAE |\n|---|---|")
    for name, v in closeness.items():
        print(f"| {name} | {v:.1f} |")
    print("\n## seams (after the wrapper)\n\n| seam | video jump | video median | audio jump | audio median |")
    print("|---|---|---|---|---|")
    for name, s in seams.items():
        print(f"| {name} | {s['video_jump']:.1f} | {s['video_median']:.1f} | {s['audio_jump']:.1f} | "
              f"{s['audio_median']:.1f} |")  # fmt: skip
    result = {"folder": str(args.folder or "tiny random (ltx2_tiny.save_untrained)"), "size": args.size,
              "fps": args.fps, "duration": args.duration, "steps": args.steps, "repeats": args.repeats,
              "seconds": times, "overhead_percent": overhead_pct, "last_frame_mae": closeness, "seams": seams,
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
