"""How close a few-step model's clips are to the 8-step teacher's, from the same noise.

    python benchmarks/student_fidelity.py runs/student/pipeline

For a few prompts and seeds: the teacher's clip at its default 8 steps is the reference; each row
is the PSNR of the video (8-bit) and the signal-to-difference ratio of the sound (dB) of another
clip from the same request and noise: the teacher itself at 2 steps (with guidance), and the model
given at 1, 2 and 4 steps. Marks are left off, so only the models differ. One thread.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from openseedance.engines import RunOptions
from openseedance.pipeline import Pipeline
from openseedance.request import GenerationRequest

PROMPTS = ("a red circle jumps and says hello", "Setting: the snow: a blue square. The blue square moves left.",
           "a yellow diamond hops twice", "a green triangle says hi")  # fmt: skip


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return float(10 * np.log10(255**2 / max(mse, 1e-9)))


def sdr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(10 * np.log10((b**2).mean() / max(((a - b) ** 2).mean(), 1e-12)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="the few-step model folder")
    args = ap.parse_args()
    torch.set_num_threads(1)
    teacher, student = Pipeline.from_pretrained(), Pipeline.from_pretrained(args.model)
    rows = (("teacher@2", teacher, 2), ("student@1", student, 1), ("student@2", student, 2), ("student@4", student, 4))
    print("| prompt | " + " | ".join(name for name, _, _ in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for i, prompt in enumerate(PROMPTS):
        request = GenerationRequest(prompt, duration=4.0, seed=100 + i)
        ref = teacher(request, RunOptions(mark=False)).clip
        cells = []
        for _, pipe, steps in rows:
            clip = pipe(request, RunOptions(steps=steps, mark=False)).clip
            cells.append(f"{psnr(clip.video, ref.video):.1f} / {sdr(clip.audio, ref.audio):.1f}")
        print(f"| {prompt[:32]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
