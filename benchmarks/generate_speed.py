"""How long does a clip with audio take to generate?

    python benchmarks/generate_speed.py                   # the bundled model, 4 s, this CPU
    python benchmarks/generate_speed.py --model DIR       # a model folder
    python benchmarks/generate_speed.py --untrained tiny  # an architecture without weights (speed only)
    python benchmarks/generate_speed.py --untrained 1b --device cuda --size 848x480 --fps 24 \\
        --duration 5 --steps 8,25 --precisions bfloat16  # real scale on a GPU (5 s at 480p)

For each number of sampling steps (with text guidance: two model passes per step, batched) and each
precision (float32, and bfloat16 autocast), prints the time of each stage (encoding of the prompt
and the conditions, sampling, decoding, marks) and the whole as a ratio to real time (> 1: faster than real
time), and on a GPU its peak memory. Each figure is the median of --repeats runs after one warm-up.
`--untrained-text DIR` times the default text encoder's architecture with random weights, from a
folder holding its config.json and tokenizer.json (for machines where its weights are not installed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
from pathlib import Path

import torch

from openseedance.engines import RunOptions
from openseedance.pipeline import Pipeline
from openseedance.request import GenerationRequest
from openseedance.text import TextEncoder

PROMPT = "Setting: a sandy beach: a striped red circle with big eyes. The red circle jumps twice. Wind blows."


def measure(pipe: Pipeline, steps: int, bf16: bool, duration: float, repeats: int) -> dict:
    engine, c = pipe.engine, pipe.capabilities
    request = GenerationRequest(PROMPT, duration=duration, width=c.width, height=c.height, fps=c.fps,
                                sample_rate=c.sample_rate, seed=1)  # fmt: skip
    pipe(request, RunOptions(steps=1, bf16=bf16))  # warm up
    if engine.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(engine.device)
    runs = []
    for _ in range(repeats):
        engine.text_encoder._cache.clear()  # every run encodes its prompt
        runs.append(pipe(request, RunOptions(steps=steps, bf16=bf16)).seconds)
    stages = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    total = statistics.median(sum(r.values()) for r in runs)
    row = {"steps": steps, "precision": "bfloat16" if bf16 else "float32", "total_s": total,
           "x_realtime": duration / total, **{f"{k}_s": v for k, v in stages.items()}}  # fmt: skip
    if engine.device.type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated(engine.device) / 2**30
    return row


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    group.add_argument("--untrained", default=None, help="time a preset's architecture with random weights")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--size", type=_size, default=None, help="WIDTHxHEIGHT (default: the model's)")
    parser.add_argument("--fps", type=float, default=None, help="frame rate (default: the model's)")
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--steps", default="1,4,8,25")
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--untrained-text", type=Path, default=None, help="folder: config.json, tokenizer.json")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/generate_speed/generate_speed.json"))
    args = parser.parse_args()
    pipe = Pipeline.untrained(args.untrained) if args.untrained else Pipeline.from_pretrained(args.model)
    engine = pipe.engine
    width, height = args.size or (engine.config.width, engine.config.height)
    engine.config = dataclasses.replace(engine.config, width=width, height=height, fps=args.fps or engine.config.fps,
                                        max_side=max(width, height))  # fmt: skip
    if args.untrained_text is not None:
        engine._text = TextEncoder.from_folder(args.untrained_text, weights=False)
    pipe.to(args.device)
    rows = []
    for steps in (int(s) for s in args.steps.split(",")):
        for precision in args.precisions.split(","):
            rows.append(measure(pipe, steps, precision == "bfloat16", args.duration, args.repeats))
    c = pipe.capabilities
    params = sum(p.numel() for p in engine.transformer.parameters())
    if engine.device.type == "cuda":
        machine = f"{torch.cuda.get_device_name(engine.device)}, torch {torch.__version__}"
    else:
        machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"generation of a {args.duration:g} s clip with audio ({c.width}x{c.height}, {c.fps:g} fps, "
          f"{c.sample_rate} Hz), transformer {params / 1e6:.0f} M parameters, text encoder {engine.text_encoder.name}, "
          f"{machine}")  # fmt: skip
    gpu = engine.device.type == "cuda"
    head = "| steps | precision | encode s | sample s | decode s | total s | x real time |"
    print(head + (" peak GiB |" if gpu else ""))
    print("|---|---|---|---|---|---|---|" + ("---|" if gpu else ""))
    for r in rows:
        print(f"| {r['steps']} | {r['precision']} | {r['encode_s']:.3f} | {r['sample_s']:.3f} | {r['decode_s']:.3f} | "
              f"{r['total_s']:.3f} | {r['x_realtime']:.2f} |" + (f" {r['peak_gib']:.1f} |" if gpu else ""))  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model or args.untrained or "bundled", "machine": machine,
                                    "transformer_parameters": params, "text_encoder": engine.text_encoder.name,
                                    "width": c.width, "height": c.height, "fps": c.fps, "duration": args.duration,
                                    "rows": rows}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
