"""How long does a 4-second clip with audio take to generate on this machine?

    python benchmarks/generate_speed.py                   # the bundled model
    python benchmarks/generate_speed.py --model DIR       # a model folder
    python benchmarks/generate_speed.py --untrained tiny  # an architecture without weights (speed only)

For 1, 4, 8 and 25 sampling steps (with text guidance: two model passes per step, batched), in
float32 and with bfloat16 autocast, prints the time of each stage (text, sampling, decoding) and
the whole as a ratio to real time (> 1: faster than real time). Each figure is the median of
--repeats runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

import torch

from openseedance.pipeline import Pipeline
from openseedance.request import GenerationRequest
from openseedance.sampling import SamplerConfig

PROMPT = "Setting: a sandy beach: a striped red circle with big eyes. The red circle jumps twice. Wind blows."


def measure(pipe: Pipeline, steps: int, bf16: bool, duration: float, repeats: int) -> dict:
    pipe.bf16 = bf16
    c = pipe.config
    sampler = SamplerConfig(steps=steps, guidance={"video": c.guidance, "audio": c.audio_guidance})
    request = GenerationRequest(PROMPT, duration=duration, width=c.width, height=c.height, fps=c.fps,
                                sample_rate=c.sample_rate, seed=1)  # fmt: skip
    pipe(request, sampler)  # warm up
    runs = []
    for _ in range(repeats):
        pipe.text_encoder._cache.clear()  # every run encodes its prompt
        runs.append(pipe(request, sampler).seconds)
    stages = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    total = statistics.median(sum(r.values()) for r in runs)
    return {"steps": steps, "precision": "bfloat16" if bf16 else "float32", "total_s": total,
            "x_realtime": duration / total, **{f"{k}_s": v for k, v in stages.items()}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    group.add_argument("--untrained", default=None, help="time a preset's architecture with random weights")
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--steps", default="1,4,8,25")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/generate_speed.json"))
    args = parser.parse_args()
    pipe = Pipeline.untrained(args.untrained) if args.untrained else Pipeline.from_pretrained(args.model)
    rows = []
    for steps in (int(s) for s in args.steps.split(",")):
        for bf16 in (False, True):
            rows.append(measure(pipe, steps, bf16, args.duration, args.repeats))
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"generation of a {args.duration:g} s clip with audio ({pipe.config.width}x{pipe.config.height}, "
          f"{pipe.config.fps:g} fps, {pipe.config.sample_rate} Hz), {machine}")  # fmt: skip
    print("| steps | precision | text s | sample s | decode s | total s | x real time |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['steps']} | {r['precision']} | {r['text_s']:.3f} | {r['sample_s']:.3f} | {r['decode_s']:.3f} | "
              f"{r['total_s']:.3f} | {r['x_realtime']:.2f} |")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model or args.untrained or "bundled", "machine": machine,
                                    "duration": args.duration, "rows": rows}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
