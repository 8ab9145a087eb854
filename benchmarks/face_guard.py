"""How often does the face guard refuse the bundled model's own clips as video references, and which
real faces in a video does it still refuse?

    python benchmarks/face_guard.py [--clips 200] [--out benchmarks/face_guard/face_guard.json]

Generated clips: the bundled model's outputs for held-out Stage captions (2 s, 64x64, marked and
written to an mp4 as the pipeline and the server write them, then read back), as a server sees a
clip it is asked to extend. Each frame goes through the face finder; each clip through two rules:
"a sampled frame" (a face in any of 6 frames spread over the clip: the rule before neighbouring
frames were asked to confirm) and the guard's rule (`provenance.video_shows_face`: a face in a
sampled frame that a frame within two of it shows too).

Real face: scikit-image's astronaut photograph, 64x64, in a 48-frame Stage clip (12 fps): as a
still, moving, and shown for only k frames at every possible start, under both rules.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np

from openseedance import media, provenance
from openseedance.stage.captions import caption
from openseedance.stage.render import RenderConfig, render
from openseedance.stage.scene import sample_scene
from watermark import real_photos

SAMPLES = 6


def any_sampled_frame(video: np.ndarray) -> bool:
    """The earlier rule: a face in any of the sampled frames."""
    picks = np.linspace(0, len(video) - 1, min(SAMPLES, len(video))).astype(int)
    return any(provenance.find_faces(video[i]) for i in picks)


RULES: dict[str, Callable[[np.ndarray], bool]] = {
    "a sampled frame": any_sampled_frame,
    "confirmed by a neighbour (the guard)": provenance.video_shows_face,
}


def generated(count: int, tmp: Path) -> dict:
    from openseedance.pipeline import Pipeline
    from openseedance.request import GenerationRequest

    pipe = Pipeline.from_pretrained()
    frames = found = 0
    refused = dict.fromkeys(RULES, 0)
    which: dict[str, list[int]] = {name: [] for name in RULES}
    for i in range(count):
        prompt = caption(sample_scene(800_000 + i), "heldout").prompt
        clip = pipe(GenerationRequest(prompt, duration=2.0, seed=i)).clip
        media.write_video(tmp / "clip.mp4", clip)
        video = media.read_video(tmp / "clip.mp4").video
        frames += len(video)
        found += sum(bool(provenance.find_faces(f)) for f in video)
        for name, rule in RULES.items():
            if rule(video):
                refused[name] += 1
                which[name].append(i)
        print(f"  generated {i + 1}/{count}", end="\r", flush=True)
    return {"clips": count, "frames": frames, "frames with a face found": found, "clips refused": refused,
            "refused clip indices": which}  # fmt: skip


def real_face() -> dict:
    face = media.resize_frames(real_photos()[0][None], (64, 64))[0]
    backdrop = render(sample_scene(3, duration=4.0), RenderConfig(64, 64)).clip.video  # 48 frames
    out: dict = {"frames": len(backdrop), "backdrop refused": {n: r(backdrop) for n, r in RULES.items()}}
    moving = np.stack([np.roll(face, (t // 4, t // 3), (0, 1)) for t in range(len(backdrop))])
    out["still"] = {n: r(np.stack([face] * len(backdrop))) for n, r in RULES.items()}
    out["moving"] = {n: r(moving) for n, r in RULES.items()}
    out["shown for k frames: share of starts refused"] = {}
    for k in (1, 2, 3, 6, 12):
        starts = range(len(backdrop) - k + 1)
        hits = dict.fromkeys(RULES, 0)
        for s in starts:
            video = backdrop.copy()
            video[s : s + k] = face
            for name, rule in RULES.items():
                hits[name] += rule(video)
        out["shown for k frames: share of starts refused"][k] = {n: h / len(starts) for n, h in hits.items()}
    return out


def table(result: dict) -> str:
    g, r = result["generated"], result["real face"]
    lines = [f"the bundled model's clips: {g['frames with a face found']} of {g['frames']} frames show a 'face' "
             f"to the face finder", "| rule | generated clips refused |", "|---|---|"]  # fmt: skip
    lines += [f"| {n} | {v} of {g['clips']} |" for n, v in g["clips refused"].items()]
    lines += ["", "real face in a 48-frame clip: refused?", "| shown | " + " | ".join(RULES) + " |",
              "|---|" + "---|" * len(RULES)]  # fmt: skip
    for row in ("backdrop refused", "still", "moving"):
        lines.append(f"| {row} | " + " | ".join("yes" if r[row][n] else "no" for n in RULES) + " |")
    for k, v in r["shown for k frames: share of starts refused"].items():
        lines.append(f"| for {k} frame{'s' * (int(k) > 1)} (share of starts) | "
                     + " | ".join(f"{100 * v[n]:.0f}%" for n in RULES) + " |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200, help="generated clips")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/face_guard/face_guard.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    result: dict = {"machine": f"{platform.machine()}, {os.cpu_count()}-core CPU, no GPU"}
    result["real face"] = real_face()
    with TemporaryDirectory() as tmp:
        result["generated"] = generated(args.clips, Path(tmp))
    result["seconds"] = time.perf_counter() - start
    print(" " * 60)
    print(table(result))
    print(f"\n{result['seconds']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
