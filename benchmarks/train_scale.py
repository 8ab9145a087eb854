"""Training throughput, model FLOP utilisation, memory, and cost against clip length.

    python benchmarks/train_scale.py                       # every table, tiny preset, this machine
    python benchmarks/train_scale.py --preset 1b --device cuda --format 480p --seconds 2 --batch 1 \
        --parts mfu,length --precisions bfloat16 --compile   # real scale on a GPU

Tables:
- peak: the measured matrix-product rate of this machine (float32 and bfloat16), the denominator
  of MFU;
- mfu: training steps (forward + backward + AdamW) per second at batch --batch on --seconds clips
  of --format (tiny: the bundled model's 64x64 at 12 fps; 480p: 848x480 at 24 fps through the
  real-scale autoencoders), in each of --precisions (bfloat16: autocast), as they are and with
  --checkpointing / --compile applied, with model FLOPs (3 x forward, attention included; the
  recomputation of checkpointing is not counted) and MFU against the peak of the precision used;
- memory: peak memory per process (fresh process each) for a few training steps: one process with
  and without activation checkpointing, and two processes (gloo) with DDP and with FSDP2;
- length: one training step (batch 1) and one sampling step at --lengths seconds: time, peak
  memory, tokens (on a GPU in this process, and a length that does not fit is reported as such).
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

from openseedance import parallel
from openseedance.transformer import AVTransformer, Text, Tokens, transformer_config

TEMPORAL, PATCH, AUDIO_RATE, TEXT = 4, 2, 25, 64
# width, height, fps, spatial factor of the autoencoder: the bundled model's and the real-scale one's
FORMATS = {"tiny": (64, 64, 12.0, 4), "480p": (848, 480, 24.0, 8)}


def tokens_for(seconds: float, fmt: str = "tiny") -> dict[str, int]:
    width, height, fps, spatial = FORMATS[fmt]
    frames = round(seconds * fps)
    latent_frames = 1 + (frames - 1 + TEMPORAL - 1) // TEMPORAL
    grid = (height // spatial // PATCH) * (width // spatial // PATCH)
    return {"video": latent_frames * grid, "audio": round(seconds * AUDIO_RATE), "text": TEXT}


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
    counts = tokens_for(args.seconds, args.format)
    flops = 3 * model.flops(counts) * args.batch
    setups = [("as is", {})]
    if args.checkpointing != "none" or args.compile:
        setups.append((f"checkpointing {args.checkpointing}" + (", compiled" if args.compile else ""),
                       {"activation_checkpointing": args.checkpointing, "compile": args.compile}))  # fmt: skip
    rows = []
    for label, applied in setups:
        if applied:
            parallel.parallelize(model, param_dtype=None, **applied)
        for precision in args.precisions.split(","):
            try:
                seconds = train_steps(model, counts, args.batch, precision == "bfloat16", args.steps, args.device)
            except torch.OutOfMemoryError:
                rows.append({"preset": args.preset, "setup": label, "precision": precision, "batch": args.batch,
                             "tokens": sum(counts.values()), "step_s": None})  # fmt: skip
                torch.cuda.empty_cache()
                continue
            rows.append({"preset": args.preset, "setup": label, "precision": precision, "batch": args.batch,
                         "tokens": sum(counts.values()), "step_s": seconds, "steps_per_min": 60 / seconds,
                         "tokens_per_s": args.batch * sum(counts.values()) / seconds,
                         "achieved_tflops": flops / seconds / 1e12, "mfu": flops / seconds / peak[precision],
                         **_peak(args.device)})  # fmt: skip
    return rows


def _peak(device: str) -> dict[str, float]:
    """Peak GPU memory since the last call (nothing on a CPU)."""
    if not device.startswith("cuda"):
        return {}
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return {"peak_gib": peak}


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
counts = ts.tokens_for({seconds!r}, {fmt!r})
seconds = ts.train_steps(model, counts, {batch!r}, True, 2, "cpu")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if not distributed or dist.get_rank() == 0:
    print(json.dumps({{"step_s": seconds, "peak_mib": peak}}))
if distributed:
    dist.destroy_process_group()
"""


def _child(preset: str, seconds: float, batch: int, ckpt: str = "none", processes: int = 1, fsdp: bool = False,
           fmt: str = "tiny") -> dict:  # fmt: skip
    code = CHILD.format(bench=str(Path(__file__).parent), preset=preset, seconds=seconds, batch=batch, ckpt=ckpt,
                        fsdp=fsdp, distributed=processes > 1, fmt=fmt)  # fmt: skip
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
        r = _child(args.preset, args.seconds, args.batch, fmt=args.format, **kw)
        rows.append({"setup": label, **r})
    return rows


def length(args: argparse.Namespace) -> list[dict]:
    """The length table on the CPU: training steps in fresh processes, peak memory from their RSS."""
    rows = []
    torch.manual_seed(0)
    model = AVTransformer(transformer_config(args.preset))
    for seconds in (float(x) for x in args.lengths.split(",")):
        counts = tokens_for(seconds, args.format)
        streams, text = inputs(model, counts, 2, "cpu")
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            model(streams, text)
            t0 = time.perf_counter()
            model(streams, text)  # one sampling step: conditional + unconditional in one batch
            sample_s = time.perf_counter() - t0
        train = _child(args.preset, seconds, 1, fmt=args.format)
        ckpt = _child(args.preset, seconds, 1, ckpt="full", fmt=args.format)
        rows.append({"seconds": seconds, "tokens": sum(counts.values()), "sample_step_s": sample_s,
                     "train_step_s": train["step_s"], "train_peak_mib": train["peak_mib"],
                     "train_ckpt_step_s": ckpt["step_s"], "train_ckpt_peak_mib": ckpt["peak_mib"]})  # fmt: skip
    return rows


