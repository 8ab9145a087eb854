"""Extension, editing and frame conditioning with the bundled model (or --model), on Stage clips.

    python benchmarks/extend_edit.py                # 8 scenes
    python benchmarks/extend_edit.py --scenes 16
    python benchmarks/extend_edit.py --model runs/x/pipeline   # another model folder

For each Stage scene (4 s, 64×64, 12 fps, 16 kHz):
- forward / backward extension of its first / last half to the full length;
- editing the middle 30% of it (the rest to be kept);
- its first frame (image -> video), and its first and last frames together.

Reported: PSNR of the kept part against the input (after the invisible mark, which alone costs
about 40 dB), and the jump at each seam: the mean absolute change between the two frames across it
(8-bit levels), and for audio the change of loudness between the 10 ms blocks across it (RMS x
1000); beside them, the median of the same steps over the Stage clips themselves (how much they
move from one frame or block to the next anyway). Baseline beside each: the same input joined to
an independent text-to-video generation of the missing part (what a system without extension
would do). Frame fidelity: PSNR of frame 0 / the last frame against the given images.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from openseedance.media import Clip
from openseedance.pipeline import Pipeline
from openseedance.request import GenerationRequest
from openseedance.stage.captions import caption
from openseedance.stage.render import RenderConfig, render
from openseedance.stage.scene import sample_scene


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def video_steps(video: np.ndarray) -> np.ndarray:
    """Mean absolute change from each frame to the next, in 8-bit levels."""
    return np.abs(np.diff(video.astype(np.float64), axis=0)).mean((1, 2, 3))


def audio_steps(audio: np.ndarray, block: int = 160) -> np.ndarray:
    """Absolute change of loudness (RMS of 10 ms blocks) from each block to the next, x 1000."""
    blocks = audio[0, : len(audio[0]) // block * block].reshape(-1, block)
    return 1000 * np.abs(np.diff(np.sqrt((blocks**2).mean(1))))


def video_jump(video: np.ndarray, seam: int) -> float:
    return float(video_steps(video)[seam - 1])


def audio_jump(audio: np.ndarray, seam: int, block: int = 160) -> float:
    return float(audio_steps(audio, block)[seam // block - 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--model", default="", help="model folder (default: the bundled model)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "extend_edit" / "extend_edit.json")
    args = parser.parse_args()
    pipe = Pipeline.from_pretrained(args.model or None)
    config = RenderConfig()
    rows: dict[str, list[dict]] = {}

    def add(name: str, **values: float) -> None:
        rows.setdefault(name, []).append(values)

    start = time.time()
    for i in range(args.scenes):
        scene = sample_scene(900_000 + i, duration=4.0)
        truth = render(scene, config).clip
        prompt = caption(scene, "train").prompt
        n, s = len(truth.video), truth.audio.shape[1]
        add("Stage clips (reference)", video_jump=float(np.median(video_steps(truth.video))),
            audio_jump=float(np.median(audio_steps(truth.audio))))
        base = {"prompt": prompt, "duration": 4.0, "seed": i}
        free = pipe(GenerationRequest(**base)).clip  # the baseline's independent generation
        half, half_s = n // 2, s // 2
        first = Clip(video=truth.video[:half], audio=truth.audio[:, :half_s], fps=config.fps,
                     sample_rate=config.sample_rate)  # fmt: skip
        last = Clip(video=truth.video[half:], audio=truth.audio[:, half_s:], fps=config.fps,
                    sample_rate=config.sample_rate)  # fmt: skip

        out = pipe(GenerationRequest(**base, source=first, extend="forward")).clip
        joined_v = np.concatenate([first.video, free.video[half:]])
        joined_a = np.concatenate([first.audio, free.audio[:, half_s:]], 1)
        add("extend forward", kept_psnr=psnr(out.video[:half], first.video),
            video_jump=video_jump(out.video, half), audio_jump=audio_jump(out.audio, half_s),
            baseline_video_jump=video_jump(joined_v, half), baseline_audio_jump=audio_jump(joined_a, half_s))

        out = pipe(GenerationRequest(**base, source=last, extend="backward")).clip
        joined_v = np.concatenate([free.video[:half], last.video])
        joined_a = np.concatenate([free.audio[:, :half_s], last.audio], 1)
        add("extend backward", kept_psnr=psnr(out.video[half:], last.video),
            video_jump=video_jump(out.video, half), audio_jump=audio_jump(out.audio, half_s),
            baseline_video_jump=video_jump(joined_v, half), baseline_audio_jump=audio_jump(joined_a, half_s))

        window = (1.4, 2.6)
        f0, f1 = round(window[0] * config.fps), round(window[1] * config.fps)
        s0, s1 = round(window[0] * config.sample_rate), round(window[1] * config.sample_rate)
        out = pipe(GenerationRequest(**base, source=truth, edit_window=window)).clip
        outside = np.r_[0 : f0 - 2, f1 + 2 : n]
        pasted_v, pasted_a = truth.video.copy(), truth.audio.copy()
        pasted_v[f0:f1], pasted_a[:, s0:s1] = free.video[f0:f1], free.audio[:, s0:s1]
        add("edit (middle 30%)", kept_psnr=psnr(out.video[outside], truth.video[outside]),
            video_jump=(video_jump(out.video, f0) + video_jump(out.video, f1)) / 2,
            audio_jump=(audio_jump(out.audio, s0) + audio_jump(out.audio, s1)) / 2,
            baseline_video_jump=(video_jump(pasted_v, f0) + video_jump(pasted_v, f1)) / 2,
            baseline_audio_jump=(audio_jump(pasted_a, s0) + audio_jump(pasted_a, s1)) / 2)

        out = pipe(GenerationRequest(**base, first_frame=truth.video[0])).clip
        add("first frame", frame_psnr=psnr(out.video[0], truth.video[0]),
            baseline_frame_psnr=psnr(free.video[0], truth.video[0]))
        out = pipe(GenerationRequest(**base, first_frame=truth.video[0], last_frame=truth.video[-1])).clip
        ends = (0, -1)
        add("first + last frame", frame_psnr=float(np.mean([psnr(out.video[j], truth.video[j]) for j in ends])),
            baseline_frame_psnr=float(np.mean([psnr(free.video[j], truth.video[j]) for j in ends])))

    summary = {name: {k: float(np.mean([v[k] for v in values])) for k in values[0]} for name, values in rows.items()}
    result = {"machine": f"{platform.machine()}, CPU", "date": time.strftime("%Y-%m-%d"), "scenes": args.scenes,
              "seconds": round(time.time() - start, 1), "rows": summary, "cases": rows}
    print(f"\nextension / editing / frames: model {pipe.engine.source}, {args.scenes} Stage scenes (4 s, 64x64)")
    print(f"{'task':<20}{'kept PSNR':>10}{'video jump':>12}{'(joined)':>10}{'audio jump':>12}{'(joined)':>10}"
          f"{'frame PSNR':>12}{'(free)':>8}")
    for name, r in summary.items():

        def f(key: str, width: int, fmt: str = ".1f", r: dict = r) -> str:
            return f"{r[key]:>{width}{fmt}}" if key in r else f"{'-':>{width}}"

        print(f"{name:<20}{f('kept_psnr', 10)}{f('video_jump', 12, '.2f')}{f('baseline_video_jump', 10, '.2f')}"
              f"{f('audio_jump', 12, '.2f')}{f('baseline_audio_jump', 10, '.2f')}{f('frame_psnr', 12)}"
              f"{f('baseline_frame_psnr', 8)}")
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
