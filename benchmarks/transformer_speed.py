"""How fast is the AV transformer's forward pass next to diffusers' LTX-2 transformer?

    python benchmarks/transformer_speed.py                          # float32 and bfloat16, this CPU
    python benchmarks/transformer_speed.py --before /work/main/src  # also an earlier tree of ours

Builds `AVTransformer` and diffusers' `LTX2VideoTransformer3DModel` at one matched configuration
(width 256, 8 heads of 32, depth 4; 2,048 video + 100 audio + 128 text tokens, batch 1, per-token
diffusion times for both), random weights, inference mode, and times one forward pass of each,
interleaved (A B A B ...) in one process after a warm-up, in float32 and under bfloat16 autocast.
Prints the median milliseconds per forward, the ratio LTX-2 / ours (> 1: ours is faster), and the
work each does (parameters, MLP width, FLOPs counted by `torch.utils.flop_counter`).

How the configurations are matched (LTX-2's knob = ours):
- width: `num_attention_heads * attention_head_dim` = 8 * 32 = 256 = `dim`; the audio stream's
  `audio_num_attention_heads * audio_attention_head_dim` = 8 * 32 = 256 too (ours has one width for
  every stream).
- depth: `num_layers` = 4 = `depth`.
- MLP: LTX-2's GELU feed-forward is 4 * 256 = 1,024 wide (two matrices); ours is a SwiGLU of
  hidden width 704 (three matrices, `mlp_ratio` 8/3 rounded up to 32): 524k against 541k weights.
- text: `caption_channels` = 384 = `text_dim`; LTX-2 projects the caption to each stream's width
  (`cross_attention_dim` = `audio_cross_attention_dim` = 256).
- patching: LTX-2 takes already-patchified tokens: `in_channels` = 32 = our 8 latent channels x
  the (1, 2, 2) patch, on an 8 x 16 x 16 token grid = 2,048 video tokens; `audio_in_channels` = 32
  = `audio_channels`, 100 audio tokens; 128 caption tokens for each.
The architectures differ where they differ by design: ours runs one joint attention over all 2,276
tokens per block; LTX-2 runs video and audio self-attention, text cross-attention per stream, and
audio-to-video / video-to-audio cross-attention. The FLOP counts show what that costs each.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from openseedance.transformer import AVTransformer, AVTransformerConfig, Text, Tokens

DIM, DEPTH, HEADS = 256, 4, 8
GRID = (8, 16, 16)  # video tokens: frames x rows x columns = 2,048
AUDIO, TEXT = 100, 128


def ours_config() -> AVTransformerConfig:
    return AVTransformerConfig(dim=DIM, depth=DEPTH, heads=HEADS, video_channels=8, audio_channels=32,
                               patch=(1, 2, 2), text_dim=384)  # fmt: skip


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Every weight random (a fresh model has zero gates and heads by design, which is not a fair
    forward: nothing would be skipped, but the outputs would be trivially zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02 + (p if p.dim() == 1 else 0))


def ours_inputs(shared: bool, seed: int = 0) -> tuple[dict[str, Tokens], Text]:
    """Random tokens; diffusion times random per token, or with `shared` one random time for every
    token of a stream (text-to-clip sampling)."""
    g = torch.Generator().manual_seed(seed)
    f, h, w = GRID
    nv = f * h * w
    grid = torch.stack(torch.meshgrid(torch.arange(f) * 0.16, torch.arange(h) + 0.5, torch.arange(w) + 0.5,
                                      indexing="ij"), -1).reshape(1, nv, 3).float()  # fmt: skip
    audio_pos = torch.zeros(1, AUDIO, 3)
    audio_pos[..., 0] = torch.arange(AUDIO) * 0.04
    audio_pos[..., 1:] = 0.5 * torch.tensor([h, w])
    t_video, t_audio = torch.rand(1, nv, generator=g), torch.rand(1, AUDIO, generator=g)
    if shared:
        t_video, t_audio = t_video[:, :1].expand(1, nv).clone(), t_audio[:, :1].expand(1, AUDIO).clone()
    video = Tokens(torch.randn(1, nv, 32, generator=g), t_video, grid)
    audio = Tokens(torch.randn(1, AUDIO, 32, generator=g), t_audio, audio_pos)
    text = Text(torch.randn(1, TEXT, 384, generator=g), torch.ones(1, TEXT, dtype=torch.bool))
    return {"video": video, "audio": audio}, text


def ltx2_model() -> torch.nn.Module:
    from diffusers import LTX2VideoTransformer3DModel

    return LTX2VideoTransformer3DModel(
        in_channels=32, out_channels=32, patch_size=1, patch_size_t=1,
        num_attention_heads=HEADS, attention_head_dim=DIM // HEADS, cross_attention_dim=DIM,
        audio_in_channels=32, audio_out_channels=32, audio_num_attention_heads=HEADS,
        audio_attention_head_dim=DIM // HEADS, audio_cross_attention_dim=DIM,
        num_layers=DEPTH, caption_channels=384,
    )  # fmt: skip


def ltx2_inputs(shared: bool, seed: int = 0) -> dict:
    """The same, as LTX-2 takes them: per-token times (B, N) as its image-to-video pipeline passes
    them, or with `shared` one time per sample (B,) as its text-to-video pipeline does."""
    g = torch.Generator().manual_seed(seed)
    f, h, w = GRID
    nv = f * h * w
    t_video, t_audio = torch.rand(1, nv, generator=g) * 1000, torch.rand(1, AUDIO, generator=g) * 1000
    if shared:
        t_video, t_audio = t_video[:, 0], t_audio[:, 0]
    return dict(hidden_states=torch.randn(1, nv, 32, generator=g),
                audio_hidden_states=torch.randn(1, AUDIO, 32, generator=g),
                encoder_hidden_states=torch.randn(1, TEXT, 384, generator=g),
                audio_encoder_hidden_states=torch.randn(1, TEXT, 384, generator=g),
                timestep=t_video, audio_timestep=t_audio,
                sigma=torch.rand(1, generator=g), audio_sigma=torch.rand(1, generator=g),
                encoder_attention_mask=torch.ones(1, TEXT), audio_encoder_attention_mask=torch.ones(1, TEXT),
                num_frames=f, height=h, width=w, fps=25.0, audio_num_frames=AUDIO, return_dict=False)  # fmt: skip


def load_tree(src: Path) -> types.ModuleType:
    """Another tree's `transformer` module, loaded beside ours under other names (it imports its own
    `layers`), so both can be timed in one process."""
    name = f"before_{abs(hash(str(src)))}"
    layers_spec = importlib.util.spec_from_file_location(f"{name}_layers", src / "openseedance" / "layers.py")
    layers = importlib.util.module_from_spec(layers_spec)
    sys.modules[layers_spec.name] = layers
    layers_spec.loader.exec_module(layers)
    source = (src / "openseedance" / "transformer.py").read_text()
    source = source.replace("from openseedance.layers import", f"from {layers_spec.name} import")
    module = types.ModuleType(f"{name}_transformer")
    sys.modules[module.__name__] = module
    exec(compile(source, str(src / "openseedance" / "transformer.py"), "exec"), module.__dict__)
    return module


def count_flops(fn: Callable[[], object]) -> int:
    """Matrix-product and attention FLOPs of one call. The CPU's attention kernel is not in torch's
    table: it is counted with the formula of the GPU kernels (4 N_q N_k Dh per head)."""
    def sdpa(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(q_shape, k_shape, v_shape)

    cpu_sdpa = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: sdpa}
    with FlopCounterMode(display=False, custom_mapping=cpu_sdpa) as counter:
        fn()
    return counter.get_total_flops()


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, list[tuple]]:
    """(wall, CPU) seconds of each call, the models taking turns. The CPU time of this process (all
    its threads) is kept beside the wall time: on a shared machine it moves less with other work."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for i in range(repeats):
        order = list(fns) if i % 2 == 0 else list(reversed(fns))  # neither always runs first
        for name in order:
            wall, cpu = time.perf_counter(), time.process_time()
            fns[name]()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--times", default="per-token,shared", help="diffusion times: per-token, shared or both")
    parser.add_argument("--before", type=Path, default=None, help="an earlier tree's src/ folder to time too")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/transformer_speed/transformer_speed.json"))
    args = parser.parse_args()
    torch.manual_seed(0)

    ours = AVTransformer(ours_config()).eval()
    randomize(ours, 1)
    ltx2 = ltx2_model().eval()
    randomize(ltx2, 2)
    before = None
    if args.before is not None:
        before = load_tree(args.before.resolve()).AVTransformer(ours_config()).eval()
        before.load_state_dict(ours.state_dict())
    work = {
        "ours": {"parameters": sum(p.numel() for p in ours.parameters()), "mlp_hidden": ours.config.mlp_hidden,
                 "mlp_weights_per_stream": sum(p.numel() for p in ours.blocks[0].streams["video"].mlp.parameters())},
        "ltx2": {"parameters": sum(p.numel() for p in ltx2.parameters()), "mlp_hidden": 4 * DIM,
                 "mlp_weights_per_stream": sum(p.numel() for p in ltx2.transformer_blocks[0].ff.parameters())},
    }  # fmt: skip
    rows, max_diff = [], {}
    for times in args.times.split(","):
        (streams, text), ltx_in = ours_inputs(times == "shared"), ltx2_inputs(times == "shared")
        models: dict[str, Callable[[], object]] = {"ours": partial(ours, streams, text),
                                                   "ltx2": partial(ltx2, **ltx_in)}
        if before is not None:
            models = {"before": partial(before, streams, text), **models}
            with torch.inference_mode():
                a, b = ours(streams, text), before(streams, text)
            max_diff[times] = max(float((a[s] - b[s]).abs().max()) for s in a)
        for precision in args.precisions.split(","):
            bf16 = precision == "bfloat16"
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                flops = {name: count_flops(fn) for name, fn in models.items()}
                samples = interleaved(models, args.repeats, args.warmup)
            ms = {name: 1000 * statistics.median(w for w, _ in t) for name, t in samples.items()}
            cpu_ms = {name: 1000 * statistics.median(c for _, c in t) for name, t in samples.items()}
            best_ms = {name: 1000 * min(w for w, _ in t) for name, t in samples.items()}
            row = {"times": times, "precision": precision, **{f"{n}_ms": v for n, v in ms.items()},
                   **{f"{n}_cpu_ms": v for n, v in cpu_ms.items()}, **{f"{n}_best_ms": v for n, v in best_ms.items()},
                   "ltx2_over_ours_cpu": cpu_ms["ltx2"] / cpu_ms["ours"],
                   **{f"{n}_gflop": f / 1e9 for n, f in flops.items()},
                   "ltx2_over_ours": ms["ltx2"] / ms["ours"]}  # fmt: skip
            if "before" in ms:
                row["before_over_ours"] = ms["before"] / ms["ours"]
                row["ltx2_over_before"] = ms["ltx2"] / ms["before"]
                row["before_over_ours_cpu"] = cpu_ms["before"] / cpu_ms["ours"]
            rows.append(row)
            print(f"{times} times, {precision}: " + ", ".join(f"{n} {v:.1f} ms" for n, v in ms.items())
                  + f"; LTX-2 / ours {row['ltx2_over_ours']:.2f}x"
                  + (f"; before / ours {row['before_over_ours']:.2f}x" if "before" in ms else "")
                  + "; CPU time " + ", ".join(f"{n} {v:.1f} ms" for n, v in cpu_ms.items())
                  + "; fastest " + ", ".join(f"{n} {v:.1f} ms" for n, v in best_ms.items()),
                  flush=True)  # fmt: skip

    names = [n for n in ("before", "ours", "ltx2") if f"{n}_ms" in rows[0]]
    print()
    print("| times | precision | " + " | ".join(f"{n} ms" for n in names) + " | LTX-2 / ours | "
          + ("LTX-2 / before | " if before is not None else "") + "GFLOP " + " / ".join(names) + " |")
    print("|---|---|" + "---|" * len(names) + "---|" + ("---|" if before is not None else "") + "---|")
    for r in rows:
        print(f"| {r['times']} | {r['precision']} | " + " | ".join(f"{r[f'{n}_ms']:.1f}" for n in names)
              + f" | {r['ltx2_over_ours']:.2f}x | " + (f"{r['ltx2_over_before']:.2f}x | " if before is not None else "")
              + " / ".join(f"{r[f'{n}_gflop']:.2f}" for n in names) + " |")  # fmt: skip
    print(f"parameters ours {work['ours']['parameters']:,}, LTX-2 {work['ltx2']['parameters']:,}; MLP weights per "
          f"stream and block {work['ours']['mlp_weights_per_stream']:,} / {work['ltx2']['mlp_weights_per_stream']:,}")
    for times, diff in max_diff.items():
        print(f"max |ours - before| over the outputs, {times} times, float32: {diff:.3g}")

    result = {"command": " ".join(["python", *sys.argv]), "date": datetime.date.today().isoformat(),
              "machine": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "tokens": {"video": GRID[0] * GRID[1] * GRID[2], "audio": AUDIO, "text": TEXT},
              "dim": DIM, "depth": DEPTH, "heads": HEADS, "repeats": args.repeats, "warmup": args.warmup,
              "work": work, "before": str(args.before) if args.before else None,
              "max_abs_diff_before": max_diff or None, "rows": rows}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
