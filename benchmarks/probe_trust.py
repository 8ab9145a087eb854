"""Are the probes trustworthy? Score true Stage clips and deliberately corrupted ones.

    python benchmarks/probe_trust.py [--scenes 24] [--out benchmarks/probe_trust/probe_trust.json]

Prints one row per clip kind (truth, truth through an mp4 file, each corruption) with the mean
score of every probe over the scenes where it applies, the mean |AV offset| and the mean
mouth/voice correlation.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from openseedance import media
from openseedance.stage.corrupt import CORRUPTIONS, applicable
from openseedance.stage.probes import PROBES, probe
from openseedance.stage.render import RenderConfig, render
from openseedance.stage.scene import sample_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=24)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/probe_trust/probe_trust.json"))
    args = parser.parse_args()
    config = RenderConfig(args.size, args.size, 12.0 if args.size <= 64 else 24.0, 16000 if args.size <= 64 else 48000)
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.scenes):
            # half the scenes have two or three shots, so the identity probe has something to check
            scene = sample_scene(5000 + i, num_shots=None if i % 2 else 2 + (i // 2) % 2)
            r = render(scene, config)
            path = Path(tmp) / "clip.mp4"
            media.write_video(path, r.clip)
            kinds = {"truth": r.clip, "truth via mp4": path}
            kinds |= {name: fn(r) for name, fn in CORRUPTIONS.items() if applicable(name, scene)}
            for kind, clip in kinds.items():
                rep = probe(clip, scene)
                for name, value in rep.scores.items():
                    if value is not None:
                        scores[kind][name].append(value)
                if rep.av_offset_ms is not None:
                    scores[kind]["|offset| ms"].append(abs(rep.av_offset_ms))
                if rep.mouth_voice_corr is not None:
                    scores[kind]["mouth~voice"].append(rep.mouth_voice_corr)
    cols = [*PROBES, "|offset| ms", "mouth~voice"]
    print(
        f"probe trust: {args.scenes} scenes at {config.width}x{config.height}, {config.fps:g} fps, "
        f"{config.sample_rate} Hz ({time.perf_counter() - start:.0f} s)"
    )
    print("| clip | " + " | ".join(cols) + " |")
    print("|" + "---|" * (len(cols) + 1))
    table = {}
    for kind, row in scores.items():
        table[kind] = {c: (float(np.mean(row[c])) if row.get(c) else None) for c in cols}
        table[kind]["n"] = {c: len(row.get(c, [])) for c in cols}
        cells = []
        for c in cols:
            v = table[kind][c]
            cells.append(
                "-"
                if v is None
                else (f"{100 * v:.1f}%" if c in PROBES else f"{v:.2f}" if c == "mouth~voice" else f"{v:.0f}")
            )
        print(f"| {kind} | " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": vars(config), "scenes": args.scenes, "table": table}, indent=1))


if __name__ == "__main__":
    main()
