"""Golden clips: a fixed handful of requests (text, first frame, last frame, references, shots,
extension forward and backward, edit, audio -> video, video -> audio) generated with the bundled
model at fixed seeds, saved as arrays, and compared against an earlier run's arrays.

    python benchmarks/golden/golden.py --save /tmp/golden-before     # record
    python benchmarks/golden/golden.py --compare /tmp/golden-before  # after a change: how far each moved

Prints a table (max abs difference of the uint8 frames and of the audio samples, and whether each
is bit-identical) and writes `golden.json` beside this script when comparing.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from openseedance.media import Clip
from openseedance.request import GenerationRequest

HERE = Path(__file__).resolve().parent


def cases() -> dict[str, GenerationRequest]:
    """The requests, built from seeded arrays only (no Stage, no files)."""
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    frame[16:48, 16:48] = (220, 40, 40)
    other = frame[:, ::-1].copy()
    t = np.arange(3 * 16000) / 16000
    voice = (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)[None]
    video = np.repeat(frame[None], 24, 0)
    video[:, :, ::2] //= 2
    source = Clip(video=video, audio=voice[:, : 2 * 16000], fps=12.0, sample_rate=16000)
    return {
        "text": GenerationRequest("a red circle jumps and says hello", seed=1),
        "first_frame": GenerationRequest("a red square hops", first_frame=frame, seed=2),
        "last_frame": GenerationRequest("a red square moves", first_frame=frame, last_frame=other, seed=3),
        "references": GenerationRequest("@image1 hops and says hi like @audio1", images=(frame,), audios=(voice,),
                                        seed=4),
        "shots": GenerationRequest("A blue disc. [shot 1] Wide, it jumps. [shot 2] Close-up, it says hi.", seed=5),
        "extend": GenerationRequest("it keeps going", source=source, extend="forward", duration=3.0, seed=6),
        "extend_backward": GenerationRequest("it came in", source=source, extend="backward", duration=3.0, seed=7),
        "edit": GenerationRequest("a bell rings", source=source, edit_window=(0.5, 1.5), duration=2.0, seed=8),
        "a2v": GenerationRequest("a green triangle speaks", audio=voice[:, : 4 * 16000], seed=9),
        "v2a": GenerationRequest("the sound of this", video=video, duration=2.0, seed=10),
    }


def generate_all() -> dict[str, Clip]:
    from openseedance.pipeline import Pipeline

    pipe = Pipeline.from_pretrained()
    return {name: pipe(request, job_id=f"golden-{name}").clip for name, request in cases().items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--save", type=Path, help="write the clips' arrays into this folder")
    ap.add_argument("--compare", type=Path, help="compare with the arrays in this folder")
    args = ap.parse_args()
    start = time.perf_counter()
    clips = generate_all()
    seconds = time.perf_counter() - start
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for name, clip in clips.items():
            audio = clip.audio if clip.audio is not None else np.zeros((1, 0), np.float32)
            np.savez(args.save / f"{name}.npz", video=clip.video, audio=audio)
        print(f"saved {len(clips)} clips to {args.save} in {seconds:.1f} s")
    if args.compare:
        rows = []
        for name, clip in clips.items():
            old = np.load(args.compare / f"{name}.npz")
            audio = clip.audio if clip.audio is not None else np.zeros((1, 0), np.float32)
            same_shape = old["video"].shape == clip.video.shape and old["audio"].shape == audio.shape
            dv = int(np.abs(old["video"].astype(int) - clip.video.astype(int)).max()) if same_shape else -1
            da = float(np.nan_to_num(np.abs(old["audio"] - audio)).max(initial=0.0)) if same_shape else -1.0
            nans = same_shape and np.array_equal(np.isnan(old["audio"]), np.isnan(audio))
            rows.append({"case": name, "video_max_abs": dv, "audio_max_abs": da, "audio_nan_same": bool(nans),
                         "identical": same_shape and dv == 0 and da == 0.0 and nans})
        print(f"{'case':18} {'video max |d|':>14} {'audio max |d|':>14} identical")
        for r in rows:
            print(f"{r['case']:18} {r['video_max_abs']:>14} {r['audio_max_abs']:>14.3g} {r['identical']}")
        out = {"machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
               "cases": rows}
        (HERE / "golden.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
