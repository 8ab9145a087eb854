"""How fast the Stage renders and the probes read, for 4-second clips.

python benchmarks/stage_speed.py [--clips 10] [--out benchmarks/stage_speed/stage_speed.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from openseedance.stage.probes import probe
from openseedance.stage.render import RenderConfig, render
from openseedance.stage.scene import sample_scene

CONFIGS = {
    "64x64 12fps 16kHz": RenderConfig(64, 64, 12.0, 16000),
    "256x256 24fps 48kHz": RenderConfig(256, 256, 24.0, 48000),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/stage_speed/stage_speed.json"))
    args = parser.parse_args()
    scenes = [sample_scene(9000 + i) for i in range(args.clips)]
    rows = {}
    for name, config in CONFIGS.items():
        t0 = time.perf_counter()
        renders = [render(s, config) for s in scenes]
        t1 = time.perf_counter()
        for r in renders:
            probe(r.clip, r.scene)
        t2 = time.perf_counter()
        rows[name] = {"render_clips_per_s": args.clips / (t1 - t0), "probe_s_per_clip": (t2 - t1) / args.clips}
    print(
        f"stage speed: {args.clips} clips of 4 s, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads"
    )
    print("| format | render clips/s | render x real time | probe s/clip |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['render_clips_per_s']:.1f} | {4 * row['render_clips_per_s']:.0f}x | "
            f"{row['probe_s_per_clip']:.2f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"clips": args.clips, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
