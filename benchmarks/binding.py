"""Does a model tell which reference each character is cited by? Its velocities with the prompt's
citations swapped, on the stage-bench references cases with two characters.

    python benchmarks/binding.py                                  # the bundled model, 32 cases
    python benchmarks/binding.py --model runs/a/pipeline,runs/b/pipeline --cases 32

Each case's prompt names its two characters only by their references ("@image1 who speaks like
@audio1 ... @image2 says ..."). Swapping the citations (@image1 <-> @image2 and @audio1 <->
@audio2: `request.swapped_citations`) keeps every word and every reference but gives each
character the other's look and voice. A model that binds references to the characters the prompt
gives them must predict a different clip for the swapped prompt; one that reads only "these looks
and voices are in the clip" predicts nearly the same one.

The model samples each clip with the default sampler plus the binding-guidance branch at a scale
of 1e-6 (which leaves the path as it is), and at every step the size of its velocity change from
the prompt to the edited prompt is read beside the change from the empty prompt to the prompt
(what text guidance amplifies), over the clip's own tokens, per stream:

    ratio = |v_cond - v_edited| / |v_cond - v_uncond|

0 means the edit changes nothing. Two edits, each in the same branch at the same points:
- citations swapped: each character named by the other's references (`swapped_citations`);
- actions swapped, a plain edit any model must follow: after the sentence that introduces the
  characters, @image1 and @image2 exchanged, so each keeps its look and voice and does what the
  other did.
Printed per model as a table and written as JSON: the mean over cases and steps, and over the
first and last half of the steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch

from openseedance import pipeline
from openseedance.pipeline import Pipeline
from openseedance.request import swapped_citations
from openseedance.stage import bench


def _actions_swapped(prompt: str) -> str:
    """The prompt with @image1 and @image2 exchanged after the first sentence that introduces them
    (their looks and voices stay bound as given; what each does is exchanged)."""
    head, sep, tail = prompt.partition(". ")
    turned = re.sub(r"@image([12])\b", lambda m: f"@image{3 - int(m[1])}", tail)
    return head + sep + turned


def measure(pipe: Pipeline, cases: list[bench.Case]) -> dict:
    sampler = dataclasses.replace(pipe.sampler(), binding=1e-6)
    rows = (0, 1, 3) if sampler.reference_guidance != 1.0 else (0, 1, 2)  # cond, uncond, [bare,] swapped
    edits = {"citations swapped": swapped_citations, "actions swapped": lambda p, _counts: _actions_swapped(p)}
    per_case: list[dict] = []
    captured: list[dict[str, torch.Tensor]] = []
    hook = pipe.transformer.register_forward_hook(lambda _m, _a, out: captured.append(out))
    try:
        for case in cases:
            layout = pipe.layout(case.request)
            n = {"video": layout.video_tokens, "audio": layout.audio_latents}
            row = {}
            for name, edit in edits.items():
                captured.clear()
                pipeline.swapped_citations = edit  # the branch the sampler asks for: this edit of the prompt
                try:
                    pipe(case.request, sampler)
                finally:
                    pipeline.swapped_citations = swapped_citations
                ratios: dict[str, list[float]] = {s: [] for s in n}
                for out in captured:
                    for s, v in out.items():
                        cond, uncond, other = (v[r, : n[s]].float() for r in rows)
                        ratios[s].append(float((cond - other).norm() / (cond - uncond).norm().clamp_min(1e-12)))
                row[name] = ratios
            per_case.append(row)
    finally:
        hook.remove()
    summary: dict[str, dict] = {}
    for name in edits:
        summary[name] = {}
        for s in ("video", "audio"):
            steps = np.array([c[name][s] for c in per_case])  # (cases, steps)
            half = steps.shape[1] // 2
            summary[name][s] = {"all": float(steps.mean()), "early": float(steps[:, :half].mean()),
                                "late": float(steps[:, half:].mean())}  # fmt: skip
    return {"summary": summary, "per_case": per_case}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="comma-separated model folders ('' or 'bundled': the bundled model)")
    ap.add_argument("--cases", type=int, default=32,
                    help="stage-bench references cases to draw (the two-character ones are used)")
    ap.add_argument("--out", default="benchmarks/binding/binding.json")
    args = ap.parse_args()

    cases = [c for c in bench.suite(("references",), args.cases) if len(c.scene.characters) == 2]
    results = {}
    for folder in args.model.split(","):
        pipe = Pipeline.from_pretrained(None if folder in ("", "bundled") else folder)
        pipe.mark = False  # the marks depend on the model's name, not on what it predicts
        start = time.perf_counter()
        results[pipe.source] = measure(pipe, cases)
        results[pipe.source]["seconds"] = time.perf_counter() - start
    print(f"{len(cases)} two-character cases of {args.cases}; binding ratio |v_cond - v_other| / |v_cond - v_uncond|")
    print("| model | edit | video | video, first / last half of steps | audio | audio, first / last half |")
    print("|---|---|---|---|---|---|")
    for source, r in results.items():
        for name, row in r["summary"].items():
            v, a = row["video"], row["audio"]
            print(f"| {source} | {name} | {v['all']:.3f} | {v['early']:.3f} / {v['late']:.3f} | {a['all']:.3f} | "
                  f"{a['early']:.3f} / {a['late']:.3f} |")  # fmt: skip
    Path(args.out).write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                          "date": time.strftime("%Y-%m-%d"), "cases": len(cases),
                                          "results": results}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
