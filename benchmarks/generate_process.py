"""The whole `openseedance generate` process: wall time and peak memory from start to written file.

    python benchmarks/generate_process.py                          # this tree, 5 runs
    python benchmarks/generate_process.py --before /path/to/old/src --runs 5   # two trees, alternating
    python benchmarks/generate_process.py --args="--steps 2"       # options added to the command

Each run is a fresh process (`python -m openseedance.cli generate PROMPT -o FILE ...`), so it
counts the interpreter, the imports, the model load, the pipeline and writing the mp4 with its
manifest: what a user waits for. With `--before`, runs of the two trees alternate (before, after,
before, ...) so that both see the same machine load; the medians are compared. Writes JSON to
`benchmarks/generate_speed/generate_process.json` (or `--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "src"


def one_run(src: Path, prompt: str, extra: list[str], out: Path) -> tuple[float, float]:
    """(wall seconds, peak resident MiB) of one generate process run against the tree `src`."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-m", "openseedance.cli", "generate", prompt, "-o", str(out), *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024  # kB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", default="a red circle jumps and says hello")
    ap.add_argument("--args", default="", help="options added to the generate command")
    ap.add_argument("--before", type=Path, default=None, help="another tree's src folder, run alternately")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "generate_speed" / "generate_process.json")
    args = ap.parse_args()
    trees = {"this tree": HERE} if args.before is None else {"before": args.before.resolve(), "this tree": HERE}
    extra = shlex.split(args.args)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for src in trees.values():  # one unmeasured run each: the files in the page cache
            one_run(src, args.prompt, extra, Path(tmp) / "warm.mp4")
        for i in range(args.runs):
            for name, src in trees.items():
                runs[name].append(one_run(src, args.prompt, extra, Path(tmp) / f"{i}.mp4"))
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    print(f"`openseedance generate {args.prompt!r} {args.args}`: {args.runs} runs per tree, alternating; {cpu}")
    print("| tree | median wall s | min / max s | median peak MiB |")
    print("|---|---|---|---|")
    summary = {}
    for name, values in runs.items():
        walls, peaks = [w for w, _ in values], [p for _, p in values]
        summary[name] = {"wall_s": walls, "peak_mib": peaks, "median_wall_s": statistics.median(walls),
                         "median_peak_mib": statistics.median(peaks)}  # fmt: skip
        print(f"| {name} | {statistics.median(walls):.2f} | {min(walls):.2f} / {max(walls):.2f} | "
              f"{statistics.median(peaks):.0f} |")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"prompt": args.prompt, "args": args.args, "cpu": cpu, "trees": {
        k: str(v) for k, v in trees.items()}, "runs": summary}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
