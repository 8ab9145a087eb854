"""Live streams with the bundled model: how soon they play, how fast they keep up, how flat their
memory stays, how smooth their seams are, and how well they do what they are told.

    python benchmarks/live.py                              # everything (about 25 minutes on 2 cores)
    python benchmarks/live.py --long 0 --scenes 4          # without the 10-minute run
    python benchmarks/live.py --only latency

Measured, with the model loaded once in this process unless said:
- first frame: from the request to a file that decodes to a first frame and its sound. In process
  (`Live` + `FragmentWriter`, the model warm, as in a server's worker); through a real server (POST
  /api/live, then the stream read over HTTP until its bytes decode); and a fresh `openseedance
  stream` process (interpreter, imports and model load included).
- sustained speed: seconds made per second of wall time over `--sustain` seconds and over `--long`
  seconds (default 600), chunk 1 s, context 1 s; resident memory at each chunk (flat: the last
  minute's median within 10% of the first minute's).
- seams: the jump across each chunk boundary (mean absolute frame-to-frame change in 8-bit levels;
  for sound the change of loudness between 10 ms blocks, x 1000: the extension benchmark's measures)
  against the same steps inside chunks.
- told what to do: `--scenes` 20 s streams, each steered through five 4 s Stage scenes that share
  their characters and place (a new caption every 4 s), each 4 s part probed against its scene
  (attribute and action probes), beside the same five scenes generated as 4 s clips; with chunks of
  4 s (one chunk per caption) and of 1 s.
Writes `benchmarks/live/live.json` (or `--out`).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from openseedance import media
from openseedance.live import Live, LiveConfig
from openseedance.media import Clip
from openseedance.pipeline import Pipeline
from openseedance.request import GenerationRequest
from openseedance.stage.captions import caption
from openseedance.stage.probes import probe
from openseedance.stage.scene import sample_scene

PROMPT = "a red circle bounces and says hello"


def machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))  # fmt: skip
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def decodes(data: bytes, audio: bool = True) -> bool:
    """Whether the bytes of an mp4 written so far decode to a first frame (and its sound)."""
    try:
        with av.open(io.BytesIO(data)) as c:
            frame = next(c.decode(video=0), None)
        if frame is None or not audio:
            return frame is not None
        with av.open(io.BytesIO(data)) as c:
            return next(c.decode(audio=0), None) is not None
    except (av.error.FFmpegError, StopIteration, OSError):
        return False


# ---------------------------------------------------------------- first frame


def first_frame_in_process(pipe: Pipeline, repeats: int, folder: Path) -> list[float]:
    times = []
    for i in range(repeats):
        path = folder / f"first{i}.mp4"
        start = time.perf_counter()
        live = Live(pipe, GenerationRequest(PROMPT, seed=i), LiveConfig(chunk=1.0))
        with media.FragmentWriter(path, 64, 64, 12.0, 16000) as out:
            part = next(iter(live))
            out.write(part.clip)
            while not decodes(path.read_bytes()):
                time.sleep(0.001)
            times.append(time.perf_counter() - start)
    return times


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_frame_server(repeats: int, folder: Path, threads: int) -> list[float]:
    import httpx

    port, key = _free_port(), "bench-key-0123456789"
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {key}"}
    log = open(folder / "server.log", "ab")  # noqa: SIM115
    server = subprocess.Popen([sys.executable, "-m", "openseedance.cli", "serve", "--port", str(port), "--data",
                               str(folder / "srv"), "--api-key", key, "--threads", str(threads)],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).json()["workers"] > 0:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        time.sleep(3.0)  # the worker loads the model and warms up after it is counted
        times = []
        for i in range(repeats):
            start = time.perf_counter()
            job = httpx.post(url + "/api/live", headers=auth, json={"prompt": PROMPT, "seed": i}, timeout=30).json()
            got = bytearray()
            with httpx.stream("GET", url + job["stream_url"], timeout=60) as response:
                for block in response.iter_bytes():
                    got += block
                    if decodes(bytes(got)):
                        times.append(time.perf_counter() - start)
                        break
            httpx.post(f"{url}/api/live/{job['id']}/stop", headers=auth, timeout=30)
            while httpx.get(f"{url}/api/live/{job['id']}", headers=auth, timeout=30).json()["status"] in (
                    "queued", "running"):  # fmt: skip
                time.sleep(0.2)
        return times
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


def first_frame_cli(repeats: int, folder: Path) -> list[float]:
    times = []
    for i in range(repeats):
        path = folder / f"cli{i}.mp4"
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "openseedance.cli", "stream", PROMPT, "--duration", "2",
                                 "--seed", str(i), "-o", str(path)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        seen = None
        while proc.poll() is None and seen is None:
            if path.exists() and decodes(path.read_bytes()):
                seen = time.perf_counter() - start
            time.sleep(0.01)
        proc.wait()
        if seen is not None:
            times.append(seen)
    return times


# ---------------------------------------------------------------- sustained, memory, seams


def video_steps(video: np.ndarray) -> np.ndarray:
    return np.abs(np.diff(video.astype(np.float64), axis=0)).mean((1, 2, 3))


def audio_steps(audio: np.ndarray, block: int = 160) -> np.ndarray:
    blocks = audio[0, : len(audio[0]) // block * block].reshape(-1, block)
    return 1000 * np.abs(np.diff(np.sqrt((blocks**2).mean(1))))


def sustained(pipe: Pipeline, seconds: float, chunk: float, context: float, folder: Path) -> dict:
    """A stream of `seconds` written to a file: speed, memory per chunk, and its seams."""
    live = Live(pipe, GenerationRequest(PROMPT, seed=11), LiveConfig(chunk=chunk, context=context, duration=seconds))
    path = folder / f"sustained_{seconds:g}.mp4"
    rows, starts = [], []
    keep_v, keep_a = [], []  # kept for the seams of the first minute only (memory stays the stream's own)
    start = time.perf_counter()
    with media.FragmentWriter(path, 64, 64, 12.0, 16000) as out:
        for part in live:
            out.write(part.clip)
            rows.append({"start": part.start, "seconds": part.clip.duration, "wall": time.perf_counter() - start,
                         "chunk_s": part.seconds["chunk"], "rss_mib": rss_mib()})  # fmt: skip
            if part.start < 60:
                starts.append(part.clip.num_frames)
                keep_v.append(part.clip.video)
                keep_a.append(part.clip.audio)
    wall = time.perf_counter() - start
    video, audio = np.concatenate(keep_v), np.concatenate(keep_a, axis=1)
    bounds = np.cumsum(starts)[:-1]  # frame index where each later chunk starts
    v = video_steps(video)
    at_v = v[bounds - 1]
    inside_v = np.delete(v, bounds - 1)
    a = audio_steps(audio)
    rate = 16000 / 12 / 160  # audio blocks per frame
    a_bounds = np.round(bounds * rate).astype(int)
    at_a = a[a_bounds - 1]
    inside_a = np.delete(a, a_bounds - 1)
    # the cross-fade before each boundary (the held tenth of a second) and the boundary itself, against
    # the steps away from every boundary
    near = np.zeros(len(a), bool)
    span = round(0.1 * 16000 / 160)
    for b in a_bounds:
        near[max(0, b - 1 - span) : b] = True
    fade_a, away_a = a[near], a[~near]
    rss = np.array([r["rss_mib"] for r in rows])
    made = live.seconds
    minute = max(1, int(60 / chunk))
    out = {"seconds": made, "wall_s": wall, "x_real_time": made / wall, "chunks": len(rows),
           "chunk_s_median": statistics.median(r["chunk_s"] for r in rows),
           "rss_first_minute_mib": float(np.median(rss[:minute])),
           "rss_last_minute_mib": float(np.median(rss[-minute:])),
           "rss_max_mib": float(rss.max()),
           "seam_video": {"at_boundaries": float(at_v.mean()), "inside": float(inside_v.mean()),
                          "ratio": float(at_v.mean() / max(inside_v.mean(), 1e-9))},
           "seam_audio": {"at_boundaries": float(at_a.mean()), "inside": float(inside_a.mean()),
                          "ratio": float(at_a.mean() / max(inside_a.mean(), 1e-9)),
                          "fade_window": float(fade_a.mean()), "away": float(away_a.mean()),
                          "fade_ratio": float(fade_a.mean() / max(away_a.mean(), 1e-9))},
           "per_chunk": rows}  # fmt: skip
    out["rss_growth"] = out["rss_last_minute_mib"] / out["rss_first_minute_mib"] - 1
    path.unlink(missing_ok=True)
    return out


# ---------------------------------------------------------------- told what to do


def scene_series(seed: int, parts: int = 5):
    """`parts` 4 s Stage scenes with the characters and place of the first and the actions of others."""
    first = sample_scene(seed, duration=4.0, num_shots=1)
    series, k = [first], 1
    while len(series) < parts:
        other = sample_scene(seed + 1000 * k, duration=4.0, num_shots=1)
        k += 1
        if len(other.characters) != len(first.characters):
            continue
        chars = [dataclasses.replace(c, actions=o.actions) for c, o in zip(first.characters, other.characters,
                                                                           strict=True)]  # fmt: skip
        series.append(dataclasses.replace(first, characters=chars))
    return series


def scores(report) -> tuple[float | None, float | None]:
    return report.scores.get("attribute"), report.scores.get("action")


def told(pipe: Pipeline, scenes: int, chunk: float, context: float = 1.0) -> dict:
    """Streams steered through scene series, each 4 s part probed against its scene."""
    rows = []
    for s in range(scenes):
        series = scene_series(500_000 + s)
        prompts = [caption(sc).prompt for sc in series]
        live = Live(pipe, GenerationRequest(prompts[0], seed=s), LiveConfig(chunk=chunk, context=context,
                                                                           duration=4.0 * len(series)))  # fmt: skip
        parts, spans = [], []
        for part in live:
            parts.append(part.clip)
            spans.append(part.start)
            nxt = int((live.seconds + 1e-6) // 4.0)  # the 4 s scene the next chunk falls in
            if nxt < len(series) and int((part.start + 1e-6) // 4.0) != nxt:
                live.steer(prompts[nxt])
        video = np.concatenate([p.video for p in parts])
        audio = np.concatenate([p.audio for p in parts], axis=1)
        for k, scene in enumerate(series):
            a, b = round(4.0 * k * 12), round(4.0 * (k + 1) * 12)
            if k == 0:
                a = 0
            piece = Clip(video[a:b], audio[:, round(a * 16000 / 12) : round(b * 16000 / 12)], 12.0, 16000)
            attribute, action = scores(probe(piece, scene, only=("attribute", "action")))
            clip = pipe(GenerationRequest(prompts[k], duration=4.0, seed=s)).clip
            b_attribute, b_action = scores(probe(clip, scene, only=("attribute", "action")))
            rows.append({"series": s, "part": k, "attribute": attribute, "action": action,
                         "attribute_4s": b_attribute, "action_4s": b_action})  # fmt: skip

    def mean(key: str, parts: tuple[int, ...] | None = None) -> dict:
        values = [r[key] for r in rows if r[key] is not None and (parts is None or r["part"] in parts)]
        n = len(values)
        m = float(np.mean(values)) if n else float("nan")
        return {"mean": m, "stderr": float(np.std(values, ddof=1) / np.sqrt(n)) if n > 1 else float("nan"), "n": n}

    return {"chunk": chunk, "context": context, "rows": rows,
            "streamed": {"attribute": mean("attribute"), "action": mean("action")},
            "after_a_change": {"attribute": mean("attribute", (1, 2, 3, 4)), "action": mean("action", (1, 2, 3, 4))},
            "clips_4s": {"attribute": mean("attribute_4s"), "action": mean("action_4s")}}  # fmt: skip


# ---------------------------------------------------------------- table


def pct(d: dict) -> str:
    return f"{100 * d['mean']:.1f} ± {100 * d['stderr']:.1f}% (n={d['n']})"


def table(result: dict) -> str:
    lines = [f"live streams, bundled model, {result['machine']}, {result['date']}", ""]
    lines += ["| measure | figure | target |", "|---|---|---|"]
    for name, key in (("first frame + sound, in process (warm model)", "first_frame_in_process"),
                      ("first frame + sound, through the server (POST to decodable bytes)", "first_frame_server"),
                      ("first frame + sound, fresh `openseedance stream` process", "first_frame_cli")):  # fmt: skip
        if result.get(key):
            t = result[key]
            lines.append(f"| {name} | median {statistics.median(t):.2f} s (of {len(t)}: "
                         f"{', '.join(f'{x:.2f}' for x in t)}) | ≤ 1.0 s |")  # fmt: skip
    for key in ("sustained", "long"):
        if result.get(key):
            r = result[key]
            lines.append(f"| sustained over {r['seconds']:.0f} s (chunk 1 s, context 1 s) | {r['x_real_time']:.2f}× "
                         f"real time ({r['chunk_s_median']:.2f} s per chunk) | ≥ 1.5× |")  # fmt: skip
            lines.append(f"| resident memory over {r['seconds']:.0f} s | first minute {r['rss_first_minute_mib']:.0f} "
                         f"MiB, last minute {r['rss_last_minute_mib']:.0f} MiB ({100 * r['rss_growth']:+.1f}%), "
                         f"max {r['rss_max_mib']:.0f} | within 10% |")  # fmt: skip
    if result.get("sustained"):
        r = result["sustained"]
        for what in ("video", "audio"):
            s = r[f"seam_{what}"]
            lines.append(f"| {what} jump at chunk boundaries / inside chunks (first minute) | {s['at_boundaries']:.2f} "
                         f"/ {s['inside']:.2f} = {s['ratio']:.2f} | ≤ 1.5 |")  # fmt: skip
            if what == "audio":
                lines.append(f"| audio steps over each cross-fade (0.1 s before a boundary) / away from boundaries | "
                             f"{s['fade_window']:.2f} / {s['away']:.2f} = {s['fade_ratio']:.2f} | ≤ 1.5 |")  # fmt: skip
    for r in result.get("told", []):
        c = r["chunk"]
        for probe_name in ("attribute", "action"):
            lines.append(f"| {probe_name}, 20 s streams (chunk {c:g} s), every 4 s part / parts after a prompt "
                         f"change / the same scenes as 4 s clips | {pct(r['streamed'][probe_name])} / "
                         f"{pct(r['after_a_change'][probe_name])} / {pct(r['clips_4s'][probe_name])} | "
                         f"within noise of 4 s clips |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="first-frame measurements of each kind")
    parser.add_argument("--sustain", type=float, default=60.0, help="seconds of the sustained run")
    parser.add_argument("--long", type=float, default=600.0, help="seconds of the long run (0: none)")
    parser.add_argument("--scenes", type=int, default=8, help="20 s steered streams per chunk length")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=("latency", "sustained", "long", "told"), action="append", default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "live" / "live.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    only = set(args.only or ("latency", "sustained", "long", "told"))
    result: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}
    pipe = Pipeline.from_pretrained()
    pipe(GenerationRequest(PROMPT, duration=1.0))  # warm: what a server's worker has done before its first job
    folder = Path(tempfile.mkdtemp(prefix="live-bench-"))
    try:
        if "latency" in only:
            result["first_frame_in_process"] = first_frame_in_process(pipe, args.repeats, folder)
            result["first_frame_server"] = first_frame_server(args.repeats, folder, args.threads)
            result["first_frame_cli"] = first_frame_cli(args.repeats, folder)
            print(table(result), flush=True)
        if "sustained" in only and args.sustain:
            result["sustained"] = sustained(pipe, args.sustain, 1.0, 1.0, folder)
            print(table(result), flush=True)
        if "told" in only and args.scenes:
            result["told"] = [told(pipe, args.scenes, 4.0), told(pipe, args.scenes, 1.0)]
            print(table(result), flush=True)
        if "long" in only and args.long:
            result["long"] = sustained(pipe, args.long, 1.0, 1.0, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print()
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
