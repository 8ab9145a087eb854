"""Multi-shot prompts read per shot (each shot's tokens see the global caption and their own shot's)
or as one text (every token sees the whole prompt), on the stage-bench multi-shot cases.

    python benchmarks/shots.py                                  # the bundled model
    python benchmarks/shots.py --models bundled,runs/old/pipeline --cases 8

Columns are the stage-bench probes; `identity` is cross-shot identity consistency (each character
keeps its looks across the cuts).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from openseedance.engines import RunOptions
from openseedance.pipeline import Pipeline, as_generator
from openseedance.stage import bench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="bundled", help="comma-separated: bundled or model folders")
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/shots/shots.json")
    args = ap.parse_args()
    cases = bench.suite(("multi-shot",), args.cases)
    result = {}
    print("| model | prompt read | attribute | action | identity | voice |\n|---|---|---|---|---|---|")
    for spec in args.models.split(","):
        pipe = Pipeline.from_pretrained(None if spec == "bundled" else spec)
        for per_shot in (True, False):
            generate = as_generator(pipe, RunOptions(per_shot=per_shot))
            row = bench.run(generate, cases, progress=False)["rows"]["multi-shot"]
            how = "per shot" if per_shot else "one text"
            result[f"{spec} {how}"] = row
            cells = ["-" if row[k] is None else f"{100 * row[k]:.1f}%" for k in ("attribute", "action", "identity",
                                                                                  "voice")]  # fmt: skip
            print(f"| {spec} | {how} | " + " | ".join(cells) + " |")
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
