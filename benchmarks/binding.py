"""Does a model tell which reference each character is cited by? Its velocities with the prompt's
citations swapped, on the stage-bench references cases with two characters.

    python benchmarks/binding.py                                  # the bundled model, 32 cases
    python benchmarks/binding.py --model runs/a/pipeline,runs/b/pipeline --cases 32

Each case's prompt names its two characters only by their references ("@image1 who speaks like
@audio1 ... @image2 says ..."). Swapping the citations (@image1 <-> @image2 and @audio1 <->
@audio2: `swapped_citations`) keeps every word and every reference but gives each character the
other's look and voice. A model that binds references to the characters the prompt gives them must
predict a different clip for the swapped prompt; one that reads only "these looks and voices are in
the clip" predicts nearly the same one.

The model samples each clip once with its default sampler. At every step, beside the branches the
sampler asks for, it is asked for its velocity with each edited prompt (the same latents at the same
times, the same references), and the size of its velocity change from the prompt to the edited
prompt is read beside the change from the empty prompt to the prompt (what text guidance
amplifies), over the clip's own tokens, per stream:

    ratio = |v_cond - v_edited| / |v_cond - v_uncond|

0 means the edit changes nothing. Two edits, read at the same points of the same path:
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

from openseedance import conditioning as cond
from openseedance.engines import RunOptions
from openseedance.engines.bundled import BundledEngine
from openseedance.pipeline import Pipeline
from openseedance.request import GenerationRequest, canonical_prompt
from openseedance.sampling import Branch, Latents, denoise
from openseedance.stage import bench

CITATION = re.compile(r"@(image|video|audio)(\d+)\b")  # a citation as a canonical prompt writes it


def swapped_citations(prompt: str, counts: dict[str, int]) -> str:
    """A canonical prompt with each kind's citations turned round over the references given of that
    kind (two: @image1 <-> @image2; three: 1 -> 2 -> 3 -> 1): every character named by another's
    references."""
    turn = {kind: n for kind, n in counts.items() if n >= 2}

    def turned(m: re.Match) -> str:
        kind, k = m[1], int(m[2])
        return f"@{kind}{k % turn[kind] + 1}" if kind in turn and 1 <= k <= turn[kind] else m[0]

    return CITATION.sub(turned, prompt)


def actions_swapped(prompt: str, _counts: dict[str, int]) -> str:
    """The prompt with @image1 and @image2 exchanged after the first sentence that introduces them
    (their looks and voices stay bound as given; what each does is exchanged)."""
    head, sep, tail = prompt.partition(". ")
    turned = re.sub(r"@image([12])\b", lambda m: f"@image{3 - int(m[1])}", tail)
    return head + sep + turned


EDITS = {"citations swapped": swapped_citations, "actions swapped": actions_swapped}


@torch.no_grad()
def case_ratios(engine: BundledEngine, request: GenerationRequest) -> dict[str, dict[str, list[float]]]:
    """Sample the request's clip as the engine does with its default sampler, and at every step read
    each edit's ratio per stream."""
    sampler = engine.sampler(RunOptions())
    encoders = engine.encoders()
    conditions = cond.prepare(request, encoders)
    if not conditions.has_references:  # as the engine samples: nothing for reference guidance to act on
        sampler = dataclasses.replace(sampler, reference_guidance=1.0)
    prompt = canonical_prompt(request.prompt, request.reference_counts)
    edited = {name: cond.prepare(dataclasses.replace(request, prompt=edit(prompt, request.reference_counts)),
                                 encoders).to(engine.device) for name, edit in EDITS.items()}  # fmt: skip
    gen = torch.Generator().manual_seed(request.seed)
    noise = {s: torch.randn(x.shape, generator=gen).to(engine.device) for s, x in conditions.clean.items()}
    n = conditions.targets  # the clip's own tokens come first in each stream
    shift = sampler.shift if sampler.shift is not None else engine.flow.shift(sum(n.values()))
    on = conditions.to(engine.device)
    ratios: dict[str, dict[str, list[float]]] = {name: {s: [] for s in n} for name in EDITS}

    def model(c: cond.Conditions, x: Latents, t: Latents, branches: tuple[Branch, ...]) -> list[Latents]:
        streams, text = c.branches(x, t, branches)
        v = engine.transformer(streams, text)
        return [{s: v[s][i : i + 1].float() for s in v} for i in range(len(branches))]

    def velocity(x: Latents, t: Latents, branches: tuple[Branch, ...]) -> list[Latents]:
        asked = (*branches, *(b for b in (Branch.COND, Branch.UNCOND) if b not in branches))
        out = model(on, x, t, asked)
        v_cond, v_uncond = out[asked.index(Branch.COND)], out[asked.index(Branch.UNCOND)]
        for name, c in edited.items():
            v_edit = model(c, x, t, (Branch.COND,))[0]
            for s, k in n.items():
                change = (v_cond[s][:, :k] - v_edit[s][:, :k]).norm()
                prompt_effect = (v_cond[s][:, :k] - v_uncond[s][:, :k]).norm().clamp_min(1e-12)
                ratios[name][s].append(float(change / prompt_effect))
        return out[: len(branches)]

    denoise(velocity, noise, on.clean, on.keep, config=sampler, shift=shift)
    return ratios


def measure(pipe: Pipeline, cases: list[bench.Case]) -> dict:
    per_case = []
    for case in cases:
        pipe.check(case.request)
        per_case.append(case_ratios(pipe.engine, case.request))
    summary: dict[str, dict] = {}
    for name in EDITS:
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
        source = pipe.engine.source
        start = time.perf_counter()
        results[source] = measure(pipe, cases)
        results[source]["seconds"] = time.perf_counter() - start
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
