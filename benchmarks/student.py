"""Quality against steps: a few-step student beside its teacher on stage-bench, case by case.

    python benchmarks/student.py --row student@1=runs/student/pipeline:1 --row student@2=runs/student/pipeline:2 \\
        --row teacher@8=bundled:8 --baseline teacher@8 --cases 32

Each row is `LABEL=MODEL:STEPS[:CASES]` (MODEL a model folder or `bundled`; the model's own guidance
and sampler otherwise). Every row runs the same fixed stage-bench cases, so rows are compared case
by case: for each capability and probe, the row's mean score, and its difference from the baseline
row with the standard error of that paired difference (what "within the noise" is measured
against: a difference smaller than about twice its standard error is not one). Times are seconds
per clip, generation only. Writes `benchmarks/student/student.json` (or `--out`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from openseedance.engines import RunOptions
from openseedance.pipeline import Pipeline, as_generator
from openseedance.stage import bench

PROBES = ("attribute", "action", "identity", "sync", "voice")


def _row(text: str) -> tuple[str, str, int, int | None]:
    label, _, spec = text.partition("=")
    parts = spec.split(":")
    if not label or len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"{text!r}: give LABEL=MODEL:STEPS[:CASES]")
    return label, parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else None


def paired(row: list[dict], base: list[dict], probe: str) -> tuple[float, float, int] | None:
    """Mean and standard error of the per-case score differences (row - base) on the cases both scored."""
    by_seed = {(r["capability"], r["seed"]): r["scores"].get(probe) for r in base}
    diffs = [r["scores"].get(probe) - by_seed[k] for r in row
             if (k := (r["capability"], r["seed"])) in by_seed and r["scores"].get(probe) is not None
             and by_seed[k] is not None]  # fmt: skip
    if len(diffs) < 2:
        return None
    d = np.asarray(diffs, dtype=np.float64)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))), len(d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--row", type=_row, action="append", default=[], help="LABEL=MODEL:STEPS[:CASES]")
    ap.add_argument("--baseline", default=None, help="the row the others are compared with (default: the first)")
    ap.add_argument("--capabilities", default="t2av,i2av,references,multi-shot,a2v,v2a,extension,editing")
    ap.add_argument("--cases", type=int, default=32, help="cases per capability (a row may ask for fewer)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--reuse", type=Path, action="append", default=[],
                    help="an earlier output of this script: its rows are taken as they are, not run again")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "student" / "student.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    caps = tuple(args.capabilities.split(","))
    if not args.row and not args.reuse:
        ap.error("give at least one --row (or --reuse)")
    baseline = args.baseline or (args.row[0][0] if args.row else None)
    results: dict[str, dict] = {}
    for path in args.reuse:  # the same fixed cases, so its rows pair with these case by case
        results.update(json.loads(path.read_text())["rows"])
    for label, model, steps, cases in args.row:
        pipe = Pipeline.from_pretrained(None if model == "bundled" else model)
        suite = bench.suite(caps, cases or args.cases)
        start = time.perf_counter()
        result = bench.run(as_generator(pipe, RunOptions(steps=steps)), suite, progress=sys.stderr.isatty())
        results[label] = {"model": model, "steps": steps, "cases": cases or args.cases,
                          "wall_s": time.perf_counter() - start, **result}  # fmt: skip
        print(f"{label}: {len(suite)} clips in {results[label]['wall_s']:.0f} s", file=sys.stderr)

    baseline = baseline or next(iter(results))
    base = results[baseline]["cases"]
    lines = [f"stage-bench by capability; differences from {baseline}, case by case (± standard error)",
             "| capability | row | n | " + " | ".join(PROBES) + " | s/clip |", "|" + "---|" * (len(PROBES) + 4)]
    for cap in caps:
        for label, res in results.items():
            row = res["rows"].get(cap)
            if row is None:
                continue
            mine = [r for r in res["cases"] if r["capability"] == cap]
            cells = []
            for probe in PROBES:
                if row.get(probe) is None:
                    cells.append("-")
                    continue
                text = f"{100 * row[probe]:.1f}%"
                d = paired(mine, base, probe) if label != baseline else None
                if d is not None:
                    text += f" ({100 * d[0]:+.1f} ± {100 * d[1]:.1f})"
                cells.append(text)
            lines.append(f"| {cap} | {label} | {row['cases']} | " + " | ".join(cells) + f" | {row['generate_s']:.2f} |")
    # over every capability: the mean difference per probe (each case counted once)
    lines.append("")
    lines.append("| all capabilities | " + " | ".join(PROBES) + " |")
    lines.append("|" + "---|" * (len(PROBES) + 1))
    for label, res in results.items():
        if label == baseline:
            continue
        cells = []
        for probe in PROBES:
            d = paired(res["cases"], base, probe)
            cells.append("-" if d is None else f"{100 * d[0]:+.1f} ± {100 * d[1]:.1f} (n={d[2]})")
        lines.append(f"| {label} - {baseline} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"baseline": baseline, "capabilities": caps, "rows": results,
                                    "machine": bench_machine()}, indent=1, default=float))  # fmt: skip


def bench_machine() -> str:
    import platform

    name = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        name = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    return f"{name or platform.processor()} ({platform.machine()}), {torch.get_num_threads()} threads"


if __name__ == "__main__":
    main()
