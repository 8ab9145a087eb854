"""Parameters and FLOPs of every transformer preset (built on the meta device: no memory used).

    python benchmarks/model_size.py [--out benchmarks/model_size/model_size.json]

FLOPs are for one sample of a 4-second clip at the preset's working size: forward, and a training
step (forward + backward ≈ 3 x forward). Token counts: `tiny` at 64x64 / 12 fps with the tiny
autoencoders (4x spatial, 4x temporal, 2x2 patches: 13 x 8 x 8 video tokens, 100 audio tokens);
the real-scale presets at 480p (848x480 through an 8x spatial autoencoder and 2x2 patches: 30 x 53
tokens per latent frame), 24 fps (97 frames -> 25 latent frames) and 250 audio tokens; 64 text
tokens.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from openseedance.transformer import PRESETS, AVTransformer

TOKENS = {
    "debug": {"video": 13 * 8 * 8, "audio": 100, "text": 32},
    "tiny": {"video": 13 * 8 * 8, "audio": 100, "text": 64},
    "small": {"video": 25 * 30 * 53, "audio": 250, "text": 64},
    "1b": {"video": 25 * 30 * 53, "audio": 250, "text": 64},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/model_size/model_size.json"))
    args = parser.parse_args()
    rows = []
    for name, config in PRESETS.items():
        with torch.device("meta"):
            model = AVTransformer(config)
        tokens = TOKENS[name]
        fwd = model.flops(tokens)
        rows.append(
            {"preset": name, "parameters": model.num_parameters(), "dim": config.dim, "depth": config.depth,
             "heads": config.heads, "tokens": tokens, "forward_flops": fwd, "train_step_flops": 3 * fwd}
        )  # fmt: skip
    print("| preset | parameters | width x depth | tokens (video+audio+text) | forward GFLOP | train step GFLOP |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        t = r["tokens"]
        print(f"| {r['preset']} | {r['parameters'] / 1e6:.1f}M | {r['dim']} x {r['depth']} | "
              f"{t['video']}+{t['audio']}+{t['text']} | {r['forward_flops'] / 1e9:.1f} | "
              f"{r['train_step_flops'] / 1e9:.1f} |")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