def length_gpu(args: argparse.Namespace) -> list[dict]:
    """The length table on a GPU, in this process: bfloat16 autocast, peak memory from the allocator."""
    torch.manual_seed(0)
    plain = AVTransformer(transformer_config(args.preset)).to(args.device)
    ckpt = AVTransformer(transformer_config(args.preset)).to(args.device)
    parallel.parallelize(ckpt, activation_checkpointing="full", param_dtype=None)
    rows = []
    for seconds in (float(x) for x in args.lengths.split(",")):
        counts = tokens_for(seconds, args.format)
        row: dict = {"seconds": seconds, "tokens": sum(counts.values())}
        _peak(args.device)
        try:
            streams, text = inputs(plain, counts, 2, args.device)
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                plain(streams, text)
                _sync(args.device)
                t0 = time.perf_counter()
                plain(streams, text)  # one sampling step: conditional + unconditional in one batch
                _sync(args.device)
            row.update(sample_step_s=time.perf_counter() - t0, sample_peak_gib=_peak(args.device)["peak_gib"])
            del streams, text
        except torch.OutOfMemoryError:
            row.update(sample_step_s=None)
        for name, model in (("train", plain), ("train_ckpt", ckpt)):
            try:
                row[f"{name}_step_s"] = train_steps(model, counts, 1, True, 1, args.device)
                row[f"{name}_peak_gib"] = _peak(args.device)["peak_gib"]
            except torch.OutOfMemoryError:
                row[f"{name}_step_s"] = None
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            _peak(args.device)
        rows.append(row)
    return rows


def _cell(value: float | None, fmt: str, missing: str = "out of memory") -> str:
    return missing if value is None else format(value, fmt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--parts", default="mfu,memory,length")
    parser.add_argument("--format", choices=sorted(FORMATS), default="tiny", help="clip format of the tokens")
    parser.add_argument("--seconds", type=float, default=4.0, help="clip length for the mfu table")
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--checkpointing", choices=parallel.CHECKPOINTING, default="none",
                        help="mfu table: also with this activation checkpointing")
    parser.add_argument("--compile", action="store_true", help="mfu table: also with compiled blocks")
    parser.add_argument("--lengths", default="4,8,15,30", help="clip lengths (s) for the length table")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/train_scale/train_scale.json"))
    args = parser.parse_args()
    parts = args.parts.split(",")
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {args.device}"
    if args.device.startswith("cuda"):
        machine = f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    result: dict = {"machine": machine, "preset": args.preset, "format": args.format}
    peak = matmul_peak(args.device, n=8192 if args.device.startswith("cuda") else 2048)
    result["peak_flops"] = peak
    print(f"{machine}: matmul peak float32 {peak['float32'] / 1e9:.0f} GFLOP/s, "
          f"bfloat16 {peak['bfloat16'] / 1e9:.0f} GFLOP/s")  # fmt: skip
    if "mfu" in parts:
        rows = result["mfu"] = mfu(args, peak)
        print(f"training on {args.seconds:g} s clips ({args.format}), tokens per clip {rows[0]['tokens']}")
        print("| preset | setup | precision | batch | step s | steps/min | tokens/s | TFLOP/s | MFU | peak GiB |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            if r["step_s"] is None:
                print(f"| {r['preset']} | {r['setup']} | {r['precision']} | {r['batch']} | out of memory |||||")
                continue
            print(f"| {r['preset']} | {r['setup']} | {r['precision']} | {r['batch']} | {r['step_s']:.3f} | "
                  f"{r['steps_per_min']:.1f} | {r['tokens_per_s']:.0f} | {r['achieved_tflops']:.3f} | "
                  f"{100 * r['mfu']:.1f}% | {_cell(r.get('peak_gib'), '.1f', '-')} |")  # fmt: skip
    if "memory" in parts:
        rows = result["memory"] = memory(args)
        print(f"| setup (batch {args.batch} per process, bfloat16) | step s | peak MiB per process |\n|---|---|---|")
        for r in rows:
            print(f"| {r['setup']} | {r['step_s']:.3f} | {r['peak_mib']:.0f} |")
    if "length" in parts and args.device.startswith("cuda"):
        rows = result["length"] = length_gpu(args)
        print(f"| clip s ({args.format}) | tokens | sampling step s | GiB | train step s | GiB | "
              "with checkpointing s | GiB |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
        for r in rows:
            cells = [_cell(r.get(k), ".3f" if k.endswith("_s") else ".1f") for k in (
                "sample_step_s", "sample_peak_gib", "train_step_s", "train_peak_gib", "train_ckpt_step_s",
                "train_ckpt_peak_gib")]  # fmt: skip
            print(f"| {r['seconds']:g} | {r['tokens']} | " + " | ".join(cells) + " |")
    elif "length" in parts:
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
