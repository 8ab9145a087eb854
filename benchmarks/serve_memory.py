"""The server's and the worker's memory under hostile inputs, over loopback.

    python benchmarks/serve_memory.py                       # this checkout
    python benchmarks/serve_memory.py --src OTHER/src --label before   # another checkout's code

Starts `openseedance serve` (one worker, the bundled model) and sends, one at a time, requests whose
inputs are small files that decode to a lot (tests/hostile_media.py): a 1280x720, 60 fps, 10 s solid
H.264 clip as a reference video and as a clip to extend, an MKV whose header says 64x64 but whose
frames turn 1280x720, a 16000x16000 and a 4096x4096 PNG, 15 s of 8-channel 192 kHz FLAC and 60 s of
WAV. Before each request the peak resident memory (VmHWM) of the server and of the worker is reset
(/proc/<pid>/clear_refs); after it (and its job, when accepted) the peaks above idle are read. A plain
64x64, 12 fps, 10 s clip to extend is the yardstick: the engine's own work for an 11 s clip.
Prints a table, one row per input class with the worst accepted and worst refused input, and writes
JSON to benchmarks/serve_memory/serve_memory.json (or serve_memory_<label>.json).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import hostile_media  # noqa: E402
from serve_util import KEY, Server, wait_for  # noqa: E402

MiB = 1 << 20
AUTH = {"authorization": f"Bearer {KEY}"}


def make_inputs(folder: Path) -> dict[str, Path]:
    return {
        "plain clip 64x64 10 s": hostile_media.solid_video(folder / "plain.mp4", 64, 64, 12, 10.0),
        "1280x720 60 fps 10 s": hostile_media.solid_video(folder / "solid.mp4"),
        "header says 64x64, frames 1280x720": hostile_media.lying_video(folder / "lying.mkv"),
        "PNG 16000x16000": hostile_media.solid_png(folder / "huge.png", 16000),
        "PNG 4096x4096": hostile_media.solid_png(folder / "big.png", 4096),
        "FLAC 15 s 8 ch 192 kHz": hostile_media.quiet_audio(folder / "wide.flac", 15, rate=192000, channels=8),
        "WAV 60 s": hostile_media.quiet_audio(folder / "long.wav", 60),
    }


def ark(kind: str, role: str):
    def send(srv: Server, path: Path) -> httpx.Response:
        url = "data:application/octet-stream;base64," + base64.b64encode(path.read_bytes()).decode()
        content = [{"type": "text", "text": "a bell rings --dur 2"}, {"type": kind, kind: {"url": url}, "role": role}]
        return httpx.post(f"{srv.url}/api/v3/contents/generations/tasks", json={"model": "m", "content": content},
                          headers=AUTH, timeout=300)  # fmt: skip

    return send


def extend(srv: Server, path: Path) -> httpx.Response:
    files = {"video": (path.name, path.read_bytes(), "application/octet-stream")}
    return httpx.post(f"{srv.url}/v1/videos/extensions", data={"prompt": "and on", "seconds": "1"}, files=files,
                      headers=AUTH, timeout=300)  # fmt: skip


# (row, how it is sent, inputs)
CLASSES = [
    ("huge compressible video as reference", ark("video_url", "reference_video"), ["1280x720 60 fps 10 s"]),
    ("yardstick: plain 64x64 clip to extend", extend, ["plain clip 64x64 10 s"]),
    ("huge compressible video as clip to extend", extend, ["1280x720 60 fps 10 s"]),
    ("container lying about its size (clip to extend)", extend, ["header says 64x64, frames 1280x720"]),
    ("huge image as reference", ark("image_url", "reference_image"), ["PNG 16000x16000", "PNG 4096x4096"]),
    ("long or wide audio as reference", ark("audio_url", "reference_audio"),
     ["FLAC 15 s 8 ch 192 kHz", "WAV 60 s"]),
]  # fmt: skip


def finished(srv: Server, response: httpx.Response) -> str:
    """Wait for an accepted request's job; its final status."""
    job = response.json()["id"]
    if job.startswith("cgt-"):
        url, done = f"{srv.url}/api/v3/contents/generations/tasks/{job}", ("succeeded", "failed", "expired")
    else:
        url, done = f"{srv.url}/v1/videos/{job}", ("completed", "failed")
    return wait_for(lambda: (s := httpx.get(url, headers=AUTH, timeout=30).json()["status"]) in done and s, 600)


def measure(srv: Server, send, path: Path) -> dict:
    pids = {"server": srv.process.pid, "worker": srv.workers()[0]}
    idle = {name: hostile_media.reset_peak(pid) for name, pid in pids.items()}
    start = time.time()
    response = send(srv, path)
    if response.status_code == 200:
        outcome = finished(srv, response)
    else:
        outcome = f"{response.status_code}: {response.json()['error']['message'][:160]}"
    added = {name: (hostile_media.peak(pid) - idle[name]) / MiB for name, pid in pids.items()}
    return {"accepted": response.status_code == 200, "outcome": outcome, "seconds": round(time.time() - start, 1),
            "server_mib": round(added["server"]), "worker_mib": round(added["worker"]),
            "idle_mib": {k: round(v / MiB) for k, v in idle.items()}}  # fmt: skip


def worst(results: list[dict], accepted: bool) -> dict | None:
    chosen = [r for r in results if r["accepted"] == accepted]
    return max(chosen, key=lambda r: max(r["server_mib"], r["worker_mib"])) if chosen else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the openseedance source tree to serve")
    parser.add_argument("--label", default="", help="suffix of the JSON file (before, after, ...)")
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join([str(args.src.resolve()), os.environ.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory(prefix="serve-memory-") as tmp:
        (Path(tmp) / "inputs").mkdir()
        inputs = make_inputs(Path(tmp) / "inputs")
        srv = Server(Path(tmp) / "serve").start()
        try:
            measure(srv, extend, inputs["plain clip 64x64 10 s"])  # one-time costs, not measured
            rows = []
            for name, send, names in CLASSES:
                results = []
                for input_name in names:
                    result = {"input": input_name, **measure(srv, send, inputs[input_name])}
                    print(json.dumps(result), flush=True)
                    results.append(result)
                rows.append({"class": name, "inputs": results, "worst_accepted": worst(results, True),
                             "worst_refused": worst(results, False)})  # fmt: skip
        finally:
            srv.stop()
    print_table(rows)
    out = Path(__file__).parent / "serve_memory" / f"serve_memory{'_' + args.label if args.label else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"src": str(args.src), "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}, indent=1))
    print(f"wrote {out}")


def print_table(rows: list[dict]) -> None:
    def cell(r: dict | None) -> str:
        return "-" if r is None else f"{r['server_mib']} / {r['worker_mib']} ({r['input']})"

    print("| input class | worst accepted: server / worker MiB above idle | worst refused: server / worker |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row['class']} | {cell(row['worst_accepted'])} | {cell(row['worst_refused'])} |")


if __name__ == "__main__":
    main()
