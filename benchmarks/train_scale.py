"""Training throughput, model FLOP utilisation, memory, and cost against clip length.

    python benchmarks/train_scale.py                       # every table, tiny preset, this machine
    python benchmarks/train_scale.py --preset 1b --device cuda --batch 4 --parts mfu   # on a GPU

Tables:
- peak: the measured matrix-product rate of this machine (float32 and bfloat16), the denominator
  of MFU;
- mfu: training steps (forward + backward + AdamW) per second at batch --batch on 4-second clips,
  in float32 and under bfloat16 autocast, with model FLOPs (3 x forward, attention included) and
  MFU against the peak of the precision used;
- memory: peak memory per process (fresh process each) for a few training steps: one process with
  and without activation checkpointing, and two processes (gloo) with DDP and with FSDP2;
- length: one training step (batch 1) and one sampling step at 4, 8, 15 and 30 seconds: time, peak
  memory, tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from openseedance.transformer import AVTransformer, Text, Tokens, transformer_config

FPS, TEMPORAL, PATCH_GRID, AUDIO_RATE, TEXT = 12.0, 4, (8, 8), 25, 64  # tiny's working format (64x64)


def tokens_for(seconds: float) -> dict[str, int]:
    frames = round(seconds * FPS)
    latent_frames = 1 + (frames - 1 + TEMPORAL - 1) // TEMPORAL
    return {"video": latent_frames * PATCH_GRID[0] * PATCH_GRID[1], "audio": round(seconds * AUDIO_RATE), "text": TEXT}


def inputs(model: torch.nn.Module, counts: dict[str, int], batch: int, device: str):
    cfg = getattr(model, "module", model).config  # DDP wraps the model
    streams = {s: Tokens(torch.randn(batch, counts[s], cfg.token_channels(s), device=device),
                         torch.rand(batch, counts[s], device=device), torch.rand(batch, counts[s], 3, device=device))
               for s in ("video", "audio")}  # fmt: skip
    text = Text(torch.randn(batch, counts["text"], cfg.text_dim, device=device),
                torch.ones(batch, counts["text"], dtype=torch.bool, device=device))  # fmt: skip
    return streams, text


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str, n: int = 2048, repeats: int = 10) -> dict[str, float]:
    out = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        _sync(device)
        out[name] = 2 * n**3 * repeats / (time.perf_counter() - t0)
    return out


def train_steps(model: AVTransformer, counts: dict[str, int], batch: int, bf16: bool, steps: int, device: str) -> float:
    """Seconds per training step (median of `steps` after 2 warm-up steps)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    streams, text = inputs(model, counts, batch, device)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            out = model(streams, text)
            loss = sum(v.float().pow(2).mean() for v in out.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def mfu(args: argparse.Namespace, peak: dict[str, float]) -> list[dict]:
    torch.manual_seed(0)
    model = AVTransformer(transformer_config(args.preset)).to(args.device)
    counts = tokens_for(4.0)
    flops = 3 * model.flops(counts) * args.batch
    rows = []
    for bf16 in (False, True):
        seconds = train_steps(model, counts, args.batch, bf16, args.steps, args.device)
        precision = "bfloat16" if bf16 else "float32"
        rows.append({"preset": args.preset, "precision": precision, "batch": args.batch, "step_s": seconds,
                     "steps_per_min": 60 / seconds, "tokens_per_s": args.batch * sum(counts.values()) / seconds,
                     "achieved_tflops": flops / seconds / 1e12, "mfu": flops / seconds / peak[precision]})  # fmt: skip
    return rows


# ------------------------------------------------------------------ memory (fresh processes)

CHILD = r"""
import json, resource, sys, torch
sys.path.insert(0, {bench!r})
import train_scale as ts
from openseedance import parallel
from openseedance.transformer import AVTransformer, transformer_config
import torch.distributed as dist
distributed = {distributed!r}
if distributed:
    dist.init_process_group("gloo")
torch.manual_seed(0)
model = AVTransformer(transformer_config({preset!r}))
parallel.parallelize(model, fsdp={fsdp!r}, activation_checkpointing={ckpt!r}, param_dtype=None)
if distributed and not {fsdp!r}:
    model = torch.nn.parallel.DistributedDataParallel(model)
counts = ts.tokens_for({seconds!r})
seconds = ts.train_steps(model, counts, {batch!r}, True, 2, "cpu")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if not distributed or dist.get_rank() == 0:
    print(json.dumps({{"step_s": seconds, "peak_mib": peak}}))
if distributed:
    dist.destroy_process_group()
"""


def _child(preset: str, seconds: float, batch: int, ckpt: str = "none", processes: int = 1, fsdp: bool = False) -> dict:
    code = CHILD.format(bench=str(Path(__file__).parent), preset=preset, seconds=seconds, batch=batch, ckpt=ckpt,
                        fsdp=fsdp, distributed=processes > 1)  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, os.cpu_count() // processes))}
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(code)
    cmd = (
        [sys.executable, f.name]
        if processes == 1
        else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", f.name]
    )
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    finally:
        os.unlink(f.name)
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory(args: argparse.Namespace) -> list[dict]:
    rows = []
    setups = [
        ("1 process", {}),
        ("1 process, activation checkpointing", {"ckpt": "full"}),
        ("2 processes, DDP", {"processes": 2}),
        ("2 processes, FSDP2", {"processes": 2, "fsdp": True}),
        ("2 processes, FSDP2 + checkpointing", {"processes": 2, "fsdp": True, "ckpt": "full"}),
    ]
    for label, kw in setups:
        r = _child(args.preset, 4.0, args.batch, **kw)
        rows.append({"setup": label, **r})
    return rows


def length(args: argparse.Namespace) -> list[dict]:
    rows = []
    torch.manual_seed(0)
    model = AVTransformer(transformer_config(args.preset))
    for seconds in (4.0, 8.0, 15.0, 30.0):
        counts = tokens_for(seconds)
        streams, text = inputs(model, counts, 2, "cpu")
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            model(streams, text)
            t0 = time.perf_counter()
            model(streams, text)  # one sampling step: conditional + unconditional in one batch
            sample_s = time.perf_counter() - t0
        train = _child(args.preset, seconds, 1)
        ckpt = _child(args.preset, seconds, 1, ckpt="full")
        rows.append({"seconds": seconds, "tokens": sum(counts.values()), "sample_step_s": sample_s,
                     "train_step_s": train["step_s"], "train_peak_mib": train["peak_mib"],
                     "train_ckpt_step_s": ckpt["step_s"], "train_ckpt_peak_mib": ckpt["peak_mib"]})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--parts", default="mfu,memory,length")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/train_scale.json"))
    args = parser.parse_args()
    parts = args.parts.split(",")
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {args.device}"
    result: dict = {"machine": machine, "preset": args.preset}
    peak = matmul_peak(args.device)
    result["peak_flops"] = peak
    print(f"{machine}: matmul peak float32 {peak['float32'] / 1e9:.0f} GFLOP/s, "
          f"bfloat16 {peak['bfloat16'] / 1e9:.0f} GFLOP/s")  # fmt: skip
    if "mfu" in parts:
        rows = result["mfu"] = mfu(args, peak)
        print("| preset | precision | batch | step s | steps/min | tokens/s | TFLOP/s | MFU |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['preset']} | {r['precision']} | {r['batch']} | {r['step_s']:.3f} | {r['steps_per_min']:.1f} | "
                  f"{r['tokens_per_s']:.0f} | {r['achieved_tflops']:.3f} | {100 * r['mfu']:.1f}% |")  # fmt: skip
    if "memory" in parts:
        rows = result["memory"] = memory(args)
        print(f"| setup (batch {args.batch} per process, bfloat16) | step s | peak MiB per process |\n|---|---|---|")
        for r in rows:
            print(f"| {r['setup']} | {r['step_s']:.3f} | {r['peak_mib']:.0f} |")
    if "length" in parts:
        rows = result["length"] = length(args)
        print("| clip s | tokens | sampling step s | train step s | train peak MiB | with checkpointing s | MiB |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['seconds']:g} | {r['tokens']} | {r['sample_step_s']:.3f} | {r['train_step_s']:.3f} | "
                  f"{r['train_peak_mib']:.0f} | {r['train_ckpt_step_s']:.3f} | "
                  f"{r['train_ckpt_peak_mib']:.0f} |")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
